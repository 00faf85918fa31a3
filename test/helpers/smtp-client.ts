// A raw SMTP client for tests: sends exactly the lines it is given and returns replies with their
// exact bytes, so tests can assert what a server said on the wire (RFC 5321 §4.2).
// Owns: line framing, multi-line reply parsing, DATA dot-stuffing (RFC 5321 §4.5.2).
// Must not: hide protocol errors (no retries, no automatic EHLO/RSET) or use TLS.

import net from 'node:net';

export type SmtpReply = {
  code: number;
  /** Text of each line after "NNN-" / "NNN ". */
  lines: string[];
  /** The reply exactly as received, CRLFs included. */
  raw: string;
};

export class SmtpClient {
  readonly #socket: net.Socket;
  #buffer = '';
  #waiting: (() => void) | undefined;
  #ended = false;
  #error: Error | undefined;
  readonly timeoutMs: number;

  private constructor(socket: net.Socket, timeoutMs: number) {
    this.#socket = socket;
    this.timeoutMs = timeoutMs;
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      this.#buffer += chunk;
      this.#wake();
    });
    socket.on('end', () => {
      this.#ended = true;
      this.#wake();
    });
    socket.on('close', () => {
      this.#ended = true;
      this.#wake();
    });
    socket.on('error', (error) => {
      this.#error = error;
      this.#wake();
    });
  }

  #wake(): void {
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.();
  }

  /** Connect and read the greeting. */
  static async connect(host: string, port: number, timeoutMs = 10_000): Promise<{ client: SmtpClient; greeting: SmtpReply }> {
    const socket = net.connect({ host, port });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('error', reject);
    });
    const client = new SmtpClient(socket, timeoutMs);
    return { client, greeting: await client.reply() };
  }

  /** Read one complete (possibly multi-line) reply. */
  async reply(): Promise<SmtpReply> {
    const deadline = Date.now() + this.timeoutMs;
    for (;;) {
      const parsed = this.#takeReply();
      if (parsed) return parsed;
      if (this.#error) throw this.#error;
      if (this.#ended) throw new Error(`SMTP connection closed; unparsed: ${JSON.stringify(this.#buffer)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`SMTP reply timeout; unparsed: ${JSON.stringify(this.#buffer)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiting = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  #takeReply(): SmtpReply | undefined {
    let offset = 0;
    const lines: string[] = [];
    for (;;) {
      const end = this.#buffer.indexOf('\r\n', offset);
      if (end < 0) return undefined;
      const line = this.#buffer.slice(offset, end);
      offset = end + 2;
      const match = /^(\d{3})([ -])(.*)$/s.exec(line);
      if (!match) throw new Error(`malformed SMTP reply line: ${JSON.stringify(line)}`);
      lines.push(match[3] ?? '');
      if (match[2] === ' ') {
        const raw = this.#buffer.slice(0, offset);
        this.#buffer = this.#buffer.slice(offset);
        return { code: Number(match[1]), lines, raw };
      }
    }
  }

  /** Send raw bytes (no CRLF added). */
  write(data: string | Buffer): void {
    this.#socket.write(data);
  }

  /** Send one command line (CRLF added) and read its reply. */
  async command(line: string): Promise<SmtpReply> {
    this.#socket.write(`${line}\r\n`);
    return this.reply();
  }

  /** After a 354: send the message dot-stuffed, then CRLF.CRLF, and read the reply. */
  async data(message: Buffer): Promise<SmtpReply> {
    this.#socket.write(dotStuff(message));
    return this.reply();
  }

  async close(): Promise<void> {
    if (this.#socket.destroyed) return;
    await new Promise<void>((resolve) => {
      this.#socket.once('close', () => resolve());
      this.#socket.end();
      setTimeout(() => this.#socket.destroy(), 1000).unref();
    });
  }
}

/** RFC 5321 §4.5.2 transparency plus the terminating ".", ensuring the last line ends in CRLF. */
export function dotStuff(message: Buffer): Buffer {
  const text = message.toString('latin1');
  const stuffed = text.replace(/(^|\r\n)\./g, '$1..');
  const terminated = stuffed.endsWith('\r\n') || stuffed.length === 0 ? stuffed : `${stuffed}\r\n`;
  return Buffer.from(`${terminated}.\r\n`, 'latin1');
}

export type Transaction = {
  greeting: SmtpReply;
  ehlo: SmtpReply;
  mail: SmtpReply;
  rcpt: SmtpReply[];
  /** Reply to DATA (354 expected); absent when no recipient was accepted. */
  dataCommand?: SmtpReply;
  /** Reply after the message; absent when DATA was not accepted. */
  data?: SmtpReply;
};

/** One complete transaction without pipelining, QUIT at the end; every reply is returned. */
export async function sendMail(
  host: string,
  port: number,
  envelope: { from: string; to: string[]; data: Buffer; helo?: string },
): Promise<Transaction> {
  const { client, greeting } = await SmtpClient.connect(host, port);
  try {
    const ehlo = await client.command(`EHLO ${envelope.helo ?? 'client.test'}`);
    const mail = await client.command(`MAIL FROM:<${envelope.from}>`);
    const rcpt: SmtpReply[] = [];
    for (const recipient of envelope.to) rcpt.push(await client.command(`RCPT TO:<${recipient}>`));
    const transaction: Transaction = { greeting, ehlo, mail, rcpt };
    if (mail.code === 250 && rcpt.some((reply) => reply.code === 250 || reply.code === 251)) {
      transaction.dataCommand = await client.command('DATA');
      if (transaction.dataCommand.code === 354) transaction.data = await client.data(envelope.data);
    }
    await client.command('QUIT').catch(() => undefined);
    return transaction;
  } finally {
    await client.close();
  }
}

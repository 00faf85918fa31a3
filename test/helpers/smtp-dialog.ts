// A raw SMTP client for tests that assert exact reply bytes: send a line, get the whole reply
// (RFC 5321 §4.2), optionally over STARTTLS or from a chosen local address.
// Owns: line framing, multi-line replies, DATA dot-stuffing (RFC 5321 §4.5.2) when asked.
// Must not: hide protocol details (no retries, no RSET, no dot-stuffing unless asked; sendMail returns every reply).

import net from 'node:net';
import tls from 'node:tls';

export type ConnectOptions = { host?: string; localAddress?: string };

export class SmtpDialog {
  #socket: net.Socket;
  #buffer = '';
  #waiters: (() => void)[] = [];
  greeting = '';
  closed = false;

  private constructor(socket: net.Socket) {
    this.#socket = socket;
    this.#attach(socket);
  }

  #attach(socket: net.Socket): void {
    socket.setEncoding('latin1');
    socket.on('data', (data: string) => {
      this.#buffer += data;
      this.#wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.#wake();
    });
    socket.on('error', () => undefined);
  }

  #wake(): void {
    for (const waiter of this.#waiters.splice(0)) waiter();
  }

  static async connect(port: number, options: ConnectOptions = {}): Promise<SmtpDialog> {
    const socket = net.connect({ port, host: options.host ?? '127.0.0.1', ...(options.localAddress ? { localAddress: options.localAddress } : {}) });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const dialog = new SmtpDialog(socket);
    dialog.greeting = await dialog.readReply();
    return dialog;
  }

  /** Reads one complete (possibly multi-line) reply, without the final CRLF. */
  async readReply(timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const lines = this.#buffer.split('\r\n');
      for (let index = 0; index < lines.length - 1; index++) {
        if (/^\d{3}( |$)/.test(lines[index] as string)) {
          const reply = lines.slice(0, index + 1).join('\r\n');
          this.#buffer = lines.slice(index + 1).join('\r\n');
          return reply;
        }
      }
      if (this.closed) throw new Error(`connection closed; unread: ${JSON.stringify(this.#buffer)}`);
      if (Date.now() > deadline) throw new Error(`no reply within ${timeoutMs} ms; unread: ${JSON.stringify(this.#buffer)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  async command(line: string): Promise<string> {
    this.#socket.write(`${line}\r\n`);
    return this.readReply();
  }

  /** Writes raw bytes (the test does any dot-stuffing and the final "."). */
  write(bytes: string | Buffer): void {
    this.#socket.write(bytes);
  }

  /** DATA, then the message as sendMessage sends it; returns the reply to the final dot (or to DATA if not 354). */
  async sendData(message: Buffer | string): Promise<string> {
    const reply = await this.command('DATA');
    if (!reply.startsWith('354')) return reply;
    return this.sendMessage(message);
  }

  /** After a 354: the message dot-stuffed and terminated (see dotStuff); returns the reply. A string is sent as latin1. */
  async sendMessage(message: Buffer | string): Promise<string> {
    this.#socket.write(dotStuff(Buffer.isBuffer(message) ? message : Buffer.from(message, 'latin1')));
    return this.readReply();
  }

  async startTls(): Promise<void> {
    const reply = await this.command('STARTTLS');
    if (!reply.startsWith('220')) throw new Error(`STARTTLS refused: ${reply}`);
    const secure = tls.connect({ socket: this.#socket, rejectUnauthorized: false });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
    });
    this.#socket.removeAllListeners('data');
    this.#socket = secure;
    this.#attach(secure);
  }

  /** Writes raw bytes and waits until the socket takes more (a client streaming a big message). */
  async writeDrained(bytes: Buffer): Promise<void> {
    if (this.#socket.write(bytes)) return;
    await new Promise<void>((resolve, reject) => {
      const done = (error?: Error) => {
        this.#socket.off('drain', done);
        this.#socket.off('close', closed);
        if (error) reject(error);
        else resolve();
      };
      const closed = () => done(new Error('connection closed while writing'));
      this.#socket.once('drain', () => done());
      this.#socket.once('close', closed);
    });
  }

  /** Drops the connection at once, mid-command or mid-DATA (a client that goes away). */
  destroy(): void {
    this.#socket.destroy();
  }

  /** Drops the connection with a TCP reset (ECONNRESET at sello). */
  resetAndDestroy(): void {
    if (this.#socket instanceof tls.TLSSocket) this.#socket.destroy();
    else this.#socket.resetAndDestroy();
  }

  async close(): Promise<void> {
    if (!this.closed) {
      this.#socket.end('QUIT\r\n');
      this.#socket.destroySoon?.();
    }
  }
}

/**
 * RFC 5321 §4.5.2 transparency plus the terminating ".": a dot starting the data or following any
 * LF (CRLF or bare) is doubled; bare LFs are otherwise kept; a last line without CRLF gets one.
 */
export function dotStuff(message: Buffer): Buffer {
  const stuffed = message.toString('latin1').replace(/(^|\n)\./g, '$1..');
  const terminated = stuffed.endsWith('\r\n') || stuffed.length === 0 ? stuffed : `${stuffed}\r\n`;
  return Buffer.from(`${terminated}.\r\n`, 'latin1');
}

/** Every reply of one sendMail transaction, each without its final CRLF. */
export type Transaction = {
  greeting: string;
  ehlo: string;
  mail: string;
  rcpt: string[];
  /** Reply to DATA (354 expected); absent unless MAIL and at least one RCPT were accepted. */
  dataCommand?: string;
  /** Reply after the message; absent when DATA was not answered 354. */
  data?: string;
};

/**
 * One transaction without pipelining — EHLO, MAIL, each RCPT, and DATA with the message
 * dot-stuffed (see dotStuff) if MAIL and a RCPT got 250/251 — then QUIT; every reply is returned.
 */
export async function sendMail(
  port: number,
  envelope: { from: string; to: string[]; data: Buffer | string },
  options: ConnectOptions & { helo?: string } = {},
): Promise<Transaction> {
  const dialog = await SmtpDialog.connect(port, options);
  try {
    const ehlo = await dialog.command(`EHLO ${options.helo ?? 'client.test'}`);
    const mail = await dialog.command(`MAIL FROM:<${envelope.from}>`);
    const rcpt: string[] = [];
    for (const recipient of envelope.to) rcpt.push(await dialog.command(`RCPT TO:<${recipient}>`));
    const transaction: Transaction = { greeting: dialog.greeting, ehlo, mail, rcpt };
    if (mail.startsWith('250') && rcpt.some((reply) => /^25[01]/.test(reply))) {
      transaction.dataCommand = await dialog.command('DATA');
      if (transaction.dataCommand.startsWith('354')) transaction.data = await dialog.sendMessage(envelope.data);
    }
    return transaction;
  } finally {
    await dialog.close();
  }
}

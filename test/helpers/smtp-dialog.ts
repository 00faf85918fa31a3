// A raw SMTP client for tests that assert exact reply bytes: send a line, get the whole reply.
// Must not: hide protocol details (no retries, no dot-stuffing unless asked).

import net from 'node:net';
import tls from 'node:tls';

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

  static async connect(port: number, options: { host?: string; localAddress?: string } = {}): Promise<SmtpDialog> {
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

  /** DATA, the message dot-stuffed, the final dot; returns the reply to the final dot. */
  async sendData(message: Buffer | string): Promise<string> {
    const reply = await this.command('DATA');
    if (!reply.startsWith('354')) return reply;
    let text = Buffer.isBuffer(message) ? message.toString('latin1') : message;
    text = text.replace(/(^|\r\n)\./g, '$1..');
    if (!text.endsWith('\r\n')) text += '\r\n';
    this.#socket.write(Buffer.from(`${text}.\r\n`, 'latin1'));
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

  async close(): Promise<void> {
    if (!this.closed) {
      this.#socket.end('QUIT\r\n');
      this.#socket.destroySoon?.();
    }
  }
}

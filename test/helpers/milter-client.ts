// A minimal milter client (the MTA's side) for tests: frames commands, reads the filter's
// responses as raw packets. Independent of src/milter/codec.ts so tests of the codec and the
// server do not check the code against itself.
// Must not: interpret responses beyond splitting packets (tests assert the bytes).

import net from 'node:net';

/** One framed packet: uint32 length (command + data), command letter, data. */
export function milterPacket(letter: string, data: Buffer | string = Buffer.alloc(0)): Buffer {
  const body = Buffer.concat([Buffer.from(letter, 'latin1'), typeof data === 'string' ? Buffer.from(data, 'latin1') : data]);
  const length = Buffer.alloc(4);
  length.writeUInt32BE(body.length);
  return Buffer.concat([length, body]);
}

export const uint32 = (value: number): Buffer => {
  const bytes = Buffer.alloc(4);
  bytes.writeUInt32BE(value);
  return bytes;
};

/** The packets an MTA sends, built from their documented formats (libmilter engine.c). */
export const mta = {
  negotiate: (version = 6, actions = 0x1ff, protocol = 0x1fffff) => milterPacket('O', Buffer.concat([uint32(version), uint32(actions), uint32(protocol)])),
  connect: (hostname: string, address: string, port: number) => {
    const portBytes = Buffer.alloc(2);
    portBytes.writeUInt16BE(port);
    return milterPacket('C', Buffer.concat([Buffer.from(`${hostname}\0${address.includes(':') ? '6' : '4'}`), portBytes, Buffer.from(`${address}\0`)]));
  },
  macros: (forCommand: string, macros: Record<string, string>) =>
    milterPacket('D', forCommand + Object.entries(macros).map(([name, value]) => `${name}\0${value}\0`).join('')),
  helo: (name: string) => milterPacket('H', `${name}\0`),
  mail: (path: string) => milterPacket('M', `${path}\0`),
  rcpt: (path: string) => milterPacket('R', `${path}\0`),
  header: (name: string, value: string) => milterPacket('L', `${name}\0${value}\0`),
  endOfHeaders: () => milterPacket('N'),
  body: (chunk: string | Buffer) => milterPacket('B', chunk),
  endOfMessage: () => milterPacket('E'),
  abort: () => milterPacket('A'),
  quit: () => milterPacket('Q'),
};

export interface MilterResponse {
  letter: string;
  data: Buffer;
}

/** A connection to a milter: write packets, await responses, see whether the filter closed. */
export class MilterTestClient {
  readonly socket: net.Socket;
  #buffer = Buffer.alloc(0);
  #responses: MilterResponse[] = [];
  #waiters: (() => void)[] = [];
  closed = false;
  readonly closedPromise: Promise<void>;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.#buffer = Buffer.concat([this.#buffer, chunk]);
      while (this.#buffer.length >= 4 && this.#buffer.length >= 4 + this.#buffer.readUInt32BE(0)) {
        const length = this.#buffer.readUInt32BE(0);
        this.#responses.push({ letter: String.fromCharCode(this.#buffer[4] as number), data: this.#buffer.subarray(5, 4 + length) });
        this.#buffer = this.#buffer.subarray(4 + length);
      }
      this.#wake();
    });
    this.closedPromise = new Promise((resolve) =>
      socket.on('close', () => {
        this.closed = true;
        this.#wake();
        resolve();
      }),
    );
    socket.on('error', () => undefined);
  }

  /** Connects to a TCP port on `host`, or to the unix socket at `port` when it is a path. */
  static connect(port: number | string, host = '127.0.0.1'): Promise<MilterTestClient> {
    return new Promise((resolve, reject) => {
      const onConnect = () => resolve(new MilterTestClient(socket));
      const socket = typeof port === 'string' ? net.connect(port, onConnect) : net.connect(port, host, onConnect);
      socket.once('error', reject);
    });
  }

  #wake(): void {
    for (const waiter of this.#waiters.splice(0)) waiter();
  }

  send(...packets: Buffer[]): void {
    this.socket.write(Buffer.concat(packets));
  }

  /** The next `count` responses (fails after `timeoutMs` or when the filter closes first). */
  async read(count = 1, timeoutMs = 10_000): Promise<MilterResponse[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.#responses.length < count) {
      if (this.closed) throw new Error(`the filter closed the connection after ${this.#responses.length} of ${count} responses`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${count} responses (got ${this.#responses.length})`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.#responses.splice(0, count);
  }

  /** Sends, then reads `count` responses. */
  async exchange(packet: Buffer, count = 1): Promise<MilterResponse[]> {
    this.send(packet);
    return this.read(count);
  }

  /** Resolves when the filter closes the connection (fails after `timeoutMs`). */
  async waitClosed(timeoutMs = 10_000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.closedPromise,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error('the filter did not close the connection')), timeoutMs);
      }),
    ]).finally(() => clearTimeout(timer));
  }

  close(): void {
    this.socket.destroy();
  }
}

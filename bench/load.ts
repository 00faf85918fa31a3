// The load generator: C SMTP clients at once (nodemailer's SMTPConnection, the client under
// nodemailer's pooled transport, with PIPELINING when offered). Mode `session`: each keeps one
// connection and sends message after message over it, as an MTA's connection cache does; a
// message's latency is from MAIL FROM being written to the 250 after the final dot. Mode
// `connection`: each message on a new connection (connect, greeting, EHLO, the transaction,
// QUIT), as most MTAs and mail clients send; its latency is from connect to that 250.
// Owns: connections, the shared message counter, per-message timing. Must not: know whether
// it talks to sello or to the sink; every setup goes through exactly this code.

import SMTPConnection from 'nodemailer/lib/smtp-connection';

export interface LoadResult {
  /** Per-message latency in ms, in completion order; failed messages are not included. */
  latenciesMs: Float64Array;
  /** Messages attempted (accepted + failed). */
  sent: number;
  /** From the first MAIL FROM to the last reply. */
  wallMs: number;
  /** This process's CPU time (user + system) during the run, µs. */
  clientCpuMicros: number;
  errors: number;
  /** The first few distinct error texts, for the report. */
  errorSamples: string[];
}

export interface Envelope {
  from: string;
  to: string[];
}

function connectOne(port: number): Promise<SMTPConnection> {
  const connection = new SMTPConnection({
    host: '127.0.0.1',
    port,
    ignoreTLS: true,
    name: 'load.bench.test',
    connectionTimeout: 10_000,
    greetingTimeout: 10_000,
    socketTimeout: 60_000,
    logger: false,
  });
  return new Promise((resolve, reject) => {
    connection.once('error', reject);
    connection.connect(() => {
      connection.off('error', reject);
      resolve(connection);
    });
  });
}

function sendOne(connection: SMTPConnection, envelope: Envelope, message: Buffer): Promise<void> {
  // A fresh envelope object each time: SMTPConnection keeps its transaction state (recipient
  // queue, accepted, rejected) on the object it is given, so sharing one corrupts sessions.
  const own = { from: envelope.from, to: [...envelope.to] };
  return new Promise((resolve, reject) => connection.send(own, message, (error) => (error ? reject(error) : resolve())));
}

function resetOne(connection: SMTPConnection): Promise<void> {
  return new Promise((resolve, reject) => connection.reset((error) => (error ? reject(error) : resolve())));
}

export interface RunOptions {
  /** Keep sending past `count` until this much time has passed (short runs are too noisy). */
  minimumMs?: number;
  /** Give up (throw) after this long. */
  deadlineMs: number;
}

/** One client loop of a mode: whether it can still send, how it sends one message, how it recovers. */
interface Sender {
  alive(): boolean;
  /** Sends one message; rejects when it was not accepted. Timed from the call. */
  send(): Promise<void>;
  /** After a failed message (session mode: RSET, or mark the session broken). */
  recover?(): Promise<void>;
}

/**
 * The run both modes share: `count` messages (more if they took under `minimumMs`) drawn from
 * one counter by every sender, each timed, failures counted with a few samples, and this
 * process's CPU; resolves when every message sent has been answered.
 */
async function runSenders(count: number, options: RunOptions, senders: readonly Sender[]): Promise<LoadResult> {
  const latencies: number[] = [];
  let sent = 0;
  let errors = 0;
  const errorSamples = new Set<string>();
  const started = performance.now();
  const minimumEnd = started + (options.minimumMs ?? 0);
  const deadline = started + options.deadlineMs;
  const cpuBefore = process.cpuUsage();

  const loop = async (sender: Sender) => {
    while (sender.alive()) {
      const now = performance.now();
      if (sent >= count && now >= minimumEnd) break;
      if (now > deadline) throw new Error(`run did not finish within ${options.deadlineMs} ms`);
      sent++;
      try {
        await sender.send();
        latencies.push(performance.now() - now);
      } catch (error) {
        errors++;
        if (errorSamples.size < 3) errorSamples.add(error instanceof Error ? error.message : String(error));
        await sender.recover?.();
      }
    }
  };
  await Promise.all(senders.map(loop));
  const wallMs = performance.now() - started;
  const cpu = process.cpuUsage(cpuBefore);
  if (sent < count) {
    errors += count - sent;
    errorSamples.add(`${count - sent} messages not sent: every session broke`);
  }
  return { latenciesMs: Float64Array.from(latencies), sent, wallMs, clientCpuMicros: cpu.user + cpu.system, errors, errorSamples: [...errorSamples] };
}

export class LoadGenerator {
  readonly #connections: SMTPConnection[];
  /** Set when a connection broke; that session sends nothing more. */
  readonly #broken = new Set<SMTPConnection>();

  private constructor(connections: SMTPConnection[]) {
    this.#connections = connections;
    for (const connection of connections) {
      connection.on('error', () => this.#broken.add(connection));
      connection.on('end', () => this.#broken.add(connection));
    }
  }

  /** Opens `concurrency` sessions (connect, greeting, EHLO) before anything is timed. */
  static async open(port: number, concurrency: number): Promise<LoadGenerator> {
    const settled = await Promise.allSettled(Array.from({ length: concurrency }, () => connectOne(port)));
    const connections = settled.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
    const failure = settled.find((result) => result.status === 'rejected');
    if (failure) {
      for (const connection of connections) connection.close();
      throw new Error(`could not open ${concurrency} SMTP sessions to port ${port}: ${String((failure as PromiseRejectedResult).reason)}`);
    }
    return new LoadGenerator(connections);
  }

  /**
   * Sends `count` messages, and more if they took under `minimumMs`, all sessions drawing from
   * one counter; resolves when every message sent has been answered.
   */
  run(count: number, envelope: Envelope, message: Buffer, options: RunOptions): Promise<LoadResult> {
    const broken = this.#broken;
    return runSenders(
      count,
      options,
      this.#connections.map((connection) => ({
        alive: () => !broken.has(connection),
        send: () => sendOne(connection, envelope, message),
        recover: async () => {
          if (!broken.has(connection)) await resetOne(connection).catch(() => broken.add(connection));
        },
      })),
    );
  }

  /** QUIT on every session. */
  close(): void {
    for (const connection of this.#connections) {
      if (this.#broken.has(connection)) connection.close();
      else connection.quit();
    }
  }
}

/**
 * Mode `connection`: `concurrency` clients, each opening a new connection per message and
 * QUITting it after the 250 (the QUIT is not waited for: the next message starts at once).
 */
export class PerConnectionLoad {
  readonly #port: number;
  readonly #concurrency: number;
  readonly #open = new Set<SMTPConnection>();

  constructor(port: number, concurrency: number) {
    this.#port = port;
    this.#concurrency = concurrency;
  }

  run(count: number, envelope: Envelope, message: Buffer, options: RunOptions): Promise<LoadResult> {
    const send = async () => {
      let connection: SMTPConnection | undefined;
      try {
        connection = await connectOne(this.#port);
        this.#open.add(connection);
        await sendOne(connection, envelope, message);
      } finally {
        if (connection) {
          const done = connection;
          done.once('end', () => this.#open.delete(done));
          done.on('error', () => this.#open.delete(done));
          done.quit();
        }
      }
    };
    return runSenders(count, options, Array.from({ length: this.#concurrency }, () => ({ alive: () => true, send })));
  }

  /** Cuts whatever has not finished its QUIT yet. */
  close(): void {
    for (const connection of this.#open) connection.close();
    this.#open.clear();
  }
}

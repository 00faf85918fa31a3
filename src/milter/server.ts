// The milter listener: a TCP (loopback) or unix socket that Postfix's smtpd_milters /
// non_smtpd_milters or Sendmail's INPUT_MAIL_FILTER connect to.
// Owns: sockets and their lifecycle (start, reload, drain, close), reading packets through the
// codec one command at a time, writing responses, and closing on bad input with one log line.
// Must not: interpret commands (connection.ts does) or decide anything (the engine does).

import { randomBytes } from 'node:crypto';
import { chmod, lstat, unlink } from 'node:fs/promises';
import net, { BlockList, isIP } from 'node:net';
import type { Config, ListenerConfig } from '../config/schema.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { Engine, FrontEnd } from '../pipeline/session.ts';
import { DEFAULT_MAX_PACKET_SIZE, MilterDecoder, MilterProtocolError } from './codec.ts';
import { MilterConnection, type MilterConnectionOptions } from './connection.ts';

/** What a milter listener runs with (a structural subset of the SMTP listener's dependencies, so app.ts builds both alike). */
export interface MilterServerDependencies {
  config: Config;
  listener: ListenerConfig;
  engine: Engine;
  /** What the listener is to the engine (app.ts frontEndFor: sign and verify default to on for a milter). */
  frontEnd: FrontEnd;
  logger: Logger;
  /** Open connections (sello_active_connections) and refusals (sello_smtp_replies_total) by listener. */
  metrics?: Pick<Metrics, 'connectionOpened' | 'connectionClosed' | 'reply'>;
  /** Largest packet accepted (default: a 64 KiB body chunk plus room); bigger ones close the connection. */
  maxPacketSize?: number;
}

function networks(cidrs: readonly string[]): BlockList {
  const list = new BlockList();
  for (const cidr of cidrs) {
    const [address, prefix] = cidr.split('/') as [string, string | undefined];
    const type = isIP(address) === 6 ? 'ipv6' : 'ipv4';
    if (prefix === undefined) list.addAddress(address, type);
    else list.addSubnet(address, Number(prefix), type);
  }
  return list;
}

interface OpenConnection {
  socket: net.Socket;
  connection: MilterConnection;
}

export class MilterServer {
  #deps: MilterServerDependencies;
  #connectionOptions: MilterConnectionOptions;
  readonly #server: net.Server;
  readonly #open = new Set<OpenConnection>();
  #draining = false;
  #drained: (() => void) | undefined;

  constructor(deps: MilterServerDependencies) {
    this.#deps = deps;
    this.#connectionOptions = this.#optionsFor(deps);
    this.#server = net.createServer((socket) => this.#accept(socket));
    this.#server.maxConnections = deps.config.limits.maxConnections;
  }

  #optionsFor(deps: MilterServerDependencies): MilterConnectionOptions {
    return {
      frontEnd: deps.frontEnd,
      engine: deps.engine,
      logger: deps.logger,
      trustedNetworks: networks(deps.listener.trustedNetworks),
      onRefusal: (stage, code) => deps.metrics?.reply(deps.listener.name, stage, code),
    };
  }

  /** Listens; the address is { host: socket path, port: 0 } for a unix socket. */
  async start(): Promise<{ host: string; port: number }> {
    const { host, port, path } = this.#deps.listener.listen;
    if (path !== undefined) await removeStaleSocket(path);
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      const listening = () => {
        this.#server.off('error', reject);
        resolve();
      };
      if (path !== undefined) this.#server.listen(path, listening);
      else this.#server.listen(port, host, listening);
    });
    this.#server.on('error', (error) => this.#deps.logger.error({ listener: this.#deps.listener.name, err: error.message }, 'milter listener error'));
    if (path !== undefined) {
      // The MTA's user must reach it (docs/milter.md: group of the socket); nobody else may.
      await chmod(path, 0o660);
      return { host: path, port: 0 };
    }
    const address = this.#server.address() as net.AddressInfo;
    return { host: address.address, port: address.port };
  }

  /** A reload: new connections use the new config and engine; open ones finish with theirs. */
  update(deps: MilterServerDependencies): void {
    this.#deps = deps;
    this.#connectionOptions = this.#optionsFor(deps);
  }

  stopAccepting(): void {
    this.#server.close();
  }

  async resumeAccepting(): Promise<void> {
    await this.start();
  }

  /**
   * Stops listening; connections between messages close now, those inside a message may finish
   * it within `deadlineMs`, then every connection closes (the MTA applies milter_default_action).
   */
  shutdown(deadlineMs: number): Promise<void> {
    this.#draining = true;
    if (this.#server.listening) this.#server.close();
    for (const entry of this.#open) if (!entry.connection.inMessage) entry.socket.destroy();
    if (this.#open.size === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        for (const entry of this.#open) entry.socket.destroy();
      }, deadlineMs);
      this.#drained = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  close(): Promise<void> {
    return this.shutdown(0);
  }

  #accept(socket: net.Socket): void {
    const deps = this.#deps;
    const sessionId = randomBytes(6).toString('hex');
    const log = deps.logger.child({ listener: deps.listener.name, sessionId });
    const connection = new MilterConnection(this.#connectionOptions, sessionId);
    const decoder = new MilterDecoder(deps.maxPacketSize ?? DEFAULT_MAX_PACKET_SIZE);
    const entry: OpenConnection = { socket, connection };
    this.#open.add(entry);
    deps.metrics?.connectionOpened(deps.listener.name);
    if (this.#draining) {
      socket.destroy();
    }
    socket.setNoDelay(true);
    socket.setTimeout(deps.config.limits.commandTimeout);
    socket.on('timeout', () => {
      log.info({ inMessage: connection.inMessage }, 'milter: the MTA was idle too long; closing the connection');
      socket.destroy();
    });
    socket.on('error', (error) => log.info({ err: error.message }, 'milter: connection error'));
    socket.on('close', () => {
      if (connection.inMessage) log.info('milter: the MTA disconnected mid-message; the transaction is aborted');
      else if (decoder.buffered > 0) log.info({ bytes: decoder.buffered }, 'milter: the MTA disconnected inside a packet (truncated)');
      connection.closed();
      deps.metrics?.connectionClosed(deps.listener.name);
      this.#open.delete(entry);
      if (this.#draining && this.#open.size === 0) this.#drained?.();
    });

    // One command at a time: reading pauses while the engine works, so no more than one packet
    // (plus the socket's own buffer) waits in memory per connection.
    let queue: Promise<void> = Promise.resolve();
    socket.on('data', (chunk: Buffer) => {
      socket.pause();
      queue = queue.then(async () => {
        if (socket.destroyed) return;
        try {
          for (const command of decoder.push(chunk)) {
            const responses = await connection.handle(command);
            if (socket.destroyed) return;
            // One write per command: the MTA reads the responses to one command together (an
            // end of message's edits and its final reply), and small separate writes would wait
            // on Nagle + delayed ACK (40 ms per message, measured with bench:milter).
            if (responses.length > 0) socket.write(responses.length === 1 ? (responses[0] as Buffer) : Buffer.concat(responses));
            if (command.command === 'quit') {
              socket.end();
              return;
            }
            if (this.#draining && !connection.inMessage) {
              socket.end();
              return;
            }
          }
          socket.resume();
        } catch (error) {
          if (error instanceof MilterProtocolError) {
            // The MTA's fault, not ours: one line at warn, the connection closed; the MTA applies
            // its milter_default_action to the message.
            log.warn({ err: error.message }, 'milter: protocol error from the MTA; closing the connection');
          } else {
            log.error({ err: error }, 'milter: internal error; closing the connection');
          }
          socket.destroy();
        }
      });
    });
  }
}

/** A socket file left by a previous run (nobody listening) is removed; anything else is kept and listen fails. */
async function removeStaleSocket(path: string): Promise<void> {
  const stat = await lstat(path).catch(() => undefined);
  if (!stat?.isSocket()) return;
  const inUse = await new Promise<boolean>((resolve) => {
    const probe = net.connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  // Another worker (workers > 1, node:cluster) may have removed it first.
  if (!inUse) await unlink(path).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'ENOENT') throw error;
  });
}

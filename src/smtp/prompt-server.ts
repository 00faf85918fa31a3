// An SMTPServer whose greeting waits only as long as the listener asks (greetingDelay).
// Owns: the one override of smtp-server internals (3.21.6, pinned): SMTPServer.connect() calls
// SMTPConnection.init(), which always waits a hard-coded 100 ms before the greeting to catch
// early talkers. That pause is right for the Internet (mx) but pure latency for a submission or
// filter listener fed by MUAs and the local MTA, and it caps throughput. This subclass does what
// connect() and init() do, with the configured delay (0 = greet at once).
// Must not: change anything else about the connection.

import type net from 'node:net';
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';

/** The private parts of smtp-server this relies on; a test pins the behaviour. */
interface ConnectionInternals {
  init(): void;
  _setListeners(callback: () => void): void;
  connectionReady(): void;
  send(code: number, text: string, context?: unknown): void;
  name: string;
  on(event: string, listener: (value: unknown) => void): void;
}
interface ServerInternals {
  connections: Set<unknown>;
  _onError(error: unknown): void;
  _onClientConnect(data: unknown): void;
}

export class PromptSMTPServer extends SMTPServer {
  readonly greetingDelayMs: number;

  constructor(options: SMTPServerOptions, greetingDelayMs: number) {
    super(options);
    this.greetingDelayMs = greetingDelayMs;
  }

  override connect(socket: net.Socket, socketOptions: unknown): void {
    const server = this as unknown as ServerInternals;
    const Connection = SMTPConnection as unknown as new (server: unknown, socket: net.Socket, options: unknown) => ConnectionInternals;
    const connection = new Connection(this, socket, socketOptions);
    server.connections.add(connection);
    connection.on('error', (error) => server._onError(error));
    connection.on('connect', (data) => server._onClientConnect(data));
    connection._setListeners(() => {
      const maxClients = this.options.maxClients;
      if (maxClients && server.connections.size > maxClients) {
        connection.send(421, `${connection.name} Too many connected clients, try again in a moment`, false);
        return;
      }
      if (this.greetingDelayMs > 0) setTimeout(() => connection.connectionReady(), this.greetingDelayMs).unref();
      else connection.connectionReady();
    });
  }
}

// An SMTPServer (3.21.6, pinned) with the two connection-level fixes sello needs; the only
// place that reaches into smtp-server internals (tests pin both behaviours).
// 1. Greeting delay: SMTPServer.connect() calls SMTPConnection.init(), which always waits a
//    hard-coded 100 ms before the greeting to catch early talkers. Right for the Internet (mx),
//    pure latency for submission and filter listeners; here the delay is the listener's own.
// 2. Half-closed clients: Exim pipelines QUIT after the final dot and shuts down its sending side
//    (TCP FIN), then waits for the reply to the dot. smtp-server lets Node end the socket on the
//    client's FIN and writes replies only while readyState is 'open', so the 250 for the message
//    was never sent and Exim deferred the message (seen in test/interop/exim-content-filter).
//    Here sockets stay half-open (allowHalfOpen), a write-only socket still counts as open for
//    replies, and once every pipelined command has been answered sello closes its side.
// Must not: change anything else about the connection.

import net from 'node:net';
import { TLSSocket } from 'node:tls';
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';

/** The private parts of smtp-server this relies on; a test pins the behaviour. */
interface ConnectionInternals {
  init(): void;
  _setListeners(callback: () => void): void;
  connectionReady(): void;
  send(code: number, text: string, context?: unknown): void;
  close(): void;
  _parser?: { once(event: 'finish', listener: () => void): void } | false;
  name: string;
  on(event: string, listener: (value: unknown) => void): void;
}
interface ServerInternals {
  connections: Set<unknown>;
  _onError(error: unknown): void;
  _onClientConnect(data: unknown): void;
}

const socketReadyState = Object.getOwnPropertyDescriptor(net.Socket.prototype, 'readyState')?.get;

/** smtp-server writes a reply only while readyState is 'open'; a client that half-closed is still listening. */
function answerHalfClosedClients(socket: net.Socket): void {
  if (!socketReadyState) return;
  Object.defineProperty(socket, 'readyState', {
    configurable: true,
    get(this: net.Socket) {
      const state = socketReadyState.call(this) as string;
      return state === 'writeOnly' ? 'open' : state;
    },
  });
}

export class PromptSMTPServer extends SMTPServer {
  readonly greetingDelayMs: number;

  constructor(options: SMTPServerOptions, greetingDelayMs: number) {
    // smtp-server hands its options to net.createServer / tls.createServer.
    super({ ...options, allowHalfOpen: true } as SMTPServerOptions);
    this.greetingDelayMs = greetingDelayMs;
  }

  override connect(socket: net.Socket, socketOptions: unknown): void {
    const server = this as unknown as ServerInternals;
    const Connection = SMTPConnection as unknown as new (server: unknown, socket: net.Socket, options: unknown) => ConnectionInternals;
    if (!(socket instanceof TLSSocket)) answerHalfClosedClients(socket);
    const connection = new Connection(this, socket, socketOptions);
    // The parser finishes once the client's input has ended and every command in it (QUIT
    // included) has been answered: nothing more can come, so close our side too.
    connection._parser?.once('finish', () => setImmediate(() => connection.close()));
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

// An SMTPServer (3.21.6, pinned) with the connection-level fixes sello needs; the only
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
// 3. Reply accounting: connection.send() is the single write site of every reply, smtp-server's
//    own included (503 sequence errors, 501 syntax errors, 552 size); it is wrapped to report
//    (stage, code) to the listener's metrics.
// 4. Graceful drain: SMTPServer.close() answers every command with a bare "421 Server shutting
//    down" at once, even inside a transaction, then cuts everyone after closeTimeout; drain()
//    lets transactions finish first (see it).
// 5. Ended sessions start no work: smtp-server's parser dispatched an unterminated last line as a
//    command when the client's input ended (SMTPStream._flushData), after the session had gone,
//    so a MAIL FROM without CRLF opened a downstream session nobody would close. Such a line is
//    no command (RFC 5321 §2.3.8: lines end in CRLF) and is dropped, and a session hook called
//    after the close is refused without running.
// 6. Replies: every 4xx/5xx smtp-server writes gets an enhanced status code (own-replies.ts);
//    STARTTLS where TLS is not configured is refused (502 5.5.1) instead of negotiated with
//    smtp-server's built-in certificate.
// 7. Deadlines: each connection's ClientDeadline (client-deadlines.ts) cuts a client that trickles
//    a command line or the message, with a shorter deadline near maxConnections.
// 8. Socket handover on reload: a listener replaced on the same address takes over the listening
//    socket of the one it replaces (adoptAcceptor) instead of binding after it closed, which reset
//    every connection arriving in between. The old server drains its own sessions only.
// Must not: change anything else about the connection.

import net from 'node:net';
import { TLSSocket } from 'node:tls';
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { Replies } from '../errors.ts';
import type { ReplyStage } from '../observability/metrics.ts';
import { ClientDeadline, STRESS_SHARE, type DeadlineExpiry, type DeadlineLimits } from './client-deadlines.ts';
import { replyText, withEnhancedCode } from './own-replies.ts';

export interface PromptServerHooks {
  /**
   * Every reply written to a client: its code and the stage of the command it answers (the
   * greeting and connection refusals: connect; AUTH continuation lines: auth; the reply after the
   * message: data). Replies to other commands (RSET, NOOP, STARTTLS, QUIT …) have no stage.
   * Unsolicited replies (idle timeout, shutdown) count under the last command's stage.
   */
  onReply?(stage: ReplyStage | undefined, code: number): void;
  /** A client cut at its command or DATA deadline (client-deadlines.ts), just before the 421. */
  onClientTimeout?(expiry: DeadlineExpiry): void;
}

const STAGES: Readonly<Record<string, ReplyStage>> = { HELO: 'helo', EHLO: 'helo', LHLO: 'helo', AUTH: 'auth', MAIL: 'mail', RCPT: 'rcpt', DATA: 'data' };

/** Grace after the drain deadline for the final 421 to be written before sockets are destroyed. */
const FINAL_REPLY_GRACE_MS = 1000;

/** The private parts of smtp-server this relies on; a test pins the behaviour. */
interface ConnectionInternals {
  init(): void;
  _setListeners(callback: () => void): void;
  connectionReady(): void;
  send(code: number, text: string | string[], context?: unknown): void;
  close(): void;
  _parser?: ParserInternals | false;
  _createParser(): ParserInternals;
  _onCommand(command: Buffer, callback?: () => void): void;
  /** Set while an AUTH exchange waits for the client's next line. */
  _nextHandler: unknown;
  /** A command's handler has not called back yet. */
  _handlerPending: boolean;
  /** The message is being received or decided on. */
  _dataStream: unknown;
  session: SMTPServerSession | undefined;
  name: string;
  on(event: string, listener: (value: unknown) => void): void;
}
interface ParserInternals {
  once(event: 'finish', listener: () => void): void;
  /** Between 354 and the final dot. */
  _dataMode: boolean;
  dataBytes: number;
  /** Dispatches a last line without CRLF as a command once the input has ended. */
  _flushData(): void;
}
interface ServerInternals {
  connections: Set<ConnectionInternals>;
  _pendingSockets: Map<net.Socket, net.Socket>;
  _onError(error: unknown): void;
  _onClientConnect(data: unknown): void;
}

/** In a mail transaction: MAIL accepted, a command being decided, or a message under way. */
function inTransaction(connection: ConnectionInternals): boolean {
  return connection._handlerPending || Boolean(connection._dataStream) || Boolean(connection.session?.envelope?.mailFrom);
}

/** The session hooks that can start work downstream; see #gateSessionHooks. */
const GATED_HOOKS = ['onAuth', 'onMailFrom', 'onRcptTo', 'onData'] as const;
type SessionHook = (first: unknown, session: SMTPServerSession, callback: (...results: unknown[]) => void) => void;
type HookTable = Record<(typeof GATED_HOOKS)[number], SessionHook> & { onClose: (session: SMTPServerSession, callback: () => void) => void };

/** RFC 5321 §2.3.8: a line without CRLF at the end of the input is no command; drop it. */
function ignoreUnterminatedLastLine(parser: ParserInternals | false | undefined): void {
  if (parser) parser._flushData = () => undefined;
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
  /** Not readonly: a config reload may change it for new connections. */
  greetingDelayMs: number;
  /** Read at every check, so a reload reaches open connections too. */
  deadlineLimits: DeadlineLimits = { commandTimeoutMs: 300_000, stressTimeoutMs: 10_000, minDataRate: 500 };
  readonly #hooks: PromptServerHooks;
  readonly #sockets = new Set<net.Socket>();
  /** Set by drain(): the 421 every session outside a transaction gets. */
  #drainReply: { code: number; text: string } | undefined;
  /** The running drain: resolves when every socket is gone; `deadline` ends the wait. */
  #drain: { done: Promise<void>; deadlineAt: number; timer: NodeJS.Timeout } | undefined;
  /** After the deadline: the sockets still open are destroyed when it fires. */
  #graceTimer: NodeJS.Timeout | undefined;
  /** The listening socket that accepts for this server: its own, or one taken over on reload. */
  #acceptor: net.Server;
  /** smtp-server's own connection handlers on this.server, to put back when the socket returns. */
  readonly #ownHandlers: ((socket: net.Socket) => void)[];
  /** The acceptor went to another server: drain() waits for this server's sockets only. */
  #handedOver = false;
  /** Sessions smtp-server has reported closed. */
  readonly #ended = new WeakSet<SMTPServerSession>();

  constructor(options: SMTPServerOptions, greetingDelayMs: number, hooks: PromptServerHooks = {}) {
    // smtp-server hands its options to net.createServer / tls.createServer.
    super({ ...options, allowHalfOpen: true } as SMTPServerOptions);
    this.greetingDelayMs = greetingDelayMs;
    this.#hooks = hooks;
    this.#gateSessionHooks();
    this.#acceptor = this.server;
    this.#ownHandlers = this.server.listeners('connection') as ((socket: net.Socket) => void)[];
  }

  /** The listening socket that accepts for this server (its address is the listener's). */
  get acceptor(): net.Server {
    return this.#acceptor;
  }

  /**
   * Takes over `previous`'s listening socket: from now on it accepts for this server, and
   * `previous` only finishes its own sessions. Also how a failed reload gives the socket back.
   */
  adoptAcceptor(previous: PromptSMTPServer): void {
    const acceptor = previous.#acceptor;
    previous.#handedOver = true;
    acceptor.removeAllListeners('connection');
    if (acceptor === this.server) for (const handler of this.#ownHandlers) acceptor.on('connection', handler);
    else acceptor.on('connection', (socket: net.Socket) => this.server.emit('connection', socket));
    this.#acceptor = acceptor;
    this.#handedOver = false;
  }

  /** Resolves once every socket this server accepted has closed. */
  #ownSocketsGone(): Promise<void> {
    return new Promise((resolve) => {
      const check = () => {
        if (this.#sockets.size > 0) return setTimeout(check, 50).unref();
        resolve();
      };
      check();
    });
  }

  /**
   * No downstream work for a session that has ended: a hook called after smtp-server reported
   * the close is refused without running. (A hook already running when the client leaves is
   * the listener's to end: its close hook cuts the downstream session, and a downstream session
   * opened after the close is closed at once, see Listener#openRelay.)
   */
  #gateSessionHooks(): void {
    const table = this as unknown as HookTable;
    for (const name of GATED_HOOKS) {
      const hook = table[name].bind(this);
      table[name] = (first, session, callback) => {
        if (this.#ended.has(session)) return callback(Object.assign(new Error(replyText(Replies.shuttingDown)), { responseCode: 421 }));
        hook(first, session, callback);
      };
    }
    const onClose = table.onClose.bind(this);
    table.onClose = (session, callback) => {
      this.#ended.add(session);
      onClose(session, callback);
    };
  }

  override connect(socket: net.Socket, socketOptions: unknown): void {
    const server = this as unknown as ServerInternals;
    const Connection = SMTPConnection as unknown as new (server: unknown, socket: net.Socket, options: unknown) => ConnectionInternals;
    if (!(socket instanceof TLSSocket)) answerHalfClosedClients(socket);
    const connection = new Connection(this, socket, socketOptions);
    ignoreUnterminatedLastLine(connection._parser);
    // STARTTLS makes a new parser for the TLS session.
    const createParser = connection._createParser.bind(connection);
    connection._createParser = () => {
      const parser = createParser();
      ignoreUnterminatedLastLine(parser);
      return parser;
    };
    // The parser finishes once the client's input has ended and every command in it (QUIT
    // included) has been answered: nothing more can come, so close our side too.
    if (connection._parser) connection._parser.once('finish', () => setImmediate(() => connection.close()));
    this.#sockets.add(socket);
    const deadline = this.#deadlineFor(connection);
    socket.once('close', () => {
      this.#sockets.delete(socket);
      deadline.stop();
    });
    this.#observe(connection, deadline);
    server.connections.add(connection);
    connection.on('error', (error) => server._onError(error));
    connection.on('connect', (data) => server._onClientConnect(data));
    connection._setListeners(() => {
      const maxClients = this.options.maxClients;
      if (maxClients && server.connections.size > maxClients) {
        connection.send(Replies.tooManyConnections.code, replyText(Replies.tooManyConnections), false);
        return;
      }
      if (this.#drainReply) {
        connection.send(this.#drainReply.code, this.#drainReply.text, false);
        return;
      }
      if (this.greetingDelayMs > 0) setTimeout(() => connection.connectionReady(), this.greetingDelayMs).unref();
      else connection.connectionReady();
    });
  }

  #deadlineFor(connection: ConnectionInternals): ClientDeadline {
    const server = this as unknown as ServerInternals;
    const parser = () => connection._parser || undefined;
    return new ClientDeadline(
      {
        waitingForSello: () => connection._handlerPending || (Boolean(connection._dataStream) && !parser()?._dataMode),
        inData: () => Boolean(parser()?._dataMode),
        dataBytes: () => parser()?.dataBytes ?? 0,
        stressed: () => Boolean(this.options.maxClients) && server.connections.size >= (this.options.maxClients ?? 0) * STRESS_SHARE,
      },
      () => this.deadlineLimits,
      (expiry) => {
        this.#hooks.onClientTimeout?.(expiry);
        connection.send(Replies.clientTimeout.code, replyText(Replies.clientTimeout));
      },
    );
  }

  /** Wraps the connection's single reply write site and its command dispatch. */
  #observe(connection: ConnectionInternals, deadline: ClientDeadline): void {
    let stage: ReplyStage | undefined = 'connect';
    const send = connection.send.bind(connection);
    connection.send = (code, text, context) => {
      this.#hooks.onReply?.(stage, code);
      send(code, typeof text === 'string' ? withEnhancedCode(code, text) : text, context);
    };
    const onCommand = connection._onCommand.bind(connection);
    connection._onCommand = (command, callback) => {
      deadline.commandReceived();
      const name = (command || '').toString().split(' ')[0]?.toUpperCase() ?? '';
      // An AUTH continuation line is no command of its own: it stays in the auth stage.
      if (!connection._nextHandler) stage = STAGES[name];
      // Draining: a session may finish its transaction; anything else ends the session (QUIT
      // still gets its 221). RFC 5321 §3.8: a server that must shut down answers 421.
      if (this.#drainReply && name !== 'QUIT' && !inTransaction(connection)) {
        connection.send(this.#drainReply.code, this.#drainReply.text, false);
        return;
      }
      if (name === 'STARTTLS' && !connection._nextHandler && this.options.hideSTARTTLS) {
        // RFC 3207 §4: not advertised, so not offered; smtp-server would negotiate anyway.
        connection.send(Replies.startTlsNotOffered.code, replyText(Replies.startTlsNotOffered), false);
        if (callback) setImmediate(callback);
        return;
      }
      onCommand(command, callback);
    };
  }

  /**
   * Graceful shutdown: stop accepting at once (new connections are then refused by the OS);
   * sessions outside a transaction get `reply` (a 421, which closes them) now; a session inside
   * one may finish it, and its next command gets the 421. At `deadlineMs` everyone still
   * connected gets the 421 and every socket is destroyed shortly after. Resolves when all are
   * gone. Called again while draining, an earlier deadline replaces the later one.
   */
  drain(deadlineMs: number, reply: { code: number; text: string }): Promise<void> {
    const deadlineAt = performance.now() + deadlineMs;
    if (this.#drain) {
      if (deadlineAt < this.#drain.deadlineAt) {
        clearTimeout(this.#drain.timer);
        this.#drain.deadlineAt = deadlineAt;
        this.#drain.timer = setTimeout(() => this.#cutAll(), deadlineMs);
      }
      return this.#drain.done;
    }
    this.#drainReply = reply;
    const server = this as unknown as ServerInternals;
    const closed = this.#handedOver ? this.#ownSocketsGone() : new Promise<void>((resolve) => this.#acceptor.close(() => resolve()));
    // Sockets still in a TLS handshake or waiting for a PROXY header have no session yet.
    for (const socket of server._pendingSockets.values()) socket.destroy();
    for (const connection of [...server.connections]) {
      if (!inTransaction(connection)) connection.send(reply.code, reply.text, false);
    }
    const drain = { done: closed, deadlineAt, timer: setTimeout(() => this.#cutAll(), deadlineMs) };
    drain.done = closed.finally(() => {
      clearTimeout(drain.timer);
      clearTimeout(this.#graceTimer);
    });
    this.#drain = drain;
    return drain.done;
  }

  /** The deadline: the 421 to every session left, then the sockets go. */
  #cutAll(): void {
    const server = this as unknown as ServerInternals;
    const reply = this.#drainReply;
    if (reply) for (const connection of [...server.connections]) connection.send(reply.code, reply.text, false);
    this.#graceTimer ??= setTimeout(() => {
      for (const socket of this.#sockets) socket.destroy();
    }, FINAL_REPLY_GRACE_MS);
  }

  /** Whether drain() has begun. */
  get draining(): boolean {
    return this.#drainReply !== undefined;
  }
}

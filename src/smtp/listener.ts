// One SMTP listener of the proxy front end: smtp-server's session hooks translated into engine
// session calls (pipeline/session.ts), and the engine's verdicts and header edits carried back
// into replies and relayed bytes. Owns: the SMTP side (AUTH only over TLS or loopback, trusted
// networks, client identity), in-step proxying (each command answered with the MTA's own reply),
// turning errors into SMTP replies, and which config a transaction runs with across reloads.
// Must not: decide anything about a transaction (the engine does: SPF, recipient policy, signing,
// the decision record), or speak to the MTA other than through the RelaySession contract.

import { BlockList, isIP } from 'node:net';
import type { SMTPServerAddress, SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import type { CredentialStore } from '../auth/credentials.ts';
import { isLoopback, type Config, type ListenerConfig } from '../config/schema.ts';
import { RelayError, Replies, SmtpReplyError, type SmtpReply } from '../errors.ts';
import { editedMessage, type MessageSink } from '../message/index.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { Engine, EngineSession, FrontEnd } from '../pipeline/index.ts';
import type { ClientIdentity, Credentials, MailParameters, RecipientParameters, RelaySession, RelayTarget } from '../relay/types.ts';
import { clientIdentity, sameClient } from './client-identity.ts';
import { closedForEndedSession, deadlineLimitsOf, logClientLeft, logConnectionError, reportClientTimeout } from './client-faults.ts';
import { PromptSMTPServer } from './prompt-server.ts';
import type { TlsMaterial } from './tls.ts';

export interface ListenerDependencies {
  config: Config;
  listener: ListenerConfig;
  relay: RelayTarget;
  /** The transaction engine of this config generation: every decision is its. */
  engine: Engine;
  /** What this listener is to the engine (role, signs, verifies, whether the MTA judges relaying). */
  frontEnd: FrontEnd;
  logger: Logger;
  /** Connections, replies, transactions, SPF results, relay errors and times are counted here. */
  metrics: Metrics;
  /** Required unless listener.tls is absent or mode none. */
  tls?: TlsMaterial;
  /** Local AUTH (listener.auth.credentials); absent: AUTH is passed through to the MTA. */
  credentials?: CredentialStore;
}

interface SessionState {
  /**
   * What this session's current transaction runs with: taken at connect, renewed at each MAIL
   * FROM, so a reload reaches new transactions while an open one finishes with its own.
   */
  deps: ListenerDependencies;
  trusted: boolean;
  /** The socket's peer: XFORWARD/XCLIENT later change session.remoteAddress. */
  peer: string;
  relay?: RelaySession;
  /** The client `relay` was opened for (it serves no other, see #openRelay). */
  relayClient?: ClientIdentity;
  /** The target `relay` was opened with (a reload may change it). */
  relayTarget?: RelayTarget;
  /** The engine's session for this connection (renewed with `deps` after a reload). */
  engine: EngineSession;
  /** Kept in memory (never logged) to authenticate again if the downstream connection drops. */
  credentials?: Credentials;
  /** The user sello itself authenticated (local AUTH); XCLIENT passes it on as LOGIN=. */
  localUser?: string;
  /** A downstream transaction is open (MAIL accepted by the MTA, no data sent yet). */
  transactionOpen: boolean;
  /** The message being received (DATA), disposed when the session closes mid-DATA. */
  sink?: MessageSink;
}

/** An smtp-server callback error that produces exactly `reply` on the wire. */
function replyError(reply: SmtpReply): Error & { responseCode: number } {
  // ENHANCEDSTATUSCODES is hidden from smtp-server (it would derive 5.1.1 from any 550), so
  // the enhanced code is written into the text (RFC 3463, RFC 7372).
  const enhanced = reply.enhanced || (reply.code >= 400 ? `${Math.floor(reply.code / 100)}.0.0` : '');
  return Object.assign(new Error([enhanced, reply.text].filter(Boolean).join(' ')), { responseCode: reply.code });
}

function mailParameters(address: SMTPServerAddress): MailParameters {
  const args = address.args || {};
  const parameters: MailParameters = {};
  if (typeof args.SIZE === 'string' && /^\d+$/.test(args.SIZE)) parameters.size = Number(args.SIZE);
  if (typeof args.BODY === 'string' && ['7BIT', '8BITMIME'].includes(args.BODY.toUpperCase())) {
    parameters.body = args.BODY.toUpperCase() as '7BIT' | '8BITMIME';
  }
  if (args.SMTPUTF8) parameters.smtpUtf8 = true;
  if (typeof args.RET === 'string' && ['FULL', 'HDRS'].includes(args.RET.toUpperCase())) parameters.ret = args.RET.toUpperCase() as 'FULL' | 'HDRS';
  if (typeof args.ENVID === 'string') parameters.envid = args.ENVID;
  return parameters;
}

function recipientParameters(address: SMTPServerAddress): RecipientParameters {
  const args = address.args || {};
  const parameters: RecipientParameters = {};
  if (typeof args.NOTIFY === 'string') parameters.notify = args.NOTIFY.toUpperCase();
  if (typeof args.ORCPT === 'string') parameters.orcpt = args.ORCPT;
  return parameters;
}

/** smtp-server's 100 ms early-talker pause stays where it helps: the Internet-facing mx. */
function greetingDelayOf(listener: ListenerConfig): number {
  return listener.greetingDelay ?? (listener.role === 'mx' ? 100 : 0);
}

/** The reply code an error thrown by a hook becomes (see #toReplyError). */
function replyCodeOf(error: unknown): number {
  if (error instanceof SmtpReplyError || error instanceof RelayError) return error.reply.code;
  return Replies.localError.code;
}

function buildBlockList(networks: readonly string[]): BlockList {
  const list = new BlockList();
  for (const network of networks) {
    const [address = '', prefix] = network.split('/');
    const family = isIP(address) === 6 ? 'ipv6' : 'ipv4';
    if (prefix === undefined) list.addAddress(address, family);
    else list.addSubnet(address, Number(prefix), family);
  }
  return list;
}

function isInNetworks(list: BlockList, address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  const plain = mapped ? (mapped[1] as string) : address;
  const family = isIP(plain);
  return family !== 0 && list.check(plain, family === 4 ? 'ipv4' : 'ipv6');
}

export class Listener {
  readonly name: string;
  /** The current dependencies: replaced by update() on reload. */
  #deps: ListenerDependencies;
  readonly #server: PromptSMTPServer;
  #trustedNetworks: BlockList;
  readonly #sessions = new Map<string, SessionState>();
  readonly #connectionsPerAddress = new Map<string, number>();

  constructor(deps: ListenerDependencies) {
    this.#deps = deps;
    const { listener, config } = deps;
    this.name = listener.name;
    this.#trustedNetworks = buildBlockList(listener.trustedNetworks);
    const tlsMode = listener.tls?.mode ?? 'none';
    this.#server = new PromptSMTPServer(
      {
        name: config.hostname,
        banner: 'sello',
        logger: false,
        secure: tlsMode === 'implicit',
        hideSTARTTLS: tlsMode !== 'starttls',
        ...(deps.tls ? { key: deps.tls.key, cert: deps.tls.cert } : {}),
        // Written into reply texts instead; see replyError().
        hideENHANCEDSTATUSCODES: true,
        // PRODUCT.md §3: DSN parameters (RET, ENVID, NOTIFY, ORCPT) are kept; smtp-server hides
        // the extension by default, so careful clients would not send them.
        hideDSN: false,
        authMethods: ['PLAIN', 'LOGIN'],
        // sello decides per session whether AUTH is offered (onConnect, onSecure) and whether
        // MAIL needs it (onMailFrom), so smtp-server's own checks are relaxed here.
        authOptional: true,
        allowInsecureAuth: true,
        disableReverseLookup: !listener.reverseLookup,
        size: config.limits.maxMessageSize,
        maxClients: config.limits.maxConnections,
        socketTimeout: config.limits.commandTimeout,
        // PRODUCT.md §2: XFORWARD/XCLIENT only on filter listeners and only from the listed peers
        // (the schema refuses them elsewhere); smtp-server answers anyone else 550.
        useXForward: listener.xforwardPeers.length > 0 ? [...listener.xforwardPeers] : false,
        useXClient: listener.xforwardPeers.length > 0 ? [...listener.xforwardPeers] : false,
        onConnect: (session, callback) => this.#onConnect(session, callback),
        onSecure: (_socket, session, callback) => {
          this.#offerAuth(session);
          callback();
        },
        onAuth: (auth, session, callback) => {
          // XCLIENT LOGIN= from a trusted peer (smtp-server checked it): the peer vouches for the
          // forwarded client's login; it is passed on with the client, never checked here.
          if (auth.method === 'XCLIENT') return callback(null, { user: auth.username });
          this.#onAuth({ mechanism: auth.method as 'PLAIN' | 'LOGIN', username: auth.username ?? '', password: auth.password ?? '' }, session).then(
            (user) => callback(null, { user }),
            (error: unknown) => callback(this.#toReplyError(error, session)),
          );
        },
        onMailFrom: (address, session, callback) => this.#hook(session, callback, () => this.#onMailFrom(address, session)),
        onRcptTo: (address, session, callback) => this.#hook(session, callback, () => this.#onRcptTo(address, session)),
        onData: (stream, session, callback) => {
          this.#onData(stream, session).then(
            (text) => callback(null, text),
            (error: unknown) => callback(this.#toReplyError(error, session)),
          );
        },
        onClose: (session) => this.#onClose(session),
      },
      greetingDelayOf(listener),
      // Every reply on the wire, smtp-server's own included, counted by stage and code.
      { onReply: (stage, code) => stage && this.#deps.metrics.reply(this.name, stage, code), onClientTimeout: (expiry) => reportClientTimeout(this.#deps, this.name, expiry) },
    );
    this.#server.deadlineLimits = deadlineLimitsOf(config);
    this.#server.on('error', (error) => logConnectionError(deps.logger, this.name, error));
  }

  /** Starts listening; resolves with the bound address (port 0 in config = any free port). */
  async start(): Promise<{ host: string; port: number }> {
    const { host, port } = this.#deps.listener.listen;
    await new Promise<void>((resolve, reject) => {
      this.#server.server.once('error', reject);
      this.#server.listen(port, host, () => {
        this.#server.server.off('error', reject);
        resolve();
      });
    });
    return this.#boundAddress();
  }

  /**
   * Instead of start(): takes over the listening socket of `previous` (same address), which
   * then only finishes its sessions — no moment without a socket (a reload that rebinds). A
   * failed reload gives it back with previous.takeOver(this).
   */
  takeOver(previous: Listener): { host: string; port: number } {
    this.#server.adoptAcceptor(previous.#server);
    return this.#boundAddress();
  }

  #boundAddress(): { host: string; port: number } {
    const { host, port } = this.#deps.listener.listen;
    const address = this.#server.acceptor.address();
    return { host, port: typeof address === 'object' && address ? address.port : port };
  }

  /**
   * A reloaded config for this listener (same address and TLS mode): new sessions and new
   * transactions use `deps`; transactions already open finish with what they started with.
   */
  update(deps: ListenerDependencies): void {
    const { listener, config } = deps;
    const previousTls = this.#deps.tls;
    this.#deps = deps;
    this.#trustedNetworks = buildBlockList(listener.trustedNetworks);
    // smtp-server reads these per connection or per command, so they apply to what comes next.
    Object.assign(this.#server.options, {
      name: config.hostname,
      size: config.limits.maxMessageSize,
      maxClients: config.limits.maxConnections,
      socketTimeout: config.limits.commandTimeout,
      disableReverseLookup: !listener.reverseLookup,
    });
    this.#server.greetingDelayMs = greetingDelayOf(listener);
    this.#server.deadlineLimits = deadlineLimitsOf(config);
    if (deps.tls && (deps.tls.cert !== previousTls?.cert || deps.tls.key !== previousTls?.key)) {
      // Renewed certificate files: new TLS handshakes use them.
      this.#server.updateSecureContext({ key: deps.tls.key, cert: deps.tls.cert });
    }
  }

  /**
   * Graceful stop (SIGTERM, or a listener a reload removed): no new connections; transactions
   * in progress may finish within `deadlineMs`; every other session gets 421 4.3.2 (RFC 5321
   * §3.8). Resolves when every connection is closed.
   */
  shutdown(deadlineMs: number): Promise<void> {
    const { code, enhanced, text } = Replies.shuttingDown;
    return this.#server.drain(deadlineMs, { code, text: `${enhanced} ${text}` });
  }

  /** Stop now: every session gets the 421 at once. */
  close(): Promise<void> {
    return this.shutdown(0);
  }

  #state(session: SMTPServerSession): SessionState {
    const state = this.#sessions.get(session.id);
    if (!state) throw new Error(`no state for session ${session.id}`);
    return state;
  }

  #onConnect(session: SMTPServerSession, callback: (error?: Error | null) => void): void {
    const address = session.remoteAddress;
    const count = (this.#connectionsPerAddress.get(address) ?? 0) + 1;
    this.#connectionsPerAddress.set(address, count);
    this.#sessions.set(session.id, {
      deps: this.#deps,
      engine: this.#deps.engine.session(this.#deps.frontEnd),
      trusted: this.#isTrusted(address),
      peer: address,
      transactionOpen: false,
    });
    this.#deps.metrics.connectionOpened(this.name);
    if (count > this.#deps.config.limits.maxConnectionsPerIp) {
      return callback(replyError({ code: 421, enhanced: '4.7.0', text: 'Too many connections from your address, try again later' }));
    }
    this.#offerAuth(session);
    callback();
  }

  /**
   * Trusted: a configured network; on a filter listener without one, the MTA it serves, which
   * connects from 127.0.0.1 or ::1 (not the rest of 127.0.0.0/8: a process that binds another
   * loopback address to reach the filter is not the MTA, and must not get mail signed).
   */
  #isTrusted(address: string): boolean {
    if (isInNetworks(this.#trustedNetworks, address)) return true;
    return this.#deps.listener.role === 'filter' && this.#deps.listener.trustedNetworks.length === 0 && ['127.0.0.1', '::1', '::ffff:127.0.0.1'].includes(address);
  }

  /**
   * PRODUCT.md §2: AUTH only on submission, and only over TLS or from loopback, so a password is
   * never sent in clear over a network (RFC 4954 §4, RFC 8314 §3). Not offered → not advertised.
   */
  #offerAuth(session: SMTPServerSession): void {
    const checker = this.#deps.credentials !== undefined || this.#deps.relay.supportsAuth;
    const canAuth = this.#deps.listener.role === 'submission' && checker && (session.secure || isLoopback(session.remoteAddress));
    session.disabledCommands = canAuth ? [] : ['AUTH'];
  }

  async #onAuth(credentials: Credentials, session: SMTPServerSession): Promise<string> {
    const state = this.#state(session);
    const store = state.deps.credentials;
    if (store) {
      // PRODUCT.md §2's alternative: sello checks the password; the MTA is not asked.
      if (!(await store.verify(credentials.username, credentials.password))) {
        this.#deps.logger.info({ session: session.id, listener: this.name, client: session.remoteAddress, user: credentials.username }, 'authentication failed (local credentials)');
        throw new SmtpReplyError(Replies.authFailed);
      }
      state.localUser = credentials.username;
      return credentials.username;
    }
    const relay = await this.#openRelay(session, state);
    // PRODUCT.md §2: the MTA stays the source of truth for users; its verdict is the answer.
    const reply = await relay.authenticate(credentials);
    if (reply.code !== 235) {
      this.#deps.logger.info({ session: session.id, listener: this.name, client: session.remoteAddress, user: credentials.username, reply: reply.code }, 'authentication refused by the MTA');
      throw new SmtpReplyError(reply.code >= 500 ? Replies.authFailed : Replies.authUnavailable);
    }
    state.credentials = credentials;
    return credentials.username;
  }

  async #openRelay(session: SMTPServerSession, state: SessionState): Promise<RelaySession> {
    // Local AUTH: the MTA did not see the login; XCLIENT tells it (LOGIN=, XCLIENT_README).
    const client = state.localUser ? { ...clientIdentity(session), login: state.localUser } : clientIdentity(session);
    if (state.relay && !state.relay.closed) {
      // A downstream session carries one client's identity (PROXY and XCLIENT are per
      // connection). A filter peer that forwards another client now (connection caching) gets
      // a new one, so the MTA never sees mail under the previous client's name.
      // After a reload that changed the target, the next transaction goes to the new one.
      if (state.relayTarget === state.deps.relay && (state.deps.relay.forward === 'none' || sameClient(state.relayClient, client))) return state.relay;
      await state.relay.close();
    }
    state.transactionOpen = false;
    state.relay = await state.deps.relay.open(client);
    // The client left while this was opening: its close hook has run, so close it here.
    if (this.#sessions.get(session.id) !== state) throw await closedForEndedSession(state.relay);
    state.relayTarget = state.deps.relay;
    state.relayClient = client;
    if (state.credentials) {
      // The downstream connection was replaced: the new one must be the same user's.
      const reply = await state.relay.authenticate(state.credentials);
      if (reply.code !== 235) throw new SmtpReplyError(Replies.authUnavailable);
    }
    return state.relay;
  }

  async #onMailFrom(address: SMTPServerAddress, session: SMTPServerSession): Promise<void> {
    const state = this.#state(session);
    // A transaction that never reached DATA ends here (its record is written).
    state.engine.abort();
    if (state.deps !== this.#deps) {
      // A reload since the last transaction: this one runs with the new config, trust included.
      state.deps = this.#deps;
      state.engine = this.#deps.engine.session(this.#deps.frontEnd);
      state.trusted = this.#isTrusted(state.peer);
    }
    const client = clientIdentity(session);
    const verdict = await state.engine.mail(address.address, {
      sessionId: session.id,
      address: client.address,
      // A filter sees the MTA's address unless the MTA forwarded its client (XFORWARD/XCLIENT).
      addressKnown: state.deps.listener.role === 'mx' || client.address !== state.peer,
      helo: client.helo,
      ...(session.user ? { user: String(session.user) } : {}),
      trusted: state.trusted,
    });
    if (verdict.action !== 'accept') throw new SmtpReplyError(verdict.reply);
    try {
      const relay = await this.#openRelay(session, state);
      if (state.transactionOpen) {
        // The client reset (RSET) or restarted its transaction; do the same downstream.
        await relay.reset();
        state.transactionOpen = false;
      }
      const reply = await relay.mailFrom(address.address, mailParameters(address));
      if (reply.code >= 300) throw new SmtpReplyError(reply);
    } catch (error) {
      // The MTA did not take the transaction: it never started (no record).
      state.engine.discard();
      throw error;
    }
    state.transactionOpen = true;
  }

  async #onRcptTo(address: SMTPServerAddress, session: SMTPServerSession): Promise<void> {
    const state = this.#state(session);
    const verdict = await state.engine.rcpt(address.address);
    if (verdict.action !== 'accept') throw new SmtpReplyError(verdict.reply);
    try {
      if (!state.relay || state.relay.closed || !state.transactionOpen) throw new RelayError('protocol', 'downstream transaction is gone');
      // In step: the MTA's own reply for this recipient is the client's reply (PRODUCT.md §3).
      const reply = await state.relay.rcptTo(address.address, recipientParameters(address));
      if (reply.code >= 300) throw new SmtpReplyError(reply);
    } catch (error) {
      state.engine.recipientRefused(replyCodeOf(error));
      throw error;
    }
  }

  /**
   * DATA streams into the engine's sink (bounded memory: the body spills to a file past
   * data.spillThreshold, an oversized message is only counted) and from there to the MTA with the
   * engine's header edits; the sink and its file are gone on every path.
   */
  async #onData(stream: SMTPServerDataStream, session: SMTPServerSession): Promise<string> {
    const state = this.#state(session);
    const sink = state.engine.receive();
    state.sink = sink;
    try {
      // A sink that cannot take more (a spill write failed) lets the rest of DATA pass unkept.
      let failure: unknown;
      try {
        for await (const chunk of stream) {
          if (failure === undefined) await sink.write(chunk as Buffer).catch((error: unknown) => (failure = error));
        }
      } catch (error) {
        // smtp-server ends the stream with ECONNECTION when the client leaves mid-DATA: the
        // client's doing, not sello's fault. Nothing is relayed; the close records the
        // transaction as abandoned (engine.abort()).
        if ((error as NodeJS.ErrnoException).code === 'ECONNECTION') throw new SmtpReplyError(Replies.connectionLost, 'the client left during DATA');
        throw error;
      }
      return await this.#relayMessage(stream, state, sink, failure);
    } finally {
      await sink.dispose();
      if (state.sink === sink) state.sink = undefined;
    }
  }

  async #relayMessage(stream: SMTPServerDataStream, state: SessionState, sink: MessageSink, receiveFailure: unknown): Promise<string> {
    const engine = state.engine;
    let report: { relay: string; code: number; queueId?: string; recipients?: unknown; relayMs?: number } | undefined;
    try {
      if (receiveFailure !== undefined) throw receiveFailure;
      if (stream.sizeExceeded) throw new SmtpReplyError(Replies.messageTooLarge);
      if (!state.relay || state.relay.closed || !state.transactionOpen) throw new RelayError('protocol', 'downstream transaction is gone');
      const verdict = await engine.end(sink);
      if (verdict.action !== 'accept') {
        // The engine wrote the record; refusing after DATA aborts the downstream transaction.
        await this.#abortDownstream(state);
        throw new SmtpReplyError(verdict.reply);
      }
      const relayStarted = performance.now();
      const reply = await state.relay.data(editedMessage(verdict.message, verdict.edits));
      state.transactionOpen = false;
      report = {
        relay: state.deps.relay.description,
        code: reply.code,
        ...(reply.queueId ? { queueId: reply.queueId } : {}),
        ...(reply.recipientReplies ? { recipients: reply.recipientReplies } : {}),
        relayMs: performance.now() - relayStarted,
      };
      if (reply.code !== 250) throw new SmtpReplyError(reply);
      // PRODUCT.md §3: 250 only now, after the MTA's 250 for the same bytes.
      engine.delivered(report);
      return `2.0.0 OK${reply.queueId ? `: queued as ${reply.queueId}` : ''}`;
    } catch (error) {
      const reply = error instanceof SmtpReplyError || error instanceof RelayError ? error.reply : Replies.localError;
      engine.failed(reply, error instanceof Error ? error.message : String(error), report);
      await this.#abortDownstream(state);
      throw error;
    }
  }

  /** Refusing after DATA aborts the downstream transaction: the final dot is never sent. */
  async #abortDownstream(state: SessionState): Promise<void> {
    if (state.transactionOpen && state.relay && !state.relay.closed) await state.relay.reset().catch(() => undefined);
    state.transactionOpen = false;
  }

  #onClose(session: SMTPServerSession): void {
    const state = this.#sessions.get(session.id);
    this.#sessions.delete(session.id);
    const peer = state?.peer ?? session.remoteAddress;
    const count = (this.#connectionsPerAddress.get(peer) ?? 1) - 1;
    if (count > 0) this.#connectionsPerAddress.set(peer, count);
    else this.#connectionsPerAddress.delete(peer);
    // QUIT without a final dot: an unfinished transaction is abandoned downstream too.
    void state?.relay?.close();
    // A client gone mid-DATA: its message and spill file go now.
    void state?.sink?.dispose();
    if (state) {
      state.engine.abort();
      state.deps.metrics.connectionClosed(this.name);
    }
  }

  #hook(session: SMTPServerSession, callback: (error?: Error | null) => void, work: () => Promise<void>): void {
    work().then(
      () => callback(),
      (error: unknown) => callback(this.#toReplyError(error, session)),
    );
  }

  /** The one place errors become client replies; internals stay in the log, not on the wire. */
  #toReplyError(error: unknown, session: SMTPServerSession): Error {
    if (error instanceof SmtpReplyError) return replyError(error.reply);
    const state = this.#sessions.get(session.id);
    const deps = state?.deps ?? this.#deps;
    // The client left during the command and its close cut the downstream session: no relay fault.
    if (!state && error instanceof RelayError) return logClientLeft(deps.logger, this.name, session.id, error);
    if (error instanceof RelayError) {
      deps.metrics.relayError(deps.relay.description, error.kind);
      deps.logger.warn({ session: session.id, listener: this.name, kind: error.kind, err: error.message }, 'relay error');
      if (state?.relay) {
        void state.relay.close();
        state.relay = undefined;
        state.transactionOpen = false;
      }
      return replyError(error.reply);
    }
    deps.logger.error({ session: session.id, listener: this.name, err: error }, 'unexpected error');
    return replyError(Replies.localError);
  }
}

// One SMTP listener: the smtp-server session hooks of a submission or filter listener.
// Owns: who may do what on a listener (AUTH only over TLS or loopback, trusted networks, the
// role's rules), in-step proxying (each command answered with the MTA's own reply), turning
// errors into SMTP replies, the decision record of each transaction and its metrics, and which
// config a transaction runs with across reloads. Must not: sign or inspect messages itself
// (pipeline/ does), or speak to the MTA other than through the RelaySession contract.

import { BlockList, isIP } from 'node:net';
import type { SMTPServerAddress, SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import type { CredentialStore } from '../auth/credentials.ts';
import { isLoopback, type Config, type ListenerConfig } from '../config/schema.ts';
import { RelayError, Replies, SmtpReplyError, type SmtpReply } from '../errors.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics, TransactionOutcome } from '../observability/metrics.ts';
import type { InboundChecks, SpfEvaluation } from '../pipeline/inbound.ts';
import { isExemptRecipient, spfDecision } from '../pipeline/policy.ts';
import type { ArcSealOutcome, MessagePipeline } from '../pipeline/transaction.ts';
import { mtaSeesRealClient } from '../relay/forwarding.ts';
import type { ClientIdentity, Credentials, MailParameters, RecipientParameters, RelaySession, RelayTarget } from '../relay/types.ts';
import type { SignatureMade } from '../signing/signer.ts';
import { clientIdentity, sameClient } from './client-identity.ts';
import { closedForEndedSession, deadlineLimitsOf, logClientLeft, logConnectionError, reportClientTimeout } from './client-faults.ts';
import { receiveMessage } from './data-sink.ts';
import { PromptSMTPServer } from './prompt-server.ts';
import type { TlsMaterial } from './tls.ts';

export interface ListenerDependencies {
  config: Config;
  listener: ListenerConfig;
  relay: RelayTarget;
  pipeline: MessagePipeline;
  /** The mx role's SPF evaluation (at MAIL FROM). */
  inbound: InboundChecks;
  logger: Logger;
  /** Connections, replies, transactions, SPF results, relay errors and times are counted here. */
  metrics: Metrics;
  /** Required unless listener.tls is absent or mode none. */
  tls?: TlsMaterial;
  /** Local AUTH (listener.auth.credentials); absent: AUTH is passed through to the MTA. */
  credentials?: CredentialStore;
}

/**
 * The decision record: exactly one log record per transaction (PRODUCT.md §7), written when it
 * ends — after the reply to DATA, or, for one that never got there (recipients refused, RSET,
 * QUIT), at the next MAIL FROM or when the connection closes. Never a password or message text.
 */
interface TransactionRecord {
  session: string;
  listener: string;
  client: string;
  user?: unknown;
  from: string;
  /** Recipients the MTA accepted, and the reply codes of those refused. */
  recipients: number;
  refusedRecipients: number[];
  spf?: { result: string; identity: string; domain: string; action: string };
  dkim?: { domain: string; selector: string; result: string }[];
  dmarc?: string;
  arc?: string;
  /** inbound.arc.seal: the set added (instance, cv), or why none was. */
  arcSeal?: ArcSealOutcome;
  size?: number;
  /** Signatures made, or why none. */
  signatures?: SignatureMade[];
  unsigned?: string;
  relay?: { relay: string; code: number; queueId?: string; recipients?: unknown };
  outcome?: TransactionOutcome | 'abandoned';
  error?: string;
  durations: { totalMs?: number; spfMs?: number; signingMs?: number; relayMs?: number };
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
  /** The open transaction's decision record. */
  record?: TransactionRecord;
  /** Kept in memory (never logged) to authenticate again if the downstream connection drops. */
  credentials?: Credentials;
  /** The user sello itself authenticated (local AUTH); XCLIENT passes it on as LOGIN=. */
  localUser?: string;
  transactionOpen: boolean;
  transactionStarted: number;
  /** mx: this transaction's SPF evaluation (once, at MAIL FROM). */
  spf?: SpfEvaluation;
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
        onRcptTo: (address, session, callback) =>
          this.#hook(session, callback, () =>
            this.#onRcptTo(address, session).catch((error: unknown) => {
              this.#sessions.get(session.id)?.record?.refusedRecipients.push(replyCodeOf(error));
              throw error;
            }),
          ),
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
    this.#sessions.set(session.id, { deps: this.#deps, trusted: this.#isTrusted(address), peer: address, transactionOpen: false, transactionStarted: 0 });
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

  /**
   * Whether this transaction gets the inbound checks: mx for clients outside trustedNetworks
   * (PRODUCT.md §5), and a filter with verify: true for whatever its trusted MTA passes on.
   */
  #inspects(state: SessionState): boolean {
    const { listener } = state.deps;
    return listener.role === 'mx' ? !state.trusted : listener.role === 'filter' && listener.verify === true;
  }

  async #onMailFrom(address: SMTPServerAddress, session: SMTPServerSession): Promise<void> {
    const state = this.#state(session);
    // A transaction that never reached DATA ends here (its record is written).
    this.#endWithoutData(state);
    if (state.deps !== this.#deps) {
      // A reload since the last transaction: this one runs with the new config, trust included.
      state.deps = this.#deps;
      state.trusted = this.#isTrusted(state.peer);
    }
    const deps = state.deps;
    if (deps.listener.role === 'submission' && !session.user && !state.trusted) {
      // No signing oracle: nothing from an unauthenticated, untrusted client is ever signed.
      throw new SmtpReplyError(Replies.authRequired);
    }
    if (deps.listener.role === 'filter' && !state.trusted) throw new SmtpReplyError(Replies.relayDenied);
    state.spf = undefined;
    const started = performance.now();
    const client = clientIdentity(session);
    // A filter sees the MTA's address unless the MTA forwarded its client (XFORWARD/XCLIENT):
    // SPF on the MTA itself would be meaningless, so it is left out (DKIM, DMARC, ARC still run).
    const clientKnown = deps.listener.role === 'mx' || client.address !== state.peer;
    if (this.#inspects(state) && clientKnown) {
      // Evaluated once per transaction here; enforced per recipient at RCPT TO (exemptions).
      state.spf = await deps.inbound.evaluateSpf(client.address, address.address, client.helo);
      for (const outcome of state.spf.all) deps.metrics.spfDuration(outcome.durationMs / 1000);
      const { decisive } = state.spf;
      deps.metrics.spfResult(decisive.identity, decisive.result, spfDecision(decisive, deps.config.inbound.spf).action);
    }
    const relay = await this.#openRelay(session, state);
    if (state.transactionOpen) {
      // The client reset (RSET) or restarted its transaction; do the same downstream.
      await relay.reset();
      state.transactionOpen = false;
    }
    const reply = await relay.mailFrom(address.address, mailParameters(address));
    if (reply.code >= 300) throw new SmtpReplyError(reply);
    state.transactionOpen = true;
    state.transactionStarted = started;
    const spf = state.spf;
    state.record = {
      session: session.id,
      listener: this.name,
      client: session.remoteAddress,
      ...(session.user ? { user: session.user } : {}),
      from: address.address,
      recipients: 0,
      refusedRecipients: [],
      ...(spf
        ? {
            spf: { result: spf.decisive.result, identity: spf.decisive.identity, domain: spf.decisive.domain, action: spfDecision(spf.decisive, deps.config.inbound.spf).action },
          }
        : {}),
      durations: spf ? { spfMs: Math.round(spf.all.reduce((total, outcome) => total + outcome.durationMs, 0)) } : {},
    };
  }

  async #onRcptTo(address: SMTPServerAddress, session: SMTPServerSession): Promise<void> {
    const state = this.#state(session);
    if (session.envelope.rcptTo.length >= state.deps.config.limits.maxRecipients) {
      // RFC 5321 §4.5.3.1.10: 452 for too many recipients; the client sends the rest later.
      throw new SmtpReplyError({ code: 452, enhanced: '4.5.3', text: 'Too many recipients' });
    }
    if (this.#inspects(state)) this.#checkInboundRecipient(address.address, state);
    if (!state.relay || state.relay.closed || !state.transactionOpen) throw new RelayError('protocol', 'downstream transaction is gone');
    // In step: the MTA's own reply for this recipient is the client's reply (PRODUCT.md §3).
    const reply = await state.relay.rcptTo(address.address, recipientParameters(address));
    if (reply.code >= 300) throw new SmtpReplyError(reply);
    if (state.record) state.record.recipients++;
  }

  /** mx: no open relay, then the SPF policy (postmaster@/abuse@ exempt). Throws the refusal. */
  #checkInboundRecipient(recipient: string, state: SessionState): void {
    const domain = recipient.slice(recipient.lastIndexOf('@') + 1).toLowerCase();
    const { config, relay } = state.deps;
    const local = config.inbound.localDomains.some((pattern) =>
      pattern.startsWith('*.') ? domain.endsWith(pattern.slice(1)) : domain === pattern,
    );
    // Every connection reaches the MTA from 127.0.0.1, so the MTA cannot tell the Internet from
    // itself: sello refuses to relay (PRODUCT.md §3) unless this listener's relay makes the MTA
    // judge the real client (XCLIENT, PROXY; XFORWARD only changes the MTA's logs). A filter's
    // MTA applied its own relay rules before it handed the recipient on.
    if (state.deps.listener.role === 'mx' && !local && !mtaSeesRealClient(relay.forward)) throw new SmtpReplyError(Replies.relayDenied);
    if (!state.spf || isExemptRecipient(recipient, config.inbound.exemptRecipients)) return;
    const decision = spfDecision(state.spf.decisive, config.inbound.spf);
    if (decision.reply) throw new SmtpReplyError(decision.reply);
  }

  async #onData(stream: SMTPServerDataStream, session: SMTPServerSession): Promise<string> {
    const state = this.#state(session);
    const deps = state.deps;
    const message = await receiveMessage(stream);
    const record: TransactionRecord = state.record ?? {
      session: session.id,
      listener: this.name,
      client: session.remoteAddress,
      from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
      recipients: 0,
      refusedRecipients: [],
      durations: {},
    };
    state.record = undefined;
    record.recipients = session.envelope.rcptTo.length;
    let outcome: TransactionOutcome = 'deferred';
    try {
      if (stream.sizeExceeded) throw new SmtpReplyError(Replies.messageTooLarge);
      if (!state.relay || state.relay.closed || !state.transactionOpen) throw new RelayError('protocol', 'downstream transaction is gone');
      const role = deps.listener.role;
      const prepared = await deps.pipeline.process(message, {
        role,
        signs: role === 'submission' || (role === 'filter' && deps.listener.sign !== false),
        ...(this.#inspects(state) ? { check: { clientIp: clientIdentity(session).address, spf: state.spf } } : {}),
      });
      if (prepared.inbound) {
        record.dkim = prepared.inbound.dkim?.signatures.map(({ domain, selector, result }) => ({ domain, selector, result }));
        if (prepared.inbound.dmarc) record.dmarc = prepared.inbound.dmarc.result;
        if (prepared.inbound.arc) record.arc = prepared.inbound.arc.result;
      }
      if (prepared.arcSeal) {
        record.arcSeal = prepared.arcSeal;
        if (prepared.arcSeal.result === 'failed') {
          deps.logger.warn({ session: session.id, listener: this.name, err: prepared.arcSeal.reason }, 'ARC sealing failed: the message is relayed unsealed');
        }
      }
      record.size = prepared.size;
      if (prepared.signing.signed) {
        record.signatures = prepared.signing.signatures;
        record.durations.signingMs = Math.round((prepared.signingMs ?? 0) * 1000) / 1000;
      } else {
        record.unsigned = prepared.signing.reason;
      }
      const relayStarted = performance.now();
      const reply = await state.relay.data(prepared.chunks);
      const relayMs = performance.now() - relayStarted;
      deps.metrics.relayDuration(deps.relay.description, relayMs / 1000);
      record.durations.relayMs = Math.round(relayMs);
      state.transactionOpen = false;
      // LMTP folds per-recipient replies into one; the log keeps each (a partial failure means a retry).
      record.relay = {
        relay: deps.relay.description,
        code: reply.code,
        ...(reply.queueId ? { queueId: reply.queueId } : {}),
        ...(reply.recipientReplies ? { recipients: reply.recipientReplies } : {}),
      };
      if (reply.code !== 250) throw new SmtpReplyError(reply);
      // PRODUCT.md §3: 250 only now, after the MTA's 250 for the same bytes.
      outcome = 'relayed';
      if (!prepared.signing.signed) deps.metrics.unsigned(this.name, prepared.signing.reason);
      return `2.0.0 OK${reply.queueId ? `: queued as ${reply.queueId}` : ''}`;
    } catch (error) {
      outcome = replyCodeOf(error) >= 500 ? 'rejected' : 'deferred';
      record.error = error instanceof Error ? error.message : String(error);
      if (state.transactionOpen && state.relay && !state.relay.closed) {
        // Refusing after DATA aborts the downstream transaction: the final dot is never sent.
        await state.relay.reset().catch(() => undefined);
      }
      state.transactionOpen = false;
      throw error;
    } finally {
      const totalMs = performance.now() - state.transactionStarted;
      record.outcome = outcome;
      record.durations.totalMs = Math.round(totalMs);
      deps.metrics.transaction(this.name, outcome, totalMs / 1000);
      deps.logger.info(record, 'transaction');
    }
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
    if (state) {
      this.#endWithoutData(state);
      state.deps.metrics.connectionClosed(this.name);
    }
  }

  /**
   * Writes the record of a transaction that ended before DATA. Its outcome is what the client
   * was told: every recipient refused → rejected (a 5xx among them) or deferred; else abandoned.
   */
  #endWithoutData(state: SessionState): void {
    const record = state.record;
    if (!record) return;
    state.record = undefined;
    const refused = record.refusedRecipients;
    record.outcome = record.recipients === 0 && refused.length > 0 ? (refused.some((code) => code >= 500) ? 'rejected' : 'deferred') : 'abandoned';
    record.durations.totalMs = Math.round(performance.now() - state.transactionStarted);
    state.deps.logger.info(record, 'transaction');
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

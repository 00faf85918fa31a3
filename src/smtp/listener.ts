// One SMTP listener: the smtp-server session hooks of a submission or filter listener.
// Owns: who may do what on a listener (AUTH only over TLS or loopback, trusted networks, the
// role's rules), in-step proxying (each command answered with the MTA's own reply), and turning
// errors into SMTP replies. Must not: sign or inspect messages itself (pipeline/ does), or speak
// to the MTA other than through the RelaySession contract.

import { BlockList, isIP } from 'node:net';
import type { SMTPServerAddress, SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import { isLoopback, type Config, type ListenerConfig } from '../config/schema.ts';
import { RelayError, Replies, SmtpReplyError, type SmtpReply } from '../errors.ts';
import type { Logger } from '../observability/logger.ts';
import type { InboundChecks, SpfEvaluation } from '../pipeline/inbound.ts';
import { isExemptRecipient, spfDecision } from '../pipeline/policy.ts';
import type { MessagePipeline } from '../pipeline/transaction.ts';
import type { Credentials, MailParameters, RecipientParameters, RelaySession, RelayTarget } from '../relay/types.ts';
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
  /** Required unless listener.tls is absent or mode none. */
  tls?: TlsMaterial;
}

interface SessionState {
  trusted: boolean;
  relay?: RelaySession;
  /** Kept in memory (never logged) to authenticate again if the downstream connection drops. */
  credentials?: Credentials;
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
  readonly #deps: ListenerDependencies;
  readonly #server: PromptSMTPServer;
  readonly #trustedNetworks: BlockList;
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
        authMethods: ['PLAIN', 'LOGIN'],
        // sello decides per session whether AUTH is offered (onConnect, onSecure) and whether
        // MAIL needs it (onMailFrom), so smtp-server's own checks are relaxed here.
        authOptional: true,
        allowInsecureAuth: true,
        disableReverseLookup: !listener.reverseLookup,
        size: config.limits.maxMessageSize,
        maxClients: config.limits.maxConnections,
        socketTimeout: config.limits.commandTimeout,
        onConnect: (session, callback) => this.#onConnect(session, callback),
        onSecure: (_socket, session, callback) => {
          this.#offerAuth(session);
          callback();
        },
        onAuth: (auth, session, callback) => {
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
      // smtp-server's 100 ms early-talker pause stays where it helps: the Internet-facing mx.
      listener.greetingDelay ?? (listener.role === 'mx' ? 100 : 0),
    );
    this.#server.on('error', (error) => deps.logger.warn({ listener: this.name, err: error }, 'smtp connection error'));
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
    const address = this.#server.server.address();
    return { host, port: typeof address === 'object' && address ? address.port : port };
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
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
    this.#sessions.set(session.id, { trusted: this.#isTrusted(address), transactionOpen: false, transactionStarted: 0 });
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
    const canAuth =
      this.#deps.listener.role === 'submission' && this.#deps.relay.supportsAuth && (session.secure || isLoopback(session.remoteAddress));
    session.disabledCommands = canAuth ? [] : ['AUTH'];
  }

  async #onAuth(credentials: Credentials, session: SMTPServerSession): Promise<string> {
    const state = this.#state(session);
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
    if (state.relay && !state.relay.closed) return state.relay;
    state.transactionOpen = false;
    state.relay = await this.#deps.relay.open({
      address: session.remoteAddress,
      port: session.remotePort,
      helo: session.hostNameAppearsAs || '',
      protocol: session.openingCommand === 'HELO' ? 'SMTP' : 'ESMTP',
    });
    if (state.credentials) {
      // The downstream connection was replaced: the new one must be the same user's.
      const reply = await state.relay.authenticate(state.credentials);
      if (reply.code !== 235) throw new SmtpReplyError(Replies.authUnavailable);
    }
    return state.relay;
  }

  async #onMailFrom(address: SMTPServerAddress, session: SMTPServerSession): Promise<void> {
    const state = this.#state(session);
    if (this.#deps.listener.role === 'submission' && !session.user && !state.trusted) {
      // No signing oracle: nothing from an unauthenticated, untrusted client is ever signed.
      throw new SmtpReplyError(Replies.authRequired);
    }
    if (this.#deps.listener.role === 'filter' && !state.trusted) throw new SmtpReplyError(Replies.relayDenied);
    state.spf = undefined;
    if (this.#deps.listener.role === 'mx' && !state.trusted) {
      // Evaluated once per transaction here; enforced per recipient at RCPT TO (exemptions).
      state.spf = await this.#deps.inbound.evaluateSpf(session.remoteAddress, address.address, session.hostNameAppearsAs || '');
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
    state.transactionStarted = performance.now();
  }

  async #onRcptTo(address: SMTPServerAddress, session: SMTPServerSession): Promise<void> {
    const state = this.#state(session);
    if (session.envelope.rcptTo.length >= this.#deps.config.limits.maxRecipients) {
      // RFC 5321 §4.5.3.1.10: 452 for too many recipients; the client sends the rest later.
      throw new SmtpReplyError({ code: 452, enhanced: '4.5.3', text: 'Too many recipients' });
    }
    if (this.#deps.listener.role === 'mx' && !state.trusted) this.#checkInboundRecipient(address.address, state);
    if (!state.relay || state.relay.closed || !state.transactionOpen) throw new RelayError('protocol', 'downstream transaction is gone');
    // In step: the MTA's own reply for this recipient is the client's reply (PRODUCT.md §3).
    const reply = await state.relay.rcptTo(address.address, recipientParameters(address));
    if (reply.code >= 300) throw new SmtpReplyError(reply);
  }

  /** mx: no open relay, then the SPF policy (postmaster@/abuse@ exempt). Throws the refusal. */
  #checkInboundRecipient(recipient: string, state: SessionState): void {
    const domain = recipient.slice(recipient.lastIndexOf('@') + 1).toLowerCase();
    const local = this.#deps.config.inbound.localDomains.some((pattern) =>
      pattern.startsWith('*.') ? domain.endsWith(pattern.slice(1)) : domain === pattern,
    );
    // Every connection reaches the MTA from 127.0.0.1, so the MTA cannot tell the Internet from
    // itself: sello refuses to relay (PRODUCT.md §3) until the MTA learns the real client.
    if (!local) throw new SmtpReplyError(Replies.relayDenied);
    if (!state.spf || isExemptRecipient(recipient, this.#deps.config.inbound.exemptRecipients)) return;
    const decision = spfDecision(state.spf.decisive, this.#deps.config.inbound.spf);
    if (decision.reply) throw new SmtpReplyError(decision.reply);
  }

  async #onData(stream: SMTPServerDataStream, session: SMTPServerSession): Promise<string> {
    const state = this.#state(session);
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    const record: Record<string, unknown> = {
      session: session.id,
      listener: this.name,
      client: session.remoteAddress,
      user: session.user,
      from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
      recipients: session.envelope.rcptTo.length,
    };
    try {
      if (stream.sizeExceeded) throw new SmtpReplyError(Replies.messageTooLarge);
      if (!state.relay || state.relay.closed || !state.transactionOpen) throw new RelayError('protocol', 'downstream transaction is gone');
      const role = this.#deps.listener.role;
      const prepared = await this.#deps.pipeline.process(Buffer.concat(chunks), {
        role,
        signs: role === 'submission' || (role === 'filter' && this.#deps.listener.sign !== false),
        ...(role === 'mx' && !state.trusted ? { check: { clientIp: session.remoteAddress, spf: state.spf } } : {}),
      });
      if (state.spf) record.spf = { result: state.spf.decisive.result, identity: state.spf.decisive.identity, domain: state.spf.decisive.domain };
      if (prepared.inbound) {
        record.dkim = prepared.inbound.dkim?.signatures.map(({ domain, selector, result }) => ({ domain, selector, result }));
        record.dmarc = prepared.inbound.dmarc?.result;
      }
      record.size = prepared.size;
      record.signing = prepared.signing;
      const reply = await state.relay.data(prepared.chunks);
      state.transactionOpen = false;
      // LMTP folds per-recipient replies into one; the log keeps each (a partial failure means a retry).
      record.relay = { code: reply.code, queueId: reply.queueId, ...(reply.recipientReplies ? { recipients: reply.recipientReplies } : {}) };
      if (reply.code !== 250) throw new SmtpReplyError(reply);
      // PRODUCT.md §3: 250 only now, after the MTA's 250 for the same bytes.
      record.outcome = 'relayed';
      return `2.0.0 OK${reply.queueId ? `: queued as ${reply.queueId}` : ''}`;
    } catch (error) {
      record.outcome = 'refused';
      record.error = error instanceof Error ? error.message : String(error);
      if (state.transactionOpen && state.relay && !state.relay.closed) {
        // Refusing after DATA aborts the downstream transaction: the final dot is never sent.
        await state.relay.reset().catch(() => undefined);
      }
      state.transactionOpen = false;
      throw error;
    } finally {
      record.durationMs = Math.round(performance.now() - state.transactionStarted);
      this.#deps.logger.info(record, 'transaction');
    }
  }

  #onClose(session: SMTPServerSession): void {
    const state = this.#sessions.get(session.id);
    this.#sessions.delete(session.id);
    const count = (this.#connectionsPerAddress.get(session.remoteAddress) ?? 1) - 1;
    if (count > 0) this.#connectionsPerAddress.set(session.remoteAddress, count);
    else this.#connectionsPerAddress.delete(session.remoteAddress);
    // QUIT without a final dot: an unfinished transaction is abandoned downstream too.
    void state?.relay?.close();
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
    if (error instanceof RelayError) {
      this.#deps.logger.warn({ session: session.id, listener: this.name, kind: error.kind, err: error.message }, 'relay error');
      if (state?.relay) {
        void state.relay.close();
        state.relay = undefined;
        state.transactionOpen = false;
      }
      return replyError(error.reply);
    }
    this.#deps.logger.error({ session: session.id, listener: this.name, err: error }, 'unexpected error');
    return replyError(Replies.localError);
  }
}

// One downstream SMTP or LMTP client connection, driven in step with the client's session:
// each verb sends one command and resolves with the server's own reply (RFC 5321 §4.2).
// Owns: connect/greeting/EHLO/LHLO/STARTTLS, AUTH passthrough, envelope parameters, DATA
// transparency, timeouts, and turning socket failures into RelayError.
// Must not: decide policy, log, queue or retry, or ever put a password into an error message.

import net from 'node:net';
import tls from 'node:tls';
import { RelayError, Replies, SmtpReplyError, formatReply, reply, type RelayErrorKind, type SmtpReply } from '../errors.ts';
import { BareLineEndingScanner, DotStuffer, findBareLineEnding } from './dot-stuffing.ts';
import {
  foldLmtpReplies,
  noCapabilities,
  parseCapabilities,
  toDataReply,
  toSmtpReply,
  type Capabilities,
  type WireReply,
} from './smtp-reply.ts';
import type { Credentials, DataReply, MailParameters, MessageBody, RecipientParameters, RecipientReply, RelaySession } from './types.ts';

export type StartTlsPolicy = 'never' | 'opportunistic' | 'required';

export interface SmtpClientOptions {
  readonly host: string;
  readonly port: number;
  /** LMTP (RFC 2033) says LHLO and answers the final dot once per recipient. */
  readonly protocol: 'smtp' | 'lmtp';
  readonly helo: string;
  readonly starttls: StartTlsPolicy;
  /**
   * Verify the server certificate after STARTTLS. Default in config is false: the MTA usually
   * listens on loopback with Debian's snakeoil certificate, and the link is local anyway.
   */
  readonly tlsRejectUnauthorized: boolean;
  readonly timeouts: { readonly connectMs: number; readonly commandMs: number; readonly dataMs: number };
  /**
   * Bytes written as soon as the connection is up, before the greeting is read: a PROXY
   * protocol header (forwarding.ts). The server sends its greeting only after reading it.
   */
  readonly proxyHeader?: Buffer;
}


/** Longest reply line accepted (RFC 5321 §4.5.3.1.5 allows 512; servers send longer text). */
const maxReplyLineBytes = 16 * 1024;
/** Most lines in one reply (a long EHLO list is ~30). */
const maxReplyLines = 256;
/** QUIT is a courtesy: never wait long for its reply. */
const quitTimeoutMs = 2000;

interface ReplyWaiter {
  resolve(wire: WireReply): void;
  reject(error: RelayError): void;
}

export class SmtpClient implements RelaySession {
  readonly options: SmtpClientOptions;
  /** "host:port" for error messages ([v6]:port for IPv6). */
  readonly address: string;
  private socket: net.Socket | undefined;
  private greeted = false;
  private secure = false;
  private serverCapabilities: Capabilities = noCapabilities;
  /**
   * Why the session is over. A normal close (QUIT) stores only how to build its error, so the
   * everyday path builds no Error (and no stack trace); `failure` builds it when someone asks.
   */
  private ending: RelayError | (() => RelayError) | undefined;
  private inbound: Buffer = Buffer.alloc(0);
  private partialReplyCode = 0;
  private partialReplyLines: string[] = [];
  private readonly unreadReplies: WireReply[] = [];
  private replyWaiter: ReplyWaiter | undefined;
  private readonly failureListeners = new Set<(error: RelayError) => void>();
  private commandInProgress = false;
  /** close() is saying QUIT: the session is ending, whatever asks for it now. */
  private quitting = false;
  private acceptedRecipients: string[] = [];
  private xforwardLines: readonly string[] = [];

  private readonly onSocketData = (chunk: Buffer) => this.consume(chunk);
  /** The server hung up or the connection broke (not a timeout, a refusal or our own close). */
  private dropped = false;

  private readonly onSocketError = (error: Error) => {
    if (this.ending) return; // already over: this is the echo of our own close
    this.dropped = true;
    this.fail(this.brokenConnection(`connection to ${this.address} failed: ${errorDescription(error)}`, error));
  };
  private readonly onSocketClose = () => {
    if (this.ending) return; // already over: this is the echo of our own close
    this.dropped = true;
    this.fail(this.brokenConnection(`connection closed by ${this.address}`));
  };

  constructor(options: SmtpClientOptions) {
    this.options = options;
    this.address = net.isIPv6(options.host) ? `[${options.host}]:${options.port}` : `${options.host}:${options.port}`;
  }

  /** Connects and reads the greeting: enough for a probe (then close()). */
  static async connect(options: SmtpClientOptions): Promise<SmtpClient> {
    const client = new SmtpClient(options);
    await client.connectSocket();
    // A failed write has already failed (and closed) the session.
    if (options.proxyHeader) await client.write(options.proxyHeader, 'PROXY header');
    await client.readGreeting();
    return client;
  }

  /** Connects, greets, EHLO/LHLO, and STARTTLS (then EHLO again) as the policy says. */
  static async open(options: SmtpClientOptions): Promise<SmtpClient> {
    const client = await SmtpClient.connect(options);
    try {
      await client.hello();
      await client.startTlsAsConfigured();
      return client;
    } catch (error) {
      await client.close();
      throw error;
    }
  }

  /** What the server advertised in its last EHLO/LHLO reply (after STARTTLS: the new one). */
  get capabilities(): Capabilities {
    return this.serverCapabilities;
  }

  /** True once STARTTLS succeeded. */
  get tlsActive(): boolean {
    return this.secure;
  }

  get closed(): boolean {
    return this.ending !== undefined;
  }

  /** The error that ended the session (built now if the session ended normally), or undefined. */
  private get failure(): RelayError | undefined {
    if (typeof this.ending === 'function') this.ending = this.ending();
    return this.ending;
  }

  /** True when the session ended because the server closed the connection or it broke. */
  get droppedByServer(): boolean {
    return this.dropped;
  }

  /**
   * Bytes or replies the server sent that no command asked for. An idle pooled connection with
   * any is out of step (a 421 before the server hangs up, say) and must not be used again.
   */
  get hasUnsolicitedInput(): boolean {
    return this.inbound.length > 0 || this.unreadReplies.length > 0 || this.partialReplyLines.length > 0;
  }

  // ── Client identity (forwarding.ts builds the lines; smtp-target.ts decides) ──────────────

  /**
   * XCLIENT (Postfix XCLIENT_README): each line must be answered 220 with a new greeting, after
   * which the server is back at the start of the session: EHLO/LHLO again, and its reply's
   * capabilities replace the old ones (AUTH passthrough happens after this, on the new session).
   * Anything but 220 (550: sello not in smtpd_authorized_xclient_hosts) is a 'protocol' error.
   */
  xclient(lines: readonly string[]): Promise<void> {
    return this.exclusive(async () => {
      for (const line of lines) {
        const answer = await this.command(line, 'XCLIENT');
        if (answer.code !== 220) {
          throw this.failWith('protocol', `${this.address} refused XCLIENT: ${formatReply(toSmtpReply(answer))}`);
        }
        await this.hello();
      }
    });
  }

  /**
   * XFORWARD lines sent before every MAIL FROM, each to be answered 250: the server resets the
   * attributes at the end of each transaction, RSET included (XFORWARD_README, "Server operation").
   */
  setXforward(lines: readonly string[]): void {
    this.xforwardLines = [...lines];
  }

  // ── RelaySession ──────────────────────────────────────────────────────────────────────────

  /**
   * AUTH passthrough (RFC 4954). PLAIN goes with its initial response (RFC 4616 §2, empty
   * authzid); LOGIN answers the server's two 334 challenges. When the server does not offer the
   * client's mechanism but offers the other, the other is used: the credentials are the same.
   * No AUTH (or neither mechanism) downstream → 454 4.7.0, a temporary failure for the client.
   */
  authenticate(credentials: Credentials): Promise<SmtpReply> {
    return this.exclusive(async () => {
      const offered = this.serverCapabilities.authMechanisms;
      const alternative = credentials.mechanism === 'PLAIN' ? 'LOGIN' : 'PLAIN';
      const mechanism = offered.has(credentials.mechanism)
        ? credentials.mechanism
        : offered.has(alternative)
          ? alternative
          : undefined;
      if (!mechanism) return Replies.authUnavailable;
      const base64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');
      const responses =
        mechanism === 'PLAIN' ? [] : [base64(credentials.username), base64(credentials.password)];
      // The descriptions passed along never contain the encoded credentials.
      let answer =
        mechanism === 'PLAIN'
          ? await this.command(`AUTH PLAIN ${base64(`\0${credentials.username}\0${credentials.password}`)}`, 'AUTH PLAIN')
          : await this.command('AUTH LOGIN', 'AUTH LOGIN');
      while (answer.code === 334) {
        const response = responses.shift();
        // RFC 4954 §4: "*" cancels an exchange the server wants to continue past our answers.
        answer =
          response === undefined
            ? await this.command('*', `AUTH ${mechanism} cancel`)
            : await this.command(response, `AUTH ${mechanism} response`);
      }
      return toSmtpReply(answer);
    });
  }

  /**
   * MAIL FROM with the client's parameters, each only when the server advertised its extension:
   * - SIZE (RFC 1870) dropped when not advertised: it is only a hint.
   * - BODY=8BITMIME to a server without 8BITMIME and SMTPUTF8 to a server without SMTPUTF8 are
   *   refused here (554 5.6.3 / 553 5.6.7), never silently downgraded; BODY=7BIT is the default
   *   and is only sent to servers that know BODY.
   * - RET/ENVID (RFC 3461) dropped when DSN is not advertised: RFC 3461 §5.2.2 lets a relay hand
   *   the message to a non-DSN server; the downstream then applies its default (failure DSNs
   *   only). sello cannot issue the "relayed" DSN §5.2.2 asks for: it holds no queue.
   */
  mailFrom(address: string, parameters: MailParameters): Promise<SmtpReply> {
    return this.exclusive(async () => {
      this.acceptedRecipients = [];
      if (!isSafeEnvelopeAddress(address)) return Replies.badSenderSyntax;
      const capabilities = this.serverCapabilities;
      const extensions: string[] = [];
      if (parameters.body === '8BITMIME') {
        if (!capabilities.eightBitMime) return Replies.eightBitMimeUnsupported;
        extensions.push('BODY=8BITMIME');
      } else if (parameters.body === '7BIT' && capabilities.eightBitMime) {
        extensions.push('BODY=7BIT');
      }
      if (parameters.smtpUtf8) {
        if (!capabilities.smtpUtf8) return Replies.smtpUtf8Unsupported;
        extensions.push('SMTPUTF8');
      }
      if (parameters.size !== undefined && capabilities.size !== undefined) {
        if (!Number.isSafeInteger(parameters.size) || parameters.size < 0) return Replies.badParameter;
        extensions.push(`SIZE=${parameters.size}`);
      }
      if (capabilities.dsn) {
        if (parameters.ret) extensions.push(`RET=${parameters.ret}`);
        if (parameters.envid) {
          if (!isXtext(parameters.envid)) return Replies.badParameter;
          extensions.push(`ENVID=${parameters.envid}`);
        }
      }
      for (const line of this.xforwardLines) {
        const forwarded = await this.command(line, 'XFORWARD');
        if (forwarded.code !== 250) {
          throw this.failWith('protocol', `${this.address} refused XFORWARD: ${formatReply(toSmtpReply(forwarded))}`);
        }
      }
      const answer = await this.command(`MAIL FROM:<${address}>${joinParameters(extensions)}`, 'MAIL FROM');
      return toSmtpReply(answer);
    });
  }

  /** RCPT TO; NOTIFY and ORCPT (RFC 3461 §4.1, §4.2) only when the server advertised DSN. */
  rcptTo(address: string, parameters: RecipientParameters): Promise<SmtpReply> {
    return this.exclusive(async () => {
      if (!isSafeEnvelopeAddress(address)) return Replies.badRecipientSyntax;
      const extensions: string[] = [];
      if (this.serverCapabilities.dsn) {
        for (const [name, value] of [
          ['NOTIFY', parameters.notify],
          ['ORCPT', parameters.orcpt],
        ] as const) {
          if (!value) continue;
          if (!isXtext(value)) return Replies.badParameter;
          extensions.push(`${name}=${value}`);
        }
      }
      const answer = toSmtpReply(await this.command(`RCPT TO:<${address}>${joinParameters(extensions)}`, 'RCPT TO'));
      if (answer.code >= 200 && answer.code < 300) this.acceptedRecipients.push(address);
      return answer;
    });
  }

  /**
   * DATA, the dot-stuffed message, the final dot, and the reply to it (LMTP: one reply per
   * accepted recipient, folded by foldLmtpReplies). A message with a bare CR or LF is refused
   * before anything is sent: whatever the downstream makes of "\n.\n", it must never get it.
   * Streamed chunks (a spilled body) are checked one by one before each is sent; on a bare one
   * the connection is cut, so the final dot never follows and the MTA drops the transaction.
   */
  data(chunks: MessageBody): Promise<DataReply> {
    return this.exclusive(async () => {
      const streamed = !Array.isArray(chunks);
      const bareAt = streamed ? -1 : findBareLineEnding(chunks as readonly Buffer[]);
      if (bareAt !== -1) {
        throw new SmtpReplyError(
          Replies.bareLineEnding,
          `message has a bare CR or LF at byte ${bareAt}; not sent to ${this.address}`,
        );
      }
      const recipients = this.acceptedRecipients;
      if (recipients.length === 0) return Replies.noValidRecipients;
      const goAhead = toSmtpReply(await this.command('DATA', 'DATA'));
      if (goAhead.code !== 354) return goAhead;
      this.acceptedRecipients = [];
      const stuffer = new DotStuffer();
      if (streamed) {
        const scanner = new BareLineEndingScanner();
        for await (const chunk of chunks) {
          const streamedBareAt = scanner.push(chunk);
          if (streamedBareAt !== -1) this.refuseStreamed(streamedBareAt);
          await this.write(stuffer.push(chunk), 'message data');
        }
        const finalBareAt = scanner.end();
        if (finalBareAt !== -1) this.refuseStreamed(finalBareAt);
      } else {
        for (const chunk of chunks as readonly Buffer[]) await this.write(stuffer.push(chunk), 'message data');
      }
      await this.write(stuffer.end(), 'end of data');
      const { dataMs } = this.options.timeouts;
      if (this.options.protocol === 'smtp') {
        return toDataReply(toSmtpReply(await this.readReply(dataMs, 'end of data')));
      }
      const recipientReplies: RecipientReply[] = [];
      for (const recipient of recipients) {
        const answer = await this.readReply(dataMs, `end of data (LMTP reply for <${recipient}>)`);
        recipientReplies.push({ recipient, reply: toSmtpReply(answer) });
      }
      return foldLmtpReplies(recipientReplies);
    });
  }

  /** A bare CR or LF in a streamed message after DATA: cut the connection (no final dot) and refuse. */
  private refuseStreamed(bareAt: number): never {
    this.fail(new RelayError('protocol', `session with ${this.address} cut: the message had a bare CR or LF`));
    throw new SmtpReplyError(Replies.bareLineEnding, `message has a bare CR or LF at byte ${bareAt}; the transaction at ${this.address} was cut before its end`);
  }

  /** RSET. A server that refuses RSET is out of step: the connection is closed and this throws. */
  reset(): Promise<void> {
    return this.exclusive(async () => {
      this.acceptedRecipients = [];
      const answer = toSmtpReply(await this.command('RSET', 'RSET'));
      if (answer.code !== 250) {
        const error = new RelayError('protocol', `${this.address} refused RSET: ${formatReply(answer)}`);
        this.fail(error);
        throw error;
      }
    });
  }

  /** QUIT and close; never rejects. During a command in progress the connection is just cut. */
  async close(): Promise<void> {
    if (this.ending || !this.socket) return;
    if (this.commandInProgress) {
      this.fail(new RelayError('protocol', `session with ${this.address} closed during a command`));
      return;
    }
    this.commandInProgress = true;
    this.quitting = true;
    try {
      this.socket.write('QUIT\r\n');
      await this.readReply(Math.min(quitTimeoutMs, this.options.timeouts.commandMs), 'QUIT');
    } catch {
      // The connection is going anyway.
    } finally {
      this.commandInProgress = false;
      this.fail(() => new RelayError('protocol', `session with ${this.address} is closed`));
    }
  }

  // ── Connection set-up ─────────────────────────────────────────────────────────────────────

  private connectSocket(): Promise<void> {
    const { host, port, timeouts } = this.options;
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host, port });
      this.socket = socket;
      const timer = setTimeout(() => {
        socket.destroy();
        this.ending = new RelayError('timeout', `connect to ${this.address}: no answer within ${timeouts.connectMs} ms`);
        reject(this.failure);
      }, timeouts.connectMs);
      const onError = (error: Error) => {
        clearTimeout(timer);
        socket.destroy();
        this.ending = new RelayError('unreachable', `connect to ${this.address}: ${errorDescription(error)}`, {
          cause: error,
        });
        reject(this.failure);
      };
      socket.once('error', onError);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.off('error', onError);
        socket.setNoDelay(true);
        this.attach(socket);
        resolve();
      });
    });
  }

  /**
   * The greeting (RFC 5321 §4.3.1): anything but 2xx means the server will not take mail now.
   * The MTA's text stays in the error message (for logs; clients get the generic 451 4.4.1).
   */
  private async readGreeting(): Promise<void> {
    const greeting = toSmtpReply(await this.readReply(this.options.timeouts.commandMs, 'greeting'));
    if (greeting.code < 200 || greeting.code >= 300) {
      await this.close(); // RFC 5321 §3.1: after a 554 greeting the client sends QUIT
      throw new RelayError('unreachable', `${this.address} refused the session: ${formatReply(greeting)}`);
    }
    this.greeted = true;
  }

  /** EHLO, falling back to HELO when EHLO gets a 5xx (RFC 5321 §4.1.4); LHLO for LMTP. */
  private async hello(): Promise<void> {
    const { protocol, helo } = this.options;
    assertSingleLine('HELO name', helo);
    const verb = protocol === 'lmtp' ? 'LHLO' : 'EHLO';
    let answer = await this.command(`${verb} ${helo}`, verb);
    if (answer.code >= 200 && answer.code < 300) {
      this.serverCapabilities = parseCapabilities(answer);
      return;
    }
    if (protocol === 'smtp' && answer.code >= 500) {
      answer = await this.command(`HELO ${helo}`, 'HELO');
      if (answer.code >= 200 && answer.code < 300) {
        this.serverCapabilities = noCapabilities;
        return;
      }
    }
    throw await this.abandon('protocol', `${this.address} refused ${verb}: ${formatReply(toSmtpReply(answer))}`);
  }

  /**
   * STARTTLS per policy (RFC 3207). 'opportunistic' goes on in clear text when STARTTLS is not
   * offered or is refused with a reply (RFC 3207 §4: 454 lets the client continue); a failed
   * handshake cannot fall back on the same connection and is a 'tls' error either way (the
   * client retries; nothing is lost). After TLS every earlier capability is forgotten and EHLO
   * is sent again (RFC 3207 §4.2).
   */
  private async startTlsAsConfigured(): Promise<void> {
    const { starttls } = this.options;
    if (starttls === 'never') return;
    if (!this.serverCapabilities.startTls) {
      if (starttls === 'required') {
        throw await this.abandon('tls', `${this.address} does not offer STARTTLS, which the relay config requires`);
      }
      return;
    }
    const answer = await this.command('STARTTLS', 'STARTTLS');
    if (answer.code !== 220) {
      if (starttls === 'required') {
        throw await this.abandon('tls', `${this.address} refused STARTTLS: ${formatReply(toSmtpReply(answer))}`);
      }
      return;
    }
    // Anything already received after the 220 was sent in clear text and would be read as if
    // it came over TLS (the STARTTLS response injection of CVE-2011-0411 style): refuse it.
    if (this.inbound.length > 0 || this.unreadReplies.length > 0 || this.partialReplyLines.length > 0) {
      throw this.failWith('tls', `${this.address} sent data after its STARTTLS reply`);
    }
    await this.upgradeToTls();
    this.serverCapabilities = noCapabilities;
    await this.hello();
  }

  private upgradeToTls(): Promise<void> {
    const plain = this.socket;
    if (!plain) return Promise.reject(this.failWith('protocol', 'not connected'));
    this.detach(plain);
    plain.on('error', () => {}); // from now on its errors surface through the TLS socket
    const { host, tlsRejectUnauthorized, timeouts } = this.options;
    return new Promise((resolve, reject) => {
      const secureSocket = tls.connect({
        socket: plain,
        host, // used for the certificate name check when servername is an IP literal
        ...(net.isIP(host) ? {} : { servername: host }), // SNI takes host names only (RFC 6066 §3)
        rejectUnauthorized: tlsRejectUnauthorized,
      });
      this.socket = secureSocket;
      let settled = false;
      const settle = (error?: RelayError) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (error) {
          this.fail(error);
          reject(error);
          return;
        }
        this.secure = true;
        this.attach(secureSocket);
        resolve();
      };
      const timer = setTimeout(
        () => settle(new RelayError('timeout', `TLS handshake with ${this.address}: no answer within ${timeouts.commandMs} ms`)),
        timeouts.commandMs,
      );
      secureSocket.once('secureConnect', () => settle());
      secureSocket.once('error', (error) =>
        settle(new RelayError('tls', `TLS handshake with ${this.address} failed: ${errorDescription(error)}`, { cause: error })),
      );
      secureSocket.once('close', () => settle(new RelayError('tls', `${this.address} closed the connection during the TLS handshake`)));
    });
  }

  // ── Wire ──────────────────────────────────────────────────────────────────────────────────

  private attach(socket: net.Socket): void {
    socket.on('data', this.onSocketData);
    socket.on('error', this.onSocketError);
    socket.on('close', this.onSocketClose);
  }

  private detach(socket: net.Socket): void {
    socket.off('data', this.onSocketData);
    socket.off('error', this.onSocketError);
    socket.off('close', this.onSocketClose);
  }

  /** Socket trouble after connect: before the greeting the server was never usable. */
  private brokenConnection(message: string, cause?: Error): RelayError {
    const kind: RelayErrorKind = this.greeted ? 'protocol' : 'unreachable';
    return new RelayError(kind, message, cause ? { cause } : undefined);
  }

  /** Marks the session broken (once), cuts the connection and wakes whoever waits. */
  private fail(error: RelayError | (() => RelayError)): void {
    this.ending ??= error;
    this.socket?.destroy();
    const waiter = this.replyWaiter;
    this.replyWaiter = undefined;
    if (!waiter && this.failureListeners.size === 0) return;
    const failure = this.failure as RelayError;
    waiter?.reject(failure);
    for (const listener of this.failureListeners) listener(failure);
    this.failureListeners.clear();
  }

  /** Ends the session politely (QUIT) and returns the error that explains why. */
  private async abandon(kind: RelayErrorKind, message: string): Promise<RelayError> {
    await this.close();
    return new RelayError(kind, message);
  }

  private failWith(kind: RelayErrorKind, message: string): RelayError {
    const error = new RelayError(kind, message);
    this.fail(error);
    return error;
  }

  /** Splits inbound bytes into reply lines (RFC 5321 §4.2.1); tolerant of a bare LF from the server. */
  private consume(chunk: Buffer): void {
    this.inbound = this.inbound.length > 0 ? Buffer.concat([this.inbound, chunk]) : chunk;
    let newline = this.inbound.indexOf(0x0a);
    while (newline !== -1 && !this.ending) {
      const end = newline > 0 && this.inbound[newline - 1] === 0x0d ? newline - 1 : newline;
      const line = this.inbound.subarray(0, end).toString('utf8');
      this.inbound = this.inbound.subarray(newline + 1);
      this.acceptLine(line);
      newline = this.inbound.indexOf(0x0a);
    }
    if (this.inbound.length > maxReplyLineBytes) {
      this.fail(new RelayError('protocol', `${this.address} sent a reply line longer than ${maxReplyLineBytes} bytes`));
    }
  }

  /** RFC 5321 §4.2.1: "NNN-text" continues a reply, "NNN text" (or "NNN") ends it; same code throughout. */
  private acceptLine(line: string): void {
    const match = /^([2-5]\d\d)(?:([ -])(.*))?$/.exec(line);
    if (!match) {
      this.fail(new RelayError('protocol', `${this.address} sent a malformed reply line: ${JSON.stringify(line.slice(0, 120))}`));
      return;
    }
    const code = Number(match[1]);
    if (this.partialReplyLines.length > 0 && code !== this.partialReplyCode) {
      this.fail(new RelayError('protocol', `${this.address} changed the reply code within a multiline reply`));
      return;
    }
    this.partialReplyCode = code;
    this.partialReplyLines.push(match[3] ?? '');
    if (this.partialReplyLines.length > maxReplyLines) {
      this.fail(new RelayError('protocol', `${this.address} sent a reply of more than ${maxReplyLines} lines`));
      return;
    }
    if (match[2] === '-') return;
    const complete: WireReply = { code, lines: this.partialReplyLines };
    this.partialReplyLines = [];
    const waiter = this.replyWaiter;
    this.replyWaiter = undefined;
    if (waiter) waiter.resolve(complete);
    else this.unreadReplies.push(complete);
  }

  /** The next reply; on timeout the connection is cut (its state is unknown) and 'timeout' thrown. */
  private readReply(timeoutMs: number, awaiting: string): Promise<WireReply> {
    const queued = this.unreadReplies.shift();
    if (queued) return Promise.resolve(queued);
    if (this.ending) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.replyWaiter = undefined;
        this.fail(new RelayError('timeout', `${this.address}: no reply to ${awaiting} within ${timeoutMs} ms`));
        reject(this.failure);
      }, timeoutMs);
      this.replyWaiter = {
        resolve: (wire) => {
          clearTimeout(timer);
          resolve(wire);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
    });
  }

  /** Sends one command line and reads its reply; `description` is what errors may show. */
  private async command(line: string, description: string): Promise<WireReply> {
    assertSingleLine(description, line);
    await this.write(Buffer.from(`${line}\r\n`, 'utf8'), description);
    return this.readReply(this.options.timeouts.commandMs, description);
  }

  /** Writes, waiting for 'drain' when the socket buffer is full (each wait bounded by commandMs). */
  private async write(bytes: Buffer, description: string): Promise<void> {
    if (this.ending) throw this.failure;
    const socket = this.socket;
    if (!socket) throw this.failWith('protocol', 'not connected');
    if (bytes.length === 0 || socket.write(bytes)) return;
    const { commandMs } = this.options.timeouts;
    await new Promise<void>((resolve, reject) => {
      const onFailure = (error: RelayError) => {
        clearTimeout(timer);
        socket.off('drain', onDrain);
        reject(error);
      };
      const onDrain = () => {
        clearTimeout(timer);
        this.failureListeners.delete(onFailure);
        resolve();
      };
      const timer = setTimeout(() => {
        this.failureListeners.delete(onFailure);
        socket.off('drain', onDrain);
        reject(this.failWith('timeout', `${this.address} stopped reading during ${description} for ${commandMs} ms`));
      }, commandMs);
      this.failureListeners.add(onFailure);
      socket.once('drain', onDrain);
    });
  }

  /** The session is used in step: one verb at a time, never after it broke. */
  private async exclusive<T>(operation: () => Promise<T>): Promise<T> {
    if (this.ending) throw this.failure;
    // A session being closed (its client left while a command was being decided) is a relay
    // session that is gone, not a programming error.
    if (this.quitting) throw new RelayError('protocol', `session with ${this.address} is closing`);
    if (this.commandInProgress) throw new Error('SmtpClient: a command is already in progress');
    this.commandInProgress = true;
    try {
      return await operation();
    } finally {
      this.commandInProgress = false;
    }
  }
}

/**
 * The address goes inside <> ("" is the null reverse-path, RFC 5321 §4.1.1.2): it must not be
 * able to end the bracket or the line. Spaces may appear in a quoted local part (§4.1.2).
 */
function isSafeEnvelopeAddress(address: string): boolean {
  return !/[<>\r\n\0]/.test(address);
}

/** xtext (RFC 3461 §4): printable, no space, no "="; UTF-8 allowed for RFC 6533's utf-8-addr-xtext. */
function isXtext(value: string): boolean {
  return /^[\x21-\x3c\x3e-\x7e\u0080-\u{10ffff}]+$/u.test(value);
}

function joinParameters(parameters: readonly string[]): string {
  return parameters.map((parameter) => ` ${parameter}`).join('');
}

function assertSingleLine(what: string, value: string): void {
  if (/[\r\n]/.test(value)) throw new TypeError(`${what} must not contain CR or LF`);
}

function errorDescription(error: Error): string {
  const code = (error as NodeJS.ErrnoException).code;
  return code && !error.message.includes(code) ? `${code} ${error.message}` : error.message;
}

// The contract between the SMTP front end and the downstream hand-off (PRODUCT.md §3).
// Owns: the types of a relay target and of one downstream session.
// Must not: know about listeners, signing or policy; it only delivers what it is given.

import type { SmtpReply } from '../errors.ts';

/** ESMTP parameters kept from the client's MAIL FROM (RFC 1870, 6152, 6531, 3461). */
export interface MailParameters {
  size?: number;
  body?: '7BIT' | '8BITMIME';
  smtpUtf8?: boolean;
  /** DSN RET=FULL|HDRS */
  ret?: 'FULL' | 'HDRS';
  /** DSN ENVID, xtext as received */
  envid?: string;
}

/** ESMTP parameters kept from the client's RCPT TO (RFC 3461). */
export interface RecipientParameters {
  /** e.g. "SUCCESS,FAILURE" or "NEVER" */
  notify?: string;
  /** ORCPT as received, e.g. "rfc822;user@example.com" (xtext) */
  orcpt?: string;
}

export type { ForwardMode } from '../config/relay-target.ts';
import type { ForwardMode } from '../config/relay-target.ts';

/**
 * Who the real client is: the socket peer, or the client a trusted peer of a filter listener
 * forwarded with XFORWARD/XCLIENT. Passed on to the MTA as `relay.forward` says.
 */
export interface ClientIdentity {
  /** IPv4 or IPv6 address (an IPv4-mapped IPv6 address counts as IPv4). */
  address: string;
  /** 0 when unknown (a forwarded client without PORT). */
  port: number;
  /** The HELO/EHLO name; '' when unknown. */
  helo: string;
  /** PTR name when it was looked up or forwarded, else undefined */
  hostname?: string;
  protocol: 'SMTP' | 'ESMTP';
  /** The address and port the client connected to on sello (PROXY "destination", XCLIENT DESTADDR/DESTPORT). */
  localAddress: string;
  localPort: number;
  /** A login a trusted peer vouched for with XCLIENT LOGIN= (never a password). */
  login?: string;
  /** From a trusted peer's XFORWARD: the upstream queue id (IDENT) and LOCAL/REMOTE (SOURCE). */
  ident?: string;
  source?: 'LOCAL' | 'REMOTE';
}

/** How to reach the downstream MTA (config `relay`); the URL scheme picks the target. */
export interface SmtpRelayConfig {
  /** smtp://host[:25], lmtp://host[:24], or dir:PATH */
  url: string;
  starttls: 'never' | 'opportunistic' | 'required';
  /** Verify the MTA's certificate; off by default because the MTA usually sits on loopback. */
  tlsRejectUnauthorized: boolean;
  /** Name sello gives in EHLO/LHLO. */
  helo: string;
  /** How the real client is made known to the MTA; default none. smtp:// and lmtp:// only. */
  forward?: ForwardMode;
  timeouts: {
    connectMs: number;
    /** Every reply except the one to the final dot. */
    commandMs: number;
    /** The reply (LMTP: the replies) to the final dot. */
    dataMs: number;
  };
  /**
   * Warm connections kept for reuse across transactions and client sessions (pool.ts). Absent
   * or maxIdle 0: every client session opens its own connection and QUITs it at the end.
   */
  pool?: RelayPoolConfig;
}

/** Config `relay.pool`: how many idle connections to keep, how long, how often to reuse one. */
export interface RelayPoolConfig {
  /** Idle connections kept per target; 0 turns pooling off. */
  maxIdle: number;
  /** An idle connection is closed (QUIT) after this long unused. */
  idleTimeoutMs: number;
  /** A connection is closed (QUIT) after this many transactions instead of going back. */
  maxTransactions: number;
}

/** One LMTP recipient's own reply to the final dot (RFC 2033 §4.2). */
export interface RecipientReply {
  readonly recipient: string;
  readonly reply: SmtpReply;
}

/** The reply to the end of DATA. */
export interface DataReply extends SmtpReply {
  /** The MTA's queue id when its reply text matched a known pattern (Exim, Postfix, Dovecot). */
  readonly queueId?: string;
  /** LMTP only: every accepted recipient's own reply, for logs; the reply itself is the fold. */
  readonly recipientReplies?: readonly RecipientReply[];
}

/** Credentials for AUTH passthrough; never logged. */
export interface Credentials {
  mechanism: 'PLAIN' | 'LOGIN';
  username: string;
  password: string;
}

/**
 * One downstream session, opened for one client SMTP session and used in step with it.
 * Every method resolves with the MTA's own reply (4xx/5xx included) and rejects only with a
 * RelayError when the MTA could not be used at all (unreachable, timeout, protocol breakage).
 */
export interface RelaySession {
  /** AUTH passthrough. 235 on success; the MTA's 5xx/4xx otherwise. */
  authenticate(credentials: Credentials): Promise<SmtpReply>;
  mailFrom(address: string, parameters: MailParameters): Promise<SmtpReply>;
  rcptTo(address: string, parameters: RecipientParameters): Promise<SmtpReply>;
  /**
   * Sends the message: `chunks` concatenated are the exact message bytes (CRLF line endings,
   * not dot-stuffed). The client dot-stuffs and terminates. Resolves with one reply for SMTP;
   * LMTP's per-recipient replies are folded into one (see foldLmtpReplies in smtp-reply.ts).
   * The returned reply's text may carry the MTA's queue id; `queueId` extracts it if found.
   * Rejects with SmtpReplyError(Replies.bareLineEnding) before sending anything when the
   * chunks hold a bare CR or LF (SMTP smuggling guard, PRODUCT.md §4).
   */
  data(chunks: readonly Buffer[]): Promise<DataReply>;
  /** Abort the current transaction (RSET); the session stays usable. */
  reset(): Promise<void>;
  /**
   * Ends the session; never rejects. QUIT and close, or, for a pooled connection in a clean
   * state, RSET and give it back to the pool (pool.ts) for the next client session.
   */
  close(): Promise<void>;
  /** True once the downstream connection is gone (closed, broken); a new session is needed. */
  readonly closed: boolean;
}

export interface RelayTarget {
  /** e.g. "smtp://127.0.0.1:2525" — for logs and metrics labels (configured, so bounded). */
  readonly description: string;
  /** Whether authenticate() can work (false for dir:). */
  readonly supportsAuth: boolean;
  /** How open() makes the client known to the MTA ('none' for dir:). */
  readonly forward: ForwardMode;
  /**
   * Opens (connects, greets, EHLO/LHLO, STARTTLS if configured) a downstream session for
   * `client`, made known to the MTA per `forward`. A session serves that one client: when the
   * client changes (a filter peer forwarding another one), the caller opens a new session.
   * Rejects with RelayError('protocol') when the MTA does not offer the configured forwarding:
   * mail is deferred rather than passed on without its client.
   */
  open(client: ClientIdentity): Promise<RelaySession>;
  /** Cheap reachability probe for /readyz: connect, greet, QUIT. */
  probe(): Promise<void>;
  /**
   * Closes (QUIT) the idle pooled connections and stops pooling: sessions still open are
   * closed, not pooled, when they end. For shutdown and for a target a reload replaced.
   */
  close?(): Promise<void>;
}

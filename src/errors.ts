// The one catalogue of sello's coded errors and of the SMTP replies sello itself composes.
// Owns: the reply texts users and other software parse (codes per RFC 5321 / RFC 3463 / RFC 7372).
// Must not: format wire lines (smtp/ does that) or carry client-supplied text into a reply.

/** An SMTP reply: basic code, enhanced status code (RFC 3463) and human text. */
export interface SmtpReply {
  readonly code: number;
  /** e.g. "5.7.23"; empty when the reply has none (3xx, greeting). */
  readonly enhanced: string;
  readonly text: string;
}

export function reply(code: number, enhanced: string, text: string): SmtpReply {
  return { code, enhanced, text };
}

/** The reply as one wire line without CRLF, e.g. "550 5.7.23 SPF validation failed". */
export function formatReply(r: SmtpReply): string {
  return [String(r.code), r.enhanced, r.text].filter(Boolean).join(' ');
}

/** Replies sello composes itself. Text stays generic: no internal detail reaches a client. */
export const Replies = {
  relayUnreachable: reply(451, '4.4.1', 'Downstream mail server unreachable, try again later'),
  relayTimeout: reply(451, '4.4.2', 'Downstream mail server timed out, try again later'),
  relayProtocol: reply(451, '4.4.0', 'Downstream mail server error, try again later'),
  signingFailed: reply(451, '4.7.0', 'Message could not be signed, try again later'),
  signingFailedReject: reply(554, '5.7.0', 'Message could not be signed'),
  fromMissing: reply(550, '5.6.0', 'Message refused: it has no From header field (RFC 5322 section 3.6)'),
  fromMultiple: reply(
    550,
    '5.6.0',
    'Message refused: it must have exactly one From header field with exactly one address (RFC 5322 section 3.6)',
  ),
  bareLineEnding: reply(550, '5.6.0', 'Message refused: bare CR or LF line ending; lines must end in CRLF (RFC 5322 section 2.3)'),
  messageTooLarge: reply(552, '5.3.4', 'Message size exceeds fixed maximum message size'),
  headerTooLarge: reply(552, '5.3.4', 'Message header section exceeds fixed maximum size'),
  authRequired: reply(530, '5.7.0', 'Authentication required'),
  authRequiresTls: reply(538, '5.7.11', 'Encryption required for requested authentication mechanism'),
  authFailed: reply(535, '5.7.8', 'Authentication credentials invalid'),
  authUnavailable: reply(454, '4.7.0', 'Temporary authentication failure'),
  authNotOffered: reply(503, '5.5.1', 'Authentication not available on this listener'),
  relayDenied: reply(550, '5.7.1', 'Relaying denied'),
  // RFC 5321 §4.5.3.1.10: 452 for too many recipients; the client sends the rest later.
  tooManyRecipients: reply(452, '4.5.3', 'Too many recipients'),
  localError: reply(451, '4.3.0', 'Local error in processing, try again later'),
  shuttingDown: reply(421, '4.3.2', 'Service shutting down, try again later'),
  accepted: reply(250, '2.0.0', 'OK'),
  // RFC 6152 §3: 8-bit content must not go to a server without 8BITMIME unless converted; sello
  // does not convert (it would break DKIM signatures): RFC 3463 §3.7 "conversion required".
  eightBitMimeUnsupported: reply(554, '5.6.3', 'Message needs 8BITMIME, which the next hop does not support'),
  // RFC 6531 §3.2/§3.5: no internationalised message to a server without SMTPUTF8.
  smtpUtf8Unsupported: reply(553, '5.6.7', 'Message needs SMTPUTF8, which the next hop does not support'),
  // RFC 5321 §3.3: DATA with no accepted recipient.
  noValidRecipients: reply(554, '5.5.1', 'No valid recipients'),
  // Values that would change the command line they go into are refused, never sent (RFC 3463
  // X.1.7 / X.1.3 bad sender / recipient address syntax, X.5.4 invalid command arguments).
  badSenderSyntax: reply(501, '5.1.7', 'Bad sender address syntax'),
  badRecipientSyntax: reply(501, '5.1.3', 'Bad recipient address syntax'),
  badParameter: reply(501, '5.5.4', 'Invalid command arguments'),
  // smtp-server's own refusals, given codes (src/smtp/own-replies.ts maps them here). RFC 3463
  // §3.4 X.3.2 "system not accepting network messages": every slot is taken.
  tooManyConnections: reply(421, '4.3.2', 'Too many connections, try again later'),
  // RFC 3463 §3.5 X.4.2 "bad connection": the client stopped sending (RFC 5321 §4.5.3.2).
  clientTimeout: reply(421, '4.4.2', 'Timeout, closing connection'),
  // RFC 3463 §3.6 X.5.2 "syntax error": a line longer than RFC 5321 §4.5.3.1.4 allows, and more.
  commandLineTooLong: reply(421, '4.5.2', 'Command line too long'),
  // RFC 5321 §4.3.2 / RFC 3463 §3.8 X.7.0: a client that talks before the greeting, speaks HTTP,
  // or keeps sending unknown commands is cut off.
  earlyTalker: reply(421, '4.7.0', 'You talk too soon'),
  httpRefused: reply(421, '4.7.0', 'HTTP requests not allowed'),
  tooManyErrors: reply(421, '4.7.0', 'Too many unrecognized commands'),
  // The client left mid-DATA: never on the wire (nobody listens); the transaction's log says so.
  connectionLost: reply(421, '4.4.2', 'Connection lost before the message was received in full'),
  // RFC 3207 §4: STARTTLS where it is not offered; RFC 3463 X.5.1 "invalid command".
  startTlsNotOffered: reply(502, '5.5.1', 'STARTTLS not available on this listener'),
  // RFC 5321 §3.3 / RFC 5322 §2.3: NUL is no character of a message (data.nul).
  nulInMessage: reply(550, '5.6.0', 'Message refused: it contains NUL characters (RFC 5322 section 2.3)'),
} as const;

/** An error that already knows the SMTP reply the client should get. */
export class SmtpReplyError extends Error {
  readonly reply: SmtpReply;
  constructor(r: SmtpReply, detail?: string) {
    super(detail ?? formatReply(r));
    this.name = 'SmtpReplyError';
    this.reply = r;
  }
}

/** A configuration problem; `path` names the config key, e.g. "listeners[0].tls.cert". */
export class ConfigError extends Error {
  readonly path: string;
  constructor(path: string, message: string) {
    super(path ? `${path}: ${message}` : message);
    this.name = 'ConfigError';
    this.path = path;
  }
}

export type RelayErrorKind = 'unreachable' | 'timeout' | 'protocol' | 'tls';

/** The downstream MTA could not be used: every kind maps to a 4xx so the client retries. */
export class RelayError extends Error {
  readonly kind: RelayErrorKind;
  constructor(kind: RelayErrorKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RelayError';
    this.kind = kind;
  }

  get reply(): SmtpReply {
    switch (this.kind) {
      case 'unreachable':
        return Replies.relayUnreachable;
      case 'timeout':
        return Replies.relayTimeout;
      default:
        return Replies.relayProtocol;
    }
  }
}

/** A key could not be generated, read or used; `path` names the file where there is one. */
export class KeyError extends Error {
  readonly path: string;
  constructor(path: string, message: string) {
    super(path ? `${path}: ${message}` : message);
    this.name = 'KeyError';
    this.path = path;
  }
}

/** A DKIM signature could not be made (mailauth reported an error, key unusable, …). */
export class SigningError extends Error {
  /** The configured signatures that were being made when it failed (for metrics), if known. */
  readonly signatures: readonly { domain: string; selector: string; algorithm: 'rsa-sha256' | 'ed25519-sha256' }[];
  constructor(message: string, options?: { cause?: unknown; signatures?: SigningError['signatures'] }) {
    super(message, options);
    this.name = 'SigningError';
    this.signatures = options?.signatures ?? [];
  }
}

/**
 * An ARC set could not be made (mailauth reported an error, or threw). The pipeline relays the
 * message unsealed and counts it (README: ARC sealing); it never becomes a client reply.
 */
export class ArcSealError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ArcSealError';
  }
}

/** Why a bind failed, in words an operator acts on (the code first, for grep). */
const BIND_REASONS: Readonly<Record<string, string>> = {
  EADDRINUSE: 'address already in use',
  EACCES: 'permission denied; use a port ≥ 1024 or grant CAP_NET_BIND_SERVICE',
  EADDRNOTAVAIL: 'no such address on this machine',
};

/**
 * A socket sello must listen on could not be bound. `what` names it by its config key
 * ("listeners[0] (submission)", "metrics.listen"); the message is the one line the CLI prints.
 */
export class BindError extends Error {
  readonly code: string;
  constructor(what: string, listen: { host: string; port: number }, cause: unknown) {
    const code = (cause as NodeJS.ErrnoException | undefined)?.code ?? 'EBIND';
    const reason = BIND_REASONS[code] ?? (cause instanceof Error ? cause.message : String(cause));
    const address = listen.host.includes(':') ? `[${listen.host}]:${listen.port}` : `${listen.host}:${listen.port}`;
    super(`${what} cannot listen on ${address}: ${code} (${reason})`, { cause });
    this.name = 'BindError';
    this.code = code;
  }
}

/** Exit-code carrying error for CLI commands: message goes to stderr, `exitCode` to the shell. */
export class UsageError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 2) {
    super(message);
    this.name = 'UsageError';
    this.exitCode = exitCode;
  }
}

// The engine's session contract: what a front end (SMTP proxy listener, milter, CLI) tells the
// transaction engine, and what the engine answers. One engine decides for every front end.
// Owns: the shape of a session (mail, rcpt, end, delivered/failed, abort), the verdicts and the
// header edits. Must not: name a protocol library (smtp-server, the milter codec) or deliver.
//
// A front end translates its protocol into these calls in this order, per transaction:
//   mail(from, client) → rcpt(to)… [recipientRefused(code)…] → end(message) → delivered(…) | failed(…)
// and abort() whenever a transaction stops before its end (RSET, a new MAIL, QUIT, disconnect).
// Every decision (SPF at MAIL and RCPT, the recipient policy, DMARC, the signing decision, the
// From rule) and the decision record belong to the engine; the front end only carries replies and
// edits back into its protocol.

import type { SmtpReply } from '../errors.ts';
import type { InboundResults } from './authentication-results.ts';
import type { DecisionRecord } from './decision-record.ts';

/** The role of the front end's listener (PRODUCT.md §2). */
export type SessionRole = 'mx' | 'submission' | 'filter' | 'milter';

/** What a listener is: fixed per listener and config generation. */
export interface FrontEnd {
  /** The listener's name (logs, metrics). */
  listener: string;
  role: SessionRole;
  /** The listener may sign (submission; filter unless sign: false; milter with sign). mx never does. */
  signs: boolean;
  /** The listener runs the inbound checks (mx; filter with verify: true; milter with verify). */
  verifies: boolean;
  /**
   * The MTA behind judges relaying by the real client (XCLIENT/PROXY, or a milter's MTA), so the
   * engine need not refuse non-local recipients on mx (PRODUCT.md §3, no open relay).
   */
  mtaJudgesRelay: boolean;
}

/** What the front end knows of the client when a transaction starts, as plain values. */
export interface ClientFacts {
  /** The front end's session id, for the log. */
  sessionId: string;
  /** The client's IP address: the socket's, or what a trusted MTA passed on (XFORWARD, XCLIENT, PROXY, milter {client_addr}). */
  address: string;
  /** False when `address` is only the MTA's own (a filter the MTA forwarded no client to): no SPF then. */
  addressKnown: boolean;
  /** The client's HELO/EHLO name as given (may be empty). */
  helo: string;
  /** The authenticated login (SASL; milter {auth_authen}), if any. */
  user?: string;
  /** The client is in the listener's trustedNetworks (or is local submission on a milter). */
  trusted: boolean;
}

/** The engine's answer to MAIL or RCPT: go on, or the reply that refuses. */
export type Verdict = { action: 'accept' } | { action: 'reject' | 'defer'; reply: SmtpReply };

/**
 * Header changes the engine asks for, never rewritten bytes: a proxy applies them to the message it
 * relays (applyHeaderEdits in message.ts), a milter sends them as actions.
 */
export interface HeaderEdits {
  /**
   * Complete header fields to insert at the top of the header section, topmost first. Each ends in
   * CRLF; a folded field has CRLF + WSP inside it.
   */
  add: string[];
  /**
   * Fields to remove (forged Authentication-Results, RFC 8601 §5): the field name and its 1-based
   * index among the fields of that name (case-insensitive) in the header as received, as the
   * milter's change-header action counts them (SMFIR_CHGHEADER with an empty value deletes).
   */
  remove: { name: string; index: number }[];
}

/** The engine's answer at the end of the message. */
export type EndVerdict =
  | {
      action: 'accept';
      edits: HeaderEdits;
      /**
       * The message as received with CRLF line endings (data.bareLineEndings applied): the bytes the
       * edits apply to and the signatures cover. Identical to the input when it had only CRLF.
       */
      message: Buffer;
      /** The decision record so far (signatures made or why none, check results); delivery comes later. */
      record: Readonly<DecisionRecord>;
      /** What the inbound checks found, when they ran (sello verify prints it). */
      inbound?: InboundResults;
    }
  | {
      action: 'reject' | 'defer';
      reply: SmtpReply;
      /** Why, for the log or a local command line; never for a remote client (the reply stays generic). */
      reason?: string;
    };

/** What delivering the accepted message gave (proxy: the MTA's reply to the data; milter: the MTA's queue id). */
export interface DeliveryReport {
  /** Where the message went (a relay target's description), if the front end delivers. */
  relay?: string;
  code: number;
  queueId?: string;
  /** LMTP: one reply per recipient. */
  recipients?: unknown;
  /** Time spent handing the message on, when the front end delivers. */
  relayMs?: number;
}

/** One SMTP-like session of a front end with the engine (one client connection). */
export interface EngineSession {
  /**
   * MAIL FROM (`from` without angle brackets; empty for the null sender). Ends a transaction still
   * open (its record is written), then decides whether this one may start and evaluates SPF when
   * the inbound checks apply (once per transaction; enforced per recipient at rcpt).
   */
  mail(from: string, client: ClientFacts): Promise<Verdict>;
  /** The downstream MTA refused the MAIL the engine accepted: the transaction never started (no record). */
  discard(): void;
  /** RCPT TO: the recipient limit, no open relay, and the SPF policy (postmaster@/abuse@ exempt). */
  rcpt(to: string): Promise<Verdict>;
  /** The downstream MTA refused a recipient the engine accepted (its reply code goes into the record). */
  recipientRefused(code: number): void;
  /**
   * End of data: line endings, limits, inbound checks (DKIM, ARC, DMARC), policy, then the header
   * fields to add (Authentication-Results, Received-SPF, DKIM-Signature, ARC set) and remove.
   */
  end(message: Buffer): Promise<EndVerdict>;
  /** The accepted message was handed on: writes the decision record (outcome relayed, or per the code). */
  delivered(report: DeliveryReport): void;
  /** The transaction failed after end() or during delivery with `reply` (sent to the client); writes the record. */
  failed(reply: SmtpReply, reason?: string, report?: DeliveryReport): void;
  /** The transaction stopped before its end (RSET, QUIT, disconnect, a new MAIL): writes its record, if any. */
  abort(): void;
  /** A transaction is open (mail accepted, not yet delivered, failed or aborted). */
  readonly transactionOpen: boolean;
}

/** The engine of one config generation; a front end opens one session per client connection. */
export interface Engine {
  session(frontEnd: FrontEnd): EngineSession;
}

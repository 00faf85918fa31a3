// Reading what a downstream SMTP/LMTP server says: reply lines, enhanced status codes, EHLO
// capabilities, queue ids, and the folding of LMTP's per-recipient replies into one reply.
// Owns: pure functions over reply text; no I/O.
// Must not: talk to sockets, decide policy, or compose replies for anything but the relay.

import { reply, type SmtpReply } from '../errors.ts';
import type { DataReply, RecipientReply } from './types.ts';

/** A reply as read off the wire: the code and each line's text after "NNN-" / "NNN ". */
export interface WireReply {
  readonly code: number;
  readonly lines: readonly string[];
}

/** What the server advertised in its EHLO/LHLO reply (RFC 5321 §4.1.1.1). */
export interface Capabilities {
  /** SIZE (RFC 1870): the fixed limit, 0 when advertised without one; undefined when absent. */
  readonly size: number | undefined;
  readonly eightBitMime: boolean;
  readonly smtpUtf8: boolean;
  readonly dsn: boolean;
  readonly pipelining: boolean;
  readonly startTls: boolean;
  readonly enhancedStatusCodes: boolean;
  /** SASL mechanisms from AUTH (RFC 4954 §3), upper case. */
  readonly authMechanisms: ReadonlySet<string>;
  /** Every advertised keyword (upper case) with its parameters as sent, e.g. XCLIENT's list. */
  readonly keywords: ReadonlyMap<string, string>;
}

export const noCapabilities: Capabilities = Object.freeze({
  size: undefined,
  eightBitMime: false,
  smtpUtf8: false,
  dsn: false,
  pipelining: false,
  startTls: false,
  enhancedStatusCodes: false,
  authMechanisms: new Set<string>(),
  keywords: new Map<string, string>(),
});

// RFC 3463 §2: class "." subject "." detail; class is 2, 4 or 5 and must match the reply code's
// first digit (RFC 2034 §4), otherwise the digits are ordinary text.
const enhancedStatusCodePattern = /^([245])\.(\d{1,3})\.(\d{1,3})(?: +|$)/;

/**
 * One SmtpReply from the wire lines. The enhanced status code is taken from the first line and
 * stripped from every line that repeats it (RFC 2034 §4 puts it on each line); the lines' texts
 * are joined with a space.
 */
export function toSmtpReply(wire: WireReply): SmtpReply {
  const replyClass = String(wire.code).charAt(0);
  const first = enhancedStatusCodePattern.exec(wire.lines[0] ?? '');
  const enhanced = first && first[1] === replyClass ? `${first[1]}.${first[2]}.${first[3]}` : '';
  const texts = wire.lines.map((line) => {
    if (!enhanced) return line.trim();
    const match = enhancedStatusCodePattern.exec(line);
    return (match && `${match[1]}.${match[2]}.${match[3]}` === enhanced ? line.slice(match[0].length) : line).trim();
  });
  return reply(wire.code, enhanced, texts.filter(Boolean).join(' '));
}

/** The EHLO/LHLO reply's lines after the first (which names the server) as capabilities. */
export function parseCapabilities(wire: WireReply): Capabilities {
  const keywords = new Map<string, string>();
  for (const line of wire.lines.slice(1)) {
    // RFC 5321 §4.1.1.1: ehlo-keyword *(SP ehlo-param); "AUTH=" is the pre-RFC 2554 form.
    const match = /^([A-Za-z0-9][A-Za-z0-9-]*)(?:[ =](.*))?$/.exec(line.trim());
    if (!match?.[1]) continue;
    const keyword = match[1].toUpperCase();
    const parameters = (match[2] ?? '').trim();
    const previous = keywords.get(keyword);
    keywords.set(keyword, previous ? `${previous} ${parameters}`.trim() : parameters);
  }
  const sizeParameter = keywords.get('SIZE');
  const sizeLimit = sizeParameter === undefined ? undefined : Number.parseInt(sizeParameter || '0', 10);
  return {
    size: sizeLimit === undefined ? undefined : Number.isFinite(sizeLimit) ? sizeLimit : 0,
    eightBitMime: keywords.has('8BITMIME'),
    smtpUtf8: keywords.has('SMTPUTF8'),
    dsn: keywords.has('DSN'),
    pipelining: keywords.has('PIPELINING'),
    startTls: keywords.has('STARTTLS'),
    enhancedStatusCodes: keywords.has('ENHANCEDSTATUSCODES'),
    authMechanisms: new Set((keywords.get('AUTH') ?? '').toUpperCase().split(/\s+/).filter(Boolean)),
    keywords,
  };
}

// Known ways MTAs name the queue entry in their reply to the final dot (text after the
// enhanced status code has been stripped).
const queueIdPatterns: readonly RegExp[] = [
  // Exim: "250 OK id=1tXyz-000abc-Q1" (old 6-6-2 and 4.97+ 6-11-4 forms)
  /\bid=([0-9A-Za-z]+-[0-9A-Za-z]+-[0-9A-Za-z]+)\b/,
  // Postfix: "250 2.0.0 Ok: queued as 4Xb2Kq1z0Mz9"
  /\bqueued as ([0-9A-Za-z]+)\b/,
  // Dovecot LMTP: "250 2.0.0 <user@example.com> 6nbtGK09Y2ZDRgAA0J78UA Saved" (session id)
  /^<[^>]*> ([0-9A-Za-z+/]+) Saved\b/,
  // Sendmail / OpenSMTPD: "250 2.0.0 x8ABC123456789 Message accepted for delivery"
  /^([0-9A-Za-z]+) Message accepted for delivery\b/,
];

/** The downstream queue id when the reply text matches a known MTA's pattern. */
export function extractQueueId(text: string): string | undefined {
  for (const pattern of queueIdPatterns) {
    const match = pattern.exec(text);
    if (match?.[1]) return match[1];
  }
  return undefined;
}

/** A 2xx reply to the final dot, with its queue id when one is recognised. */
export function toDataReply(smtpReply: SmtpReply): DataReply {
  const queueId = smtpReply.code < 300 ? extractQueueId(smtpReply.text) : undefined;
  return queueId === undefined ? { ...smtpReply } : { ...smtpReply, queueId };
}

const partialLmtpFailure = reply(451, '4.3.0', 'Message not delivered to all recipients, try again later');

/**
 * LMTP answers the final dot once per accepted recipient (RFC 2033 §4.2); the SMTP client in
 * front of sello can only be given one reply. sello holds no queue (PRODUCT.md §3), so:
 * - all 2xx → the first 2xx (delivered);
 * - any 4xx → 451 with the first 4xx's enhanced code and text: a retry of the whole message is
 *   the only way nothing is lost; the recipients that already got it get a duplicate (the caller
 *   logs `recipientReplies` so this is visible);
 * - all 5xx → the first 5xx (the client bounces for everyone, which is true);
 * - 2xx mixed with 5xx and no 4xx → 451 4.3.0 too: SMTP cannot report a partial failure after
 *   DATA, and answering 250 would silently lose the bounce for the refused recipients, answering
 *   5xx would bounce mail that was delivered. The retry re-offers every recipient.
 * A reply that is neither 2xx nor 5xx counts as temporary.
 */
export function foldLmtpReplies(recipientReplies: readonly RecipientReply[]): DataReply {
  const firstOfClass = (replyClass: 2 | 4 | 5) =>
    recipientReplies.find(({ reply: r }) => {
      const actual = Math.floor(r.code / 100);
      return replyClass === 4 ? actual !== 2 && actual !== 5 : actual === replyClass;
    })?.reply;
  const delivered = firstOfClass(2);
  const deferred = firstOfClass(4);
  const refused = firstOfClass(5);
  let folded: DataReply;
  if (deferred) {
    folded = reply(451, deferred.enhanced.startsWith('4.') ? deferred.enhanced : '4.0.0', deferred.text);
  } else if (delivered && !refused) {
    folded = toDataReply(delivered);
  } else if (refused && !delivered) {
    folded = { ...refused };
  } else {
    folded = partialLmtpFailure;
  }
  return { ...folded, recipientReplies };
}

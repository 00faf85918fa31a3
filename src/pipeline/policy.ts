// Policy: check outcomes → tag, defer or reject, and the exact reply (PRODUCT.md §5 table).
// Owns: the operator's action table and the RFC 7372 reply texts. Must not: run checks or
// know about SMTP sessions (the listener asks at RCPT TO and after DATA).

import type { Config } from '../config/schema.ts';
import type { SpfOutcome, SpfResultWord } from '../checks/types.ts';
import type { DmarcEvaluation } from '../checks/dmarc.ts';
import { reply, type SmtpReply } from '../errors.ts';

export type Action = 'tag' | 'defer' | 'reject';

export interface Decision {
  action: Action;
  /** Set for defer and reject. */
  reply?: SmtpReply;
}

/** Keeps only characters that are safe in a reply line (the domain comes from the client). */
function safe(text: string): string {
  return text.replace(/[^A-Za-z0-9.:_@+-]/g, '?').slice(0, 255);
}

function spfReply(outcome: SpfOutcome, action: 'defer' | 'reject', explanationUrl?: string): SmtpReply {
  const permanent = action === 'reject';
  const code = permanent ? 550 : 451;
  const cls = permanent ? '5' : '4';
  const suffix = explanationUrl ? ` ${explanationUrl}` : '';
  const identity = outcome.identity === 'helo' ? `HELO ${safe(outcome.helo)}` : safe(outcome.domain);
  // Every SPF refusal starts its text with "[SPF]" so an admin can grep logs and bounces for it
  // (the tag Debian's Exim SPF ACL used; README "Inbound").
  switch (outcome.result) {
    case 'fail':
      // RFC 7372 §3.2: X.7.23 "SPF validation failed".
      return reply(code, `${cls}.7.23`, `[SPF] ${safe(outcome.clientIp)} is not allowed to send mail from ${identity}${suffix}`);
    case 'temperror':
      // RFC 7372 §3.2: X.7.24 "SPF validation error"; RFC 7208 §8.6 recommends a 4xx.
      return permanent
        ? reply(code, '5.7.24', `[SPF] DNS failure while checking ${identity}${suffix}`)
        : reply(code, '4.7.24', `[SPF] temporary DNS failure while checking ${identity}, try again later${suffix}`);
    case 'permerror':
      // RFC 7208 §8.7: the domain's record is broken; RFC 7372 X.7.24.
      return reply(code, `${cls}.7.24`, `[SPF] ${identity} has an invalid SPF record${suffix}`);
    default:
      // softfail, neutral, none, pass refused only because the operator chose to: X.7.1.
      return reply(code, `${cls}.7.1`, `[SPF] result ${outcome.result} for ${identity} is not accepted here${suffix}`);
  }
}

export function spfDecision(outcome: SpfOutcome, config: Config['inbound']['spf']): Decision {
  const action = config.policy[outcome.result as SpfResultWord] ?? 'tag';
  if (action === 'tag') return { action };
  return { action, reply: spfReply(outcome, action, config.explanationUrl) };
}

/**
 * RFC 5321 §4.5.1: postmaster must always be deliverable; abuse@ likewise by convention
 * (RFC 2142). Entries are local parts (any local domain) or full addresses.
 */
export function isExemptRecipient(address: string, exempt: readonly string[]): boolean {
  const lower = address.toLowerCase();
  const at = lower.lastIndexOf('@');
  const localPart = at === -1 ? lower : lower.slice(0, at);
  return exempt.some((entry) => {
    const wanted = entry.toLowerCase();
    return wanted.includes('@') ? wanted === lower : wanted === localPart;
  });
}

/** RFC 7489 §6.3 p=reject, enforced only when the operator opted in (PRODUCT.md §5). */
export function dmarcDecision(evaluation: DmarcEvaluation | undefined, config: Config['inbound']['dmarc']): Decision {
  if (!config.enforce || !evaluation || evaluation.result !== 'fail' || evaluation.policy !== 'reject') return { action: 'tag' };
  return { action: 'reject', reply: reply(550, '5.7.1', `Message rejected by the DMARC policy of ${safe(evaluation.domain)}`) };
}

// The SPF check (RFC 7208): a thin typed adapter over mailauth's SPF evaluation.
// Owns: choosing the identity (MAIL FROM, postmaster@HELO for the null sender, or HELO), the
// lookup limits and time budget, and mapping mailauth's loose result onto SpfOutcome.
// Must not: decide reject/accept/defer (pipeline/policy.ts does), format header fields
// (pipeline/received-spf.ts does), import node:dns (the resolver is injected), or throw for DNS
// problems (they are temperror).

import { isIP } from 'node:net';
import { spf } from 'mailauth/lib/spf/index.js';
import type { DnsResolve } from '../dns/types.ts';
import type { SpfOutcome, SpfResultWord } from './types.ts';

export interface SpfInput {
  /** The client's address: the socket peer, or the one a trusted peer forwarded. */
  clientIp: string;
  /** The MAIL FROM reverse-path without angle brackets; '' for the null sender. */
  mailFrom: string;
  /** The EHLO/HELO argument as the client sent it. */
  helo: string;
  /** Our host name: the %{r} macro (RFC 7208 §7.3) and the comment's "receiver:" prefix. */
  receiver: string;
}

export interface SpfOptions {
  resolver: DnsResolve;
  /** Overall limit for one evaluation; past it the result is temperror (RFC 7208 §4.6.4). */
  timeBudgetMs?: number;
  identity: 'mailfrom' | 'helo';
}

/** A monotonic millisecond clock, injected so durations are testable. */
export type Clock = () => number;

export const DEFAULT_SPF_TIME_BUDGET_MS = 20_000;

// RFC 7208 §4.6.4: at most 10 terms that cause DNS queries, at most 2 void lookups.
const MAX_DNS_QUERYING_TERMS = 10;
const MAX_VOID_LOOKUPS = 2;

const RESULT_WORDS: ReadonlySet<string> = new Set<SpfResultWord>(['pass', 'fail', 'softfail', 'neutral', 'none', 'temperror', 'permerror']);

/**
 * Evaluates SPF for one identity and reports the result. Never throws: any failure of the
 * evaluation itself (DNS, time budget, an unexpected error in mailauth) is temperror.
 */
export async function checkSpf(input: SpfInput, options: SpfOptions, clock: Clock = () => performance.now()): Promise<SpfOutcome> {
  const started = clock();
  const helo = input.helo;
  // RFC 7208 §2.4: with a null reverse-path the MAIL FROM identity is postmaster@<HELO>;
  // RFC 7208 §2.3: the HELO identity is checked as postmaster@<HELO> too (the <sender> of §4.1).
  const sender = options.identity === 'mailfrom' && input.mailFrom !== '' ? input.mailFrom : `postmaster@${helo}`;
  const base = { identity: options.identity, sender, mailFrom: input.mailFrom, clientIp: input.clientIp, helo };

  // RFC 7208 §2.3: "This SPF check can only be performed when the "HELO" string is a valid,
  // multi-label domain name"; an address literal or a single label gives none (§4.3).
  if (options.identity === 'helo' && !isMultiLabelName(helo)) {
    return {
      ...base,
      result: 'none',
      domain: '',
      comment: `${input.receiver}: HELO ${helo} is not a domain name that SPF can check`,
      durationMs: clock() - started,
    };
  }

  try {
    const result = await spf({
      sender,
      ip: input.clientIp,
      helo,
      mta: input.receiver,
      resolver: options.resolver as Parameters<typeof spf>[0]['resolver'],
      maxResolveCount: MAX_DNS_QUERYING_TERMS,
      maxVoidCount: MAX_VOID_LOOKUPS,
      maxElapsedTime: options.timeBudgetMs ?? DEFAULT_SPF_TIME_BUDGET_MS,
      // Strict mode follows RFC 7208 exactly: the whole record is validated before evaluation
      // (§4.6: a syntax error anywhere is permerror, even after the matching term), void lookups
      // are counted per §4.6.4 for the client's address family only, and target names that are
      // not valid domain names do not match (§4.3/§4.8). The default mode is lenient to be
      // compatible with broken records; sello reports what the RFC says and lets the operator's
      // policy decide (permerror is tagged, not rejected, by default). See the RFC 7208 suite
      // in test/golden/spf/ for the comparison that settled this.
      strict: true,
    });
    const word = result.status.result;
    const outcome: SpfOutcome = {
      ...base,
      clientIp: typeof result['client-ip'] === 'string' && result['client-ip'] ? result['client-ip'] : input.clientIp,
      result: RESULT_WORDS.has(word) ? (word as SpfResultWord) : 'temperror',
      domain: typeof result.domain === 'string' ? result.domain : '',
      comment: typeof result.status.comment === 'string' ? result.status.comment : '',
      durationMs: clock() - started,
    };
    // RFC 7208 §6.2: the explanation only accompanies a fail.
    if (outcome.result === 'fail' && typeof result.explanation === 'string' && result.explanation) {
      outcome.explanation = result.explanation;
    }
    return outcome;
  } catch (error) {
    // mailauth returns its errors as results; this is only a safety net (RFC 7208 §2.6.6:
    // a transient error while performing the check is temperror).
    return {
      ...base,
      result: 'temperror',
      domain: sender.slice(sender.lastIndexOf('@') + 1).toLowerCase(),
      comment: `${input.receiver}: error in processing during lookup of ${sender}: ${error instanceof Error ? error.message : String(error)}`,
      durationMs: clock() - started,
    };
  }
}

/** True for a name of two or more non-empty labels of at most 63 characters (a trailing dot is
 *  allowed), and not an address literal. Finer syntax is left to mailauth, which answers none
 *  for a malformed domain (RFC 7208 §4.3). */
export function isMultiLabelName(name: string): boolean {
  if (name.startsWith('[') || isIP(name) !== 0) return false;
  const labels = name.replace(/\.$/, '').split('.');
  return labels.length >= 2 && labels.every((label) => label.length >= 1 && label.length <= 63 && !/\s/.test(label));
}

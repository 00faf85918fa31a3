// ARC verification (RFC 8617): the strict tag-list reading of every ARC-Seal and ARC-Message-
// Signature (tag-list.ts), then mailauth's arc() over the chain. Sealing is opt-in and not done
// here. Must not: decide anything.

import { arc } from 'mailauth/lib/arc/index.js';
import type { ParsedHeaderRow } from 'mailauth/lib/tools.js';
import type { DnsResolve } from '../dns/types.ts';
import { readTagList } from './tag-list.ts';

export interface ArcVerification {
  /** none, pass, fail (RFC 8617 §4.4 cv values as results). */
  result: string;
  /** "arc=pass (i=2 spf=pass dkim=pass dkdomain=…)" as mailauth formats it. */
  info: string;
  /** mailauth's result object, which DMARC uses to consider ARC (opaque here). */
  raw: unknown;
}

/** What verifyDkim hands over: mailauth's chain data and the header fields it was read from. */
export interface ArcChainInput {
  /** mailauth's ARC chain data (opaque here). */
  mailauth: unknown;
  /** Every header field of the message, as mailauth parsed them. */
  headerFields: readonly ParsedHeaderRow[];
}

// RFC 8617 §4.1.3 (ARC-Seal: a, b, cv, d, i, s; t is only recommended) and §4.1.2 (ARC-Message-
// Signature: the tags RFC 6376 §3.5 requires of a DKIM-Signature, a, b, bh, d, h, s, without v=,
// and i= as the instance of §4.2.1). Names are case-sensitive (RFC 6376 §3.2): "S=" is not "s=".
const REQUIRED_TAGS: Record<string, { short: string; tags: readonly string[] }> = {
  'arc-seal': { short: 'as', tags: ['i', 'a', 'b', 'cv', 'd', 's'] },
  'arc-message-signature': { short: 'ams', tags: ['i', 'a', 'b', 'bh', 'd', 'h', 's'] },
};

/**
 * Why the ARC-Seal and ARC-Message-Signature fields of the message do not all read as strict
 * tag-lists with their required tags, or undefined when they do. RFC 8617 §4.1.2 and §4.1.3 give
 * both fields the tag-list syntax of RFC 6376 §3.2, whose violations make "the entire tag-list
 * invalid"; a set with an invalid field is not a valid ARC Set, so the chain fails (RFC 8617 §5.2
 * step 3). mailauth reads these fields leniently (an empty tag, a duplicate name, "S=" for "s="
 * and a malformed name all pass). Its strict mode would catch them, but it also drops the
 * relaxed/relaxed retry for an ARC-Message-Signature without c= that chains made under the ARC
 * drafts need (the suite's ams_fields_c_na), hence this check in front of the lenient mode.
 */
export function arcTagListProblem(headerFields: readonly ParsedHeaderRow[]): string | undefined {
  for (const field of headerFields) {
    const required = REQUIRED_TAGS[field.key];
    if (!required) continue;
    const line = field.line.toString('binary');
    const reading = readTagList(line.slice(line.indexOf(':') + 1));
    if (!reading.wellFormed) return `${required.short} tag-list: ${reading.problem}`;
    const instance = /^[0-9]{1,2}$/.test(reading.tags.get('i') ?? '') ? `i=${Number(reading.tags.get('i'))} ` : '';
    const missing = required.tags.find((tag) => !reading.tags.has(tag));
    if (missing !== undefined) return `${instance}${required.short} tag-list: missing ${missing}=`;
  }
  return undefined;
}

export async function verifyArc(arcChain: ArcChainInput, resolver: DnsResolve, clientIp: string): Promise<ArcVerification> {
  const problem = arcTagListProblem(arcChain.headerFields);
  if (problem !== undefined) {
    // The same shape mailauth gives a failed chain, so DMARC reads it the same way.
    const info = `arc=fail (${problem})`;
    return { result: 'fail', info, raw: { status: { result: 'fail', comment: problem }, info } };
  }
  const raw = (await arc(arcChain.mailauth as never, { resolver: resolver as never, ip: clientIp } as never)) as { status?: { result?: string }; info?: string };
  return { result: raw?.status?.result ?? 'none', info: raw?.info ?? 'arc=none', raw };
}

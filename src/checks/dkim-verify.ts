// DKIM verification of an inbound message: a thin typed adapter over mailauth's dkimVerify.
// Owns: turning mailauth's loose result into DkimVerification. Must not: decide anything, or
// verify SPF (it is evaluated once, at MAIL FROM, by checks/spf.ts).

import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import type { ParsedHeaderRow } from 'mailauth/lib/tools.js';
import type { DnsResolve } from '../dns/types.ts';
import type { ArcChainInput } from './arc.ts';

export interface DkimSignatureResult {
  domain: string;
  selector: string;
  algorithm: string;
  /** RFC 8601 §2.7.1: pass, fail, neutral, policy, temperror, permerror (none: no signature). */
  result: string;
  /** The Authentication-Results resinfo mailauth formatted ("dkim=pass header.i=@d header.s=…"). */
  info: string;
}

export interface DkimVerification {
  signatures: DkimSignatureResult[];
  /** Author domains from the From field(s), for DMARC. */
  headerFrom: string[];
  fromFields: number;
  /** mailauth's ARC chain data and the parsed header fields, handed to checks/arc.ts as they are. */
  arcChain: ArcChainInput;
}

/**
 * The key record problems mailauth reports as neutral, by its comment. RFC 6376 §6.1.2 makes each
 * a PERMFAIL: no record ("no key for signature"), a revoked or unusable key, an unknown version or
 * key type, a hash or service the record does not allow. RFC 8601 §2.7.1's permerror ("an error
 * that is unrecoverable … a later attempt is unlikely to produce a final result") is what OpenDKIM
 * and rspamd write for them; neutral stays for signatures sello could not process at all.
 */
const KEY_RECORD_PERMFAILS = new Set(['no key', 'invalid public key', 'unknown key version', 'unknown key type', 'inappropriate hash algorithm', 'key not for email']);

/**
 * mailauth's result words where RFC 6376 says otherwise; DMARC treats all of them as not passing.
 * A body hash mismatch is neutral there: RFC 6376 §6.1.3 makes it a PERMFAIL ("body hash did not
 * verify") and RFC 8601 §2.7.1 reports a signature that failed its verification test as fail, as
 * Exim and OpenDKIM do. A key record problem is permerror (KEY_RECORD_PERMFAILS).
 */
function remapResult(result: string, comment: string | undefined, info: string): { result: string; info: string } {
  if (result !== 'neutral') return { result, info };
  if (/body hash did not verify/i.test(comment ?? '')) return { result: 'fail', info: info.replace(/^dkim=neutral\b/, 'dkim=fail') };
  if (KEY_RECORD_PERMFAILS.has(comment ?? '')) return { result: 'permerror', info: info.replace(/^dkim=neutral\b/, 'dkim=permerror') };
  return { result, info };
}

export async function verifyDkim(message: Buffer, resolver: DnsResolve, now?: Date): Promise<DkimVerification> {
  const result = await dkimVerify(message, { resolver: resolver as never, ...(now ? { curTime: now } : {}) });
  return {
    signatures: (result.results ?? [])
      .filter((entry) => entry.signingDomain)
      .map((entry) => ({
        domain: entry.signingDomain ?? '',
        selector: entry.selector ?? '',
        algorithm: entry.algo ?? '',
        ...remapResult(entry.status?.result ?? 'none', entry.status?.comment ?? undefined, entry.info),
      })),
    headerFrom: result.headerFrom ?? [],
    fromFields: result.fromFields ?? 0,
    arcChain: {
      mailauth: (result as unknown as { arc?: unknown }).arc,
      headerFields: (result as unknown as { headers?: { parsed?: ParsedHeaderRow[] } }).headers?.parsed ?? [],
    },
  };
}

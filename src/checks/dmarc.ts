// DMARC evaluation (RFC 7489) from the SPF and DKIM results already computed: a thin typed
// adapter over mailauth's evaluateDmarc. Must not: enforce (pipeline/policy.ts does, opt-in).

import { evaluateDmarc } from 'mailauth/lib/dmarc/index.js';
import type { DnsResolve } from '../dns/types.ts';
import type { ArcVerification } from './arc.ts';
import type { DkimVerification } from './dkim-verify.ts';
import type { SpfOutcome } from './types.ts';

export interface DmarcEvaluation {
  /** pass, fail, none, temperror, permerror */
  result: string;
  /** The published policy that applies (p=, or sp= for a subdomain): none, quarantine, reject. */
  policy: string;
  /** "dmarc=fail (p=REJECT sp=REJECT dis=REJECT) header.from=example.com" as mailauth formats it. */
  info: string;
  domain: string;
}

export async function evaluateDmarcPolicy(
  dkim: DkimVerification,
  spf: SpfOutcome | undefined,
  arc: ArcVerification | undefined,
  resolver: DnsResolve,
): Promise<DmarcEvaluation | undefined> {
  if (!dkim.headerFrom.length) return undefined;
  const { response } = await evaluateDmarc({
    headerFrom: dkim.headerFrom,
    fromFields: dkim.fromFields,
    // RFC 7489 §4.2: SPF counts only for the MAIL FROM identity with a pass.
    spfDomains: spf && spf.identity === 'mailfrom' && spf.result === 'pass' ? [spf.domain] : [],
    dkimDomains: dkim.signatures.filter((signature) => signature.result === 'pass').map((signature) => ({ domain: signature.domain })),
    ...(arc ? { arcResult: arc.raw as never } : {}),
    resolver: resolver as never,
  });
  if (!response) return undefined;
  return {
    result: response.status?.result ?? 'none',
    policy: (response.policy ?? 'none').toLowerCase(),
    info: response.info ?? `dmarc=${response.status?.result ?? 'none'}`,
    domain: response.domain ?? '',
  };
}

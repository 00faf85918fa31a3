// ARC verification (RFC 8617): a thin typed adapter over mailauth's arc(). Sealing is opt-in
// and not done here. Must not: decide anything.

import { arc } from 'mailauth/lib/arc/index.js';
import type { DnsResolve } from '../dns/types.ts';

export interface ArcVerification {
  /** none, pass, fail (RFC 8617 §4.4 cv values as results). */
  result: string;
  /** "arc=pass (i=2 spf=pass dkim=pass dkdomain=…)" as mailauth formats it. */
  info: string;
  /** mailauth's result object, which DMARC uses to consider ARC (opaque here). */
  raw: unknown;
}

export async function verifyArc(arcChain: unknown, resolver: DnsResolve, clientIp: string): Promise<ArcVerification> {
  const raw = (await arc(arcChain as never, { resolver: resolver as never, ip: clientIp } as never)) as { status?: { result?: string }; info?: string };
  return { result: raw?.status?.result ?? 'none', info: raw?.info ?? 'arc=none', raw };
}

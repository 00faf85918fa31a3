// Reading a server's answer to one question: rcode → result or error code, the CNAME chain
// inside the answer section, the records in node:dns/promises resolve() shapes, and how long
// the result may be cached (record TTLs, or RFC 2308 §5 for negative answers).
// Must not: do I/O, retry, clamp TTLs to policy or touch the cache (resolver.ts does).

import type { Answer, DecodedPacket } from 'dns-packet';
import type { DnsErrorCode } from './types.ts';

/** The rrtypes the resolver answers; mailauth asks for TXT, A, AAAA, MX and PTR. */
export const SUPPORTED_TYPES = ['A', 'AAAA', 'CNAME', 'MX', 'NS', 'PTR', 'TXT'] as const;
export type SupportedType = (typeof SUPPORTED_TYPES)[number];

export type MxResult = { exchange: string; priority: number };
/** string[][] for TXT, MxResult[] for MX, string[] for the others (node:dns/promises shapes). */
export type ResolvedRecords = string[][] | MxResult[] | string[];

export type Interpretation =
  /** Records of the asked type; cacheable for ttlSeconds (the smallest TTL along the way). */
  | { kind: 'records'; records: ResolvedRecords; ttlSeconds: number }
  /** A definitive "no": cacheable for ttlSeconds when the authority section allows it. */
  | { kind: 'negative'; code: 'ENOTFOUND' | 'ENODATA'; ttlSeconds: number | undefined }
  /** This server could not answer; another server may. Never cached. */
  | { kind: 'failure'; code: Extract<DnsErrorCode, 'ESERVFAIL' | 'EREFUSED' | 'EBADRESP'> };

// RFC 1035 §4.1.1 RCODE values.
const RCODE_NOERROR = 0;
const RCODE_SERVFAIL = 2;
const RCODE_NXDOMAIN = 3;
const RCODE_REFUSED = 5;
// Recursive servers cap chains well below this (BIND: 16 hops); longer means a loop or abuse.
const MAX_CNAME_CHAIN = 16;

export function normalizeName(name: string): string {
  return name.replace(/\.$/, '').toLowerCase();
}

function isInternet(record: Answer): boolean {
  return !('class' in record) || record.class === undefined || record.class === 'IN';
}

function ttlOf(record: Answer): number {
  return 'ttl' in record && typeof record.ttl === 'number' ? record.ttl : 0;
}

export function interpretAnswer(packet: DecodedPacket, questionName: string, questionType: SupportedType): Interpretation {
  const rcode = (packet.flags ?? 0) & 0xf;
  if (rcode === RCODE_REFUSED) return { kind: 'failure', code: 'EREFUSED' };
  // SERVFAIL, FORMERR, NOTIMP and anything unknown: this server gave no usable answer.
  if (rcode !== RCODE_NOERROR && rcode !== RCODE_NXDOMAIN) return { kind: 'failure', code: 'ESERVFAIL' };

  const answers = (packet.answers ?? []).filter(isInternet);
  // RFC 1034 §3.6.2 / §4.3.2: a recursive server returns the alias chain followed by the target's
  // records; the records that count are those owned by the chain's last name. A CNAME question
  // asks for the alias itself, so it is not followed.
  let owner = normalizeName(questionName);
  let ttlSeconds = Number.POSITIVE_INFINITY;
  if (questionType !== 'CNAME') {
    const visited = new Set([owner]);
    for (;;) {
      const alias = answers.find((record) => record.type === 'CNAME' && normalizeName(record.name) === owner);
      if (!alias || alias.type !== 'CNAME') break;
      ttlSeconds = Math.min(ttlSeconds, ttlOf(alias));
      owner = normalizeName(alias.data);
      // A loop or an absurd chain is what a recursive server reports as SERVFAIL.
      if (visited.has(owner) || visited.size > MAX_CNAME_CHAIN) return { kind: 'failure', code: 'ESERVFAIL' };
      visited.add(owner);
    }
  }

  if (rcode === RCODE_NXDOMAIN) {
    // RFC 6604 §3: with a chain, NXDOMAIN describes the last name; either way the name asked is void.
    return { kind: 'negative', code: 'ENOTFOUND', ttlSeconds: negativeTtl(packet, ttlSeconds) };
  }

  const matching = answers.filter((record) => record.type === questionType && normalizeName(record.name) === owner);
  if (matching.length === 0) {
    // RFC 2308 §2.2: NOERROR without the asked type is NODATA (the name exists).
    return { kind: 'negative', code: 'ENODATA', ttlSeconds: negativeTtl(packet, ttlSeconds) };
  }
  for (const record of matching) ttlSeconds = Math.min(ttlSeconds, ttlOf(record));
  return { kind: 'records', records: shapeRecords(matching, questionType), ttlSeconds };
}

/**
 * RFC 2308 §5: a negative answer may be cached for the smaller of the SOA record's TTL and its
 * MINIMUM field, taken from the authority section; without an SOA it "SHOULD NOT be cached"
 * (undefined). The TTLs of any CNAMEs followed bound it too.
 */
function negativeTtl(packet: DecodedPacket, chainTtl: number): number | undefined {
  const soa = (packet.authorities ?? []).find((record) => record.type === 'SOA' && isInternet(record));
  if (!soa || soa.type !== 'SOA') return undefined;
  return Math.min(chainTtl, ttlOf(soa), soa.data.minimum ?? 0);
}

function shapeRecords(records: Answer[], type: SupportedType): ResolvedRecords {
  switch (type) {
    case 'TXT':
      // RFC 1035 §3.3.14: a TXT record is one or more character-strings; node:dns returns each
      // record as the array of its strings decoded as UTF-8, and mailauth joins them itself
      // (RFC 7208 §3.3, RFC 6376 §3.6.2.2).
      return records.map((record) => {
        if (record.type !== 'TXT') return [];
        const data = record.data;
        const parts = Array.isArray(data) ? data : [data];
        return parts.map((part) => (typeof part === 'string' ? part : part.toString('utf8')));
      });
    case 'MX':
      return records.map((record) => {
        if (record.type !== 'MX') return { exchange: '', priority: 0 };
        // RFC 7505 §3: the null MX's exchange is the root, which node:dns reports as ''.
        const exchange = record.data.exchange === '.' ? '' : record.data.exchange.replace(/\.$/, '');
        return { exchange, priority: record.data.preference ?? 0 };
      });
    default:
      return records.map((record) => ('data' in record && typeof record.data === 'string' ? record.data.replace(/(.)\.$/, '$1') : ''));
  }
}

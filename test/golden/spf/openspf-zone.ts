// Serves an OpenSPF suite scenario's `zonedata` as a DnsResolve (mailauth's resolver shape),
// the way the suite's reference driver (pyspf's testspf.py) does.
// Owns: the zonedata → answers mapping. Must not: touch the network or node:dns.
//
// The mapping:
// - Names are case-insensitive, with or without a trailing dot. A name absent from the zone is
//   NXDOMAIN (ENOTFOUND) unless some zone name lies below it (an empty non-terminal, RFC 8020),
//   which like a present name without records of the asked type is NODATA (ENODATA).
// - TXT: a string is one record of one character-string; a list is one record of several
//   character-strings (glued together by the SPF evaluator, RFC 7208 §3.3); `TXT: NONE` declares
//   that the name has no TXT record.
// - SPF (type 99): RFC 7208 §3.1 / §14.1 removed the type, so nothing asks for it. As in the
//   suite's driver, a name's SPF records are served as TXT records when the name lists no TXT
//   entry at all (not even NONE): the suite writes most policies as SPF and relies on this
//   "auto-magic duplication"; the "Selecting records" scenarios check that explicit TXT wins.
// - A, AAAA, PTR, CNAME: one value per entry; MX: [priority, exchange]. Trailing dots are
//   dropped from returned names, like node:dns does.
// - CNAME: followed for every other type; a loop answers SERVFAIL (ESERVFAIL).
// - TIMEOUT: a query for a type of which no record is listed before the TIMEOUT entry fails with
//   ETIMEOUT (the driver's rule; the generated TXT records count as listed after everything).

import type { DnsResolve } from '../../../src/dns/types.ts';
import { dnsError } from '../../../src/dns/types.ts';

export type ZoneEntry = 'TIMEOUT' | Record<string, unknown>;
export type ZoneData = Record<string, ZoneEntry[]>;

type Entry = { type: 'TIMEOUT' } | { type: string; value: unknown };

const MAX_CNAME_CHAIN = 8;

function normalizeName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

/** The entries of one name in order, SPF records appended as TXT where the driver does so. */
function expand(entries: ZoneEntry[]): Entry[] {
  const out: Entry[] = [];
  const generated: Entry[] = [];
  let hasTxt = false;
  for (const entry of entries) {
    if (entry === 'TIMEOUT') {
      out.push({ type: 'TIMEOUT' });
      continue;
    }
    for (const [type, value] of Object.entries(entry)) {
      if (type === 'TXT') hasTxt = true;
      if (type === 'SPF') generated.push({ type: 'TXT', value });
      if (value === 'NONE') continue;
      out.push({ type, value });
    }
  }
  return hasTxt ? out : [...out, ...generated];
}

function txtRecord(value: unknown): string[] {
  if (Array.isArray(value)) return value.map(String);
  return [String(value)];
}

function stripDot(name: unknown): string {
  return String(name).replace(/\.$/, '');
}

export function zoneResolver(zonedata: ZoneData): DnsResolve & { queries: { name: string; type: string }[] } {
  const zone = new Map<string, Entry[]>();
  for (const [name, entries] of Object.entries(zonedata ?? {})) zone.set(normalizeName(name), expand(entries ?? []));
  const queries: { name: string; type: string }[] = [];

  const exists = (name: string): boolean => zone.has(name) || [...zone.keys()].some((other) => other.endsWith(`.${name}`));

  const answer = (qname: string, rrtype: string, hop: number): unknown[] => {
    const name = normalizeName(qname);
    const entries = zone.get(name);
    if (!entries) throw dnsError(exists(name) ? 'ENODATA' : 'ENOTFOUND', qname, rrtype);
    const records: unknown[] = [];
    for (const entry of entries) {
      if (entry.type === 'TIMEOUT') {
        if (records.length === 0) throw dnsError('ETIMEOUT', qname, rrtype);
        break;
      }
      if (!('value' in entry)) continue;
      if (entry.type === 'CNAME' && rrtype !== 'CNAME') {
        if (hop >= MAX_CNAME_CHAIN) throw dnsError('ESERVFAIL', qname, rrtype);
        return answer(stripDot(entry.value), rrtype, hop + 1);
      }
      if (entry.type !== rrtype) continue;
      switch (rrtype) {
        case 'TXT':
          records.push(txtRecord(entry.value));
          break;
        case 'MX': {
          const [priority, exchange] = entry.value as [number, string];
          records.push({ priority: Number(priority), exchange: stripDot(exchange) });
          break;
        }
        case 'PTR':
        case 'CNAME':
          records.push(stripDot(entry.value));
          break;
        default:
          records.push(String(entry.value));
      }
    }
    if (records.length === 0) throw dnsError('ENODATA', qname, rrtype);
    return records;
  };

  const resolve = async (name: string, rrtype: string): Promise<unknown> => {
    queries.push({ name, type: rrtype });
    return answer(name, rrtype, 0);
  };
  return Object.assign(resolve, { queries });
}

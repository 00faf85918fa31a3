// The DNS contract every check uses (mailauth's resolver shape), so checks never import node:dns
// and tests inject a zone. Owns: the types. Must not: hold behaviour.

/**
 * mailauth's resolver: like node:dns/promises resolve(name, rrtype). Resolves TXT → string[][]
 * (character-strings of each record), A/AAAA/PTR/NS/CNAME → string[], MX → {exchange, priority}[].
 * Rejects with an Error whose `code` is ENOTFOUND (NXDOMAIN), ENODATA (name exists, no records of
 * that type), ESERVFAIL, EREFUSED or ETIMEOUT — mailauth maps the first two to void lookups and the
 * rest to temperror (RFC 7208 §5, §4.6.4).
 */
export type DnsResolve = (name: string, rrtype: string) => Promise<unknown>;

export type DnsErrorCode = 'ENOTFOUND' | 'ENODATA' | 'ESERVFAIL' | 'EREFUSED' | 'ETIMEOUT' | 'EBADRESP';

export function dnsError(code: DnsErrorCode, name: string, rrtype: string): Error & { code: DnsErrorCode } {
  return Object.assign(new Error(`${code} ${rrtype} ${name}`), { code });
}

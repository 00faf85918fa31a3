// sello's stub resolver: mailauth's `resolver` (the DnsResolve contract in types.ts) over the
// configured recursive servers, with per-attempt timeouts, rounds over the servers, a bounded
// TTL-honouring cache and one shared request per identical question in flight.
// Owns: server order and retries, the final error code, caching policy, statistics.
// Must not: touch node:dns or the host's resolver library (it reads /etc/resolv.conf only when
// no servers are configured), recurse itself, or throw anything but dnsError()-shaped codes.

import { readFileSync } from 'node:fs';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Question } from 'dns-packet';
import { interpretAnswer, normalizeName, SUPPORTED_TYPES, type Interpretation, type ResolvedRecords, type SupportedType } from './answer.ts';
import { ExpiringCache } from './cache.ts';
import { exchange, type DnsServerAddress } from './transport.ts';
import { dnsError, type DnsErrorCode, type DnsResolve } from './types.ts';

export type { DnsServerAddress } from './transport.ts';

export type DnsResolverOptions = {
  /** Recursive servers, asked in order; empty → systemServers(). */
  servers: DnsServerAddress[];
  /** Budget of one attempt at one server (UDP and any TCP retry together). */
  timeoutMs: number;
  cache: {
    /** At most this many answers are kept (least recently used go first); 0 disables the cache. */
    maxEntries: number;
    /** No answer is kept longer than this, whatever its TTL. */
    maxTtlSeconds: number;
    /** Positive answers are kept at least this long (default 0: the record TTL rules). */
    minTtlSeconds?: number;
  };
  /** Rounds over the server list (default 2). */
  attempts?: number;
  /** Clock in milliseconds for cache expiry (default: monotonic performance.now()). */
  now?: () => number;
  /** Told how long each lookup that went to the servers took (not cache hits or joins), in ms. */
  onLookup?: (durationMs: number) => void;
};

export type DnsResolverStats = {
  /** resolve() calls. */
  lookups: number;
  /** Lookups answered from the cache (positive or negative). */
  cacheHits: number;
  /** Lookups that joined an identical question already in flight. */
  inFlightJoins: number;
  /** Messages sent to servers, UDP and TCP. */
  queries: number;
  /** Of those, over TCP (after a truncated UDP answer). */
  tcpQueries: number;
  /** Attempts at one server that got no answer in time. */
  timeouts: number;
  /** Lookups that ended in ETIMEOUT, ESERVFAIL, EREFUSED or EBADRESP. */
  failures: number;
  /** Answers currently cached. */
  cacheSize: number;
};

export interface DnsResolver {
  /** Bound: pass it as mailauth's `resolver` option as it is. */
  readonly resolve: DnsResolve;
  stats(): DnsResolverStats;
  /** Forget every cached answer (questions in flight are not stored when they land). */
  clear(): void;
}

type Cached = { kind: 'records'; records: ResolvedRecords } | { kind: 'negative'; code: 'ENOTFOUND' | 'ENODATA' };
type Outcome = Cached | { kind: 'failure'; code: DnsErrorCode };

const DEFAULT_ATTEMPTS = 2;
const DNS_PORT = 53;
// resolv.conf(5): the resolver library uses at most MAXNS (3) nameserver lines.
const MAX_SYSTEM_SERVERS = 3;

export function createResolver(options: DnsResolverOptions): DnsResolver {
  const servers = options.servers.length > 0 ? options.servers.map((server) => ({ ...server })) : systemServers();
  const attempts = options.attempts ?? DEFAULT_ATTEMPTS;
  const { timeoutMs } = options;
  const minTtlSeconds = options.cache.minTtlSeconds ?? 0;
  const { maxTtlSeconds, maxEntries } = options.cache;
  if (!Number.isInteger(attempts) || attempts < 1) throw new RangeError(`dns: attempts must be a positive integer, got ${attempts}`);
  if (!(timeoutMs > 0)) throw new RangeError(`dns: timeoutMs must be positive, got ${timeoutMs}`);
  if (!Number.isInteger(maxEntries) || maxEntries < 0) throw new RangeError(`dns: cache.maxEntries must be a non-negative integer, got ${maxEntries}`);
  if (!(maxTtlSeconds >= 0) || !(minTtlSeconds >= 0)) throw new RangeError('dns: cache TTL bounds must be non-negative');
  for (const server of servers) {
    if (!Number.isInteger(server.port) || server.port < 1 || server.port > 65535) {
      throw new RangeError(`dns: bad port for server ${server.host}: ${server.port}`);
    }
  }

  const now = options.now ?? (() => performance.now());
  const cache = new ExpiringCache<Cached>(maxEntries, now);
  const inFlight = new Map<string, Promise<Outcome>>();
  // Bumped by clear(): an answer that lands afterwards belongs to the forgotten generation.
  let generation = 0;
  const counters = { lookups: 0, cacheHits: 0, inFlightJoins: 0, queries: 0, tcpQueries: 0, timeouts: 0, failures: 0 };

  const onSend = (transport: 'udp' | 'tcp'): void => {
    counters.queries++;
    if (transport === 'tcp') counters.tcpQueries++;
  };

  async function askServers(name: string, type: SupportedType): Promise<Interpretation | { kind: 'failure'; code: DnsErrorCode }> {
    const question: Question = { name, type, class: 'IN' };
    // Servers that answered SERVFAIL/REFUSED are not asked again for this question: they did
    // answer, and would say the same. Silent or unreachable servers get another round.
    const answeredBadly = new Set<number>();
    let lastFailure: DnsErrorCode | undefined;
    for (let round = 0; round < attempts && answeredBadly.size < servers.length; round++) {
      for (const [index, server] of servers.entries()) {
        if (answeredBadly.has(index)) continue;
        const outcome = await exchange(server, question, { timeoutMs, onSend });
        if (outcome.kind === 'timeout') {
          counters.timeouts++;
          continue;
        }
        if (outcome.kind === 'unreachable') continue;
        if (outcome.kind === 'bad-response') {
          lastFailure = 'EBADRESP';
          answeredBadly.add(index);
          continue;
        }
        const interpretation: Interpretation = interpretAnswer(outcome.packet, name, type);
        if (interpretation.kind === 'failure') {
          // SERVFAIL: try the next server first (RFC 1035 §7.2); only when all fail is it ours.
          lastFailure = interpretation.code;
          answeredBadly.add(index);
          continue;
        }
        return interpretation;
      }
    }
    // No server answered usefully. A server's own failure is more telling than silence, and
    // "nobody answered" (silence, unreachable) is ETIMEOUT. Failures are never cached.
    counters.failures++;
    return { kind: 'failure', code: lastFailure ?? 'ETIMEOUT' };
  }

  function store(key: string, interpretation: Exclude<Interpretation, { kind: 'failure' }>): void {
    if (interpretation.kind === 'records') {
      // Positive answers: the smallest TTL along the chain, clamped to the operator's bounds.
      const ttl = Math.min(Math.max(interpretation.ttlSeconds, minTtlSeconds), maxTtlSeconds);
      cache.set(key, { kind: 'records', records: interpretation.records }, ttl * 1000);
      return;
    }
    // RFC 2308 §5: negative answers only with an SOA to take the TTL from (never raised by
    // minTtlSeconds: a floor would hide a newly published record longer than its owner asked).
    if (interpretation.ttlSeconds === undefined) return;
    const ttl = Math.min(interpretation.ttlSeconds, maxTtlSeconds);
    cache.set(key, { kind: 'negative', code: interpretation.code }, ttl * 1000);
  }

  function deliver(outcome: Outcome, name: string, type: string): ResolvedRecords {
    // Each caller gets its own copy and its own Error: mailauth annotates errors (spfResult) and
    // may sort or mutate result arrays.
    if (outcome.kind === 'records') return structuredClone(outcome.records);
    throw dnsError(outcome.code, name, type);
  }

  async function lookup(key: string, name: string, type: SupportedType): Promise<Outcome> {
    const started = generation;
    const startedAt = now();
    const result = await askServers(name, type);
    options.onLookup?.(now() - startedAt);
    if (result.kind === 'failure') return result;
    if (started === generation) store(key, result);
    return result.kind === 'records' ? { kind: 'records', records: result.records } : { kind: 'negative', code: result.code };
  }

  const resolve: DnsResolve = async (name: string, rrtype: string) => {
    counters.lookups++;
    const type = String(rrtype).toUpperCase();
    if (!isSupportedType(type)) {
      throw Object.assign(new TypeError(`dns: unsupported rrtype ${String(rrtype)}`), { code: 'ERR_INVALID_ARG_VALUE' });
    }
    const normalized = normalizeName(String(name));
    if (!isValidName(normalized)) throw badName(String(name), type);
    const key = `${type} ${normalized}`;

    const cached = cache.get(key);
    if (cached) {
      counters.cacheHits++;
      return deliver(cached, name, type);
    }
    let shared = inFlight.get(key);
    if (shared) {
      counters.inFlightJoins++;
    } else {
      shared = lookup(key, normalized, type).finally(() => inFlight.delete(key));
      inFlight.set(key, shared);
    }
    return deliver(await shared, name, type);
  };

  return {
    resolve,
    stats: () => ({ ...counters, cacheSize: cache.size }),
    clear: () => {
      generation++;
      cache.clear();
    },
  };
}

function isSupportedType(type: string): type is SupportedType {
  return (SUPPORTED_TYPES as readonly string[]).includes(type);
}

/** RFC 1035 §2.3.4 (and §3.1): labels of 1–63 octets, at most 255 octets on the wire. */
function isValidName(name: string): boolean {
  if (name.length === 0) return false;
  let wireLength = 1;
  for (const label of name.split('.')) {
    const octets = Buffer.byteLength(label);
    if (octets < 1 || octets > 63) return false;
    wireLength += 1 + octets;
  }
  return wireLength <= 255;
}

/** Not in DnsErrorCode: mailauth maps EBADNAME to permerror ("Invalid domain"), as node:dns does. */
function badName(name: string, rrtype: string): Error & { code: 'EBADNAME' } {
  return Object.assign(new Error(`EBADNAME ${rrtype} ${name}`), { code: 'EBADNAME' as const });
}

/** The `nameserver` lines of a resolv.conf text (resolv.conf(5)), port 53, at most three. */
export function parseResolvConf(text: string): DnsServerAddress[] {
  const servers: DnsServerAddress[] = [];
  for (const line of text.split(/\r?\n/)) {
    const [keyword, address] = line.replace(/[#;].*$/, '').trim().split(/\s+/);
    if (keyword !== 'nameserver' || address === undefined) continue;
    if (net.isIP(address.replace(/%.*$/, '')) === 0) continue;
    servers.push({ host: address, port: DNS_PORT });
    if (servers.length === MAX_SYSTEM_SERVERS) break;
  }
  return servers;
}

/**
 * The host's recursive servers from /etc/resolv.conf. resolv.conf(5): with no nameserver line
 * (or no file) the local machine's server is used, so that is the fallback here too.
 */
export function systemServers(path = '/etc/resolv.conf'): DnsServerAddress[] {
  let text = '';
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    // no file: the documented default below
  }
  const servers = parseResolvConf(text);
  return servers.length > 0 ? servers : [{ host: '127.0.0.1', port: DNS_PORT }];
}

// The resolver (src/dns/resolver.ts) against the real test DNS server on loopback: shapes, error
// codes, failover, TCP fallback, CNAME chains, cache, in-flight sharing, and mailauth's spf().
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { DNSResolver } from 'mailauth';
import { spf } from 'mailauth/lib/spf/index.js';
import { createResolver, parseResolvConf, systemServers, type DnsResolverOptions } from '../../../src/dns/resolver.ts';
import { startDnsServer, type DnsServer, type Zone } from '../../helpers/dns-server.ts';
import { deadUdpPort, responseTo, startScriptedServer } from './scripted-server.ts';

const longSpf = `v=spf1 ${Array.from({ length: 30 }, (_, index) => `ip4:192.0.2.${index}`).join(' ')} -all`;

const zone: Zone = {
  'long.example': { TXT: [longSpf] },
  'split.example': { TXT: [['v=spf1 ', 'ip4:127.0.0.1 ', '-all'], 'second record'] },
  'host.example': { A: ['192.0.2.1', '192.0.2.2'], AAAA: ['2001:db8::1'] },
  'mail.example': { MX: [{ exchange: 'mx1.mail.example.', priority: 10 }, { exchange: 'mx2.mail.example', priority: 20 }] },
  '1.2.0.192.in-addr.arpa': { PTR: ['host.example.'] },
  'exists.example': { A: ['192.0.2.9'] },
  'alias1.example': { CNAME: 'alias2.example' },
  'alias2.example': { CNAME: 'target.example' },
  'target.example': { A: ['192.0.2.77'], TXT: ['at the target'] },
  'big.example': { TXT: Array.from({ length: 12 }, (_, index) => `${index}-${'x'.repeat(200)}`) },
  'broken.example': { A: ['192.0.2.3'], fault: 'servfail' },
  'ttl.example': { A: ['192.0.2.10'], ttl: 60 },
  'long-ttl.example': { A: ['192.0.2.11'], ttl: 86400 },
  'zero-ttl.example': { A: ['192.0.2.12'], ttl: 0 },
  'a.example': { A: ['192.0.2.21'] },
  'b.example': { A: ['192.0.2.22'] },
  'c.example': { A: ['192.0.2.23'] },
  'example.com': { TXT: ['v=spf1 ip4:127.0.0.1 -all'] },
};

let server: DnsServer;
before(async () => {
  server = await startDnsServer(zone);
});
after(async () => {
  await server.close();
});

type Clock = { now: () => number; advance: (seconds: number) => void };
function manualClock(): Clock {
  let milliseconds = 1_000_000;
  return { now: () => milliseconds, advance: (seconds) => (milliseconds += seconds * 1000) };
}

function resolverFor(overrides: Partial<DnsResolverOptions> = {}) {
  return createResolver({
    servers: [{ host: server.host, port: server.port }],
    timeoutMs: 500,
    cache: { maxEntries: 100, maxTtlSeconds: 3600 },
    ...overrides,
  });
}

function queriesFor(name: string, type?: string): number {
  return server.queries.filter((query) => query.name === name && (type === undefined || query.type === type)).length;
}

async function rejectsWithCode(promise: Promise<unknown>, code: string): Promise<Error> {
  let caught: unknown;
  await promise.then(
    (value) => assert.fail(`expected ${code}, resolved with ${JSON.stringify(value)}`),
    (error: unknown) => (caught = error),
  );
  assert.ok(caught instanceof Error);
  assert.equal((caught as Error & { code?: string }).code, code);
  return caught;
}

test('TXT: each record is the array of its character-strings; a >255-octet string arrives split', async () => {
  const resolver = resolverFor();
  const long = (await resolver.resolve('long.example', 'TXT')) as string[][];
  assert.equal(long.length, 1);
  assert.deepEqual(long[0]?.map((part) => part.length), [255, longSpf.length - 255]);
  assert.equal(long[0]?.join(''), longSpf);
  const split = (await resolver.resolve('split.example', 'TXT')) as string[][];
  assert.deepEqual(
    split.sort((x, y) => x.length - y.length),
    [['second record'], ['v=spf1 ', 'ip4:127.0.0.1 ', '-all']],
  );
});

test('A, AAAA, MX (exchange without the trailing dot), PTR in node:dns shapes; RD set, names case-insensitive', async () => {
  const resolver = resolverFor();
  assert.deepEqual(((await resolver.resolve('HOST.example.', 'A')) as string[]).sort(), ['192.0.2.1', '192.0.2.2']);
  assert.deepEqual(await resolver.resolve('host.example', 'AAAA'), ['2001:db8::1']);
  const mx = (await resolver.resolve('mail.example', 'MX')) as { exchange: string; priority: number }[];
  assert.deepEqual(
    mx.sort((x, y) => x.priority - y.priority),
    [
      { exchange: 'mx1.mail.example', priority: 10 },
      { exchange: 'mx2.mail.example', priority: 20 },
    ],
  );
  assert.deepEqual(await resolver.resolve('1.2.0.192.in-addr.arpa', 'PTR'), ['host.example']);
  assert.equal(server.queries.at(-1)?.transport, 'udp');
});

test('NXDOMAIN → ENOTFOUND, NODATA → ENODATA, with dnsError messages', async () => {
  const resolver = resolverFor();
  const missing = await rejectsWithCode(resolver.resolve('missing.example', 'TXT'), 'ENOTFOUND');
  assert.equal(missing.message, 'ENOTFOUND TXT missing.example');
  await rejectsWithCode(resolver.resolve('exists.example', 'TXT'), 'ENODATA');
  await rejectsWithCode(resolver.resolve('exists.example', 'MX'), 'ENODATA');
});

test('SERVFAIL → ESERVFAIL (server-wide and per name), never cached', async () => {
  const resolver = resolverFor();
  await rejectsWithCode(resolver.resolve('broken.example', 'A'), 'ESERVFAIL');
  // A server that answered SERVFAIL is not asked again in the second round.
  assert.equal(queriesFor('broken.example'), 1);
  await rejectsWithCode(resolver.resolve('broken.example', 'A'), 'ESERVFAIL');
  assert.equal(queriesFor('broken.example'), 2);

  server.setMode('servfail');
  try {
    await rejectsWithCode(resolver.resolve('host.example', 'A'), 'ESERVFAIL');
  } finally {
    server.setMode('normal');
  }
  assert.deepEqual(((await resolver.resolve('host.example', 'A')) as string[]).sort(), ['192.0.2.1', '192.0.2.2']);
});

test('SERVFAIL from the first server: the second is asked and its answer wins', async () => {
  const failing = await startDnsServer({ 'host.example': { fault: 'servfail' } });
  try {
    const resolver = resolverFor({ servers: [{ host: failing.host, port: failing.port }, { host: server.host, port: server.port }] });
    assert.deepEqual(((await resolver.resolve('host.example', 'A')) as string[]).sort(), ['192.0.2.1', '192.0.2.2']);
    assert.equal(failing.queries.length, 1);
  } finally {
    await failing.close();
  }
});

test('a silent server → ETIMEOUT after timeoutMs × attempts, one query per attempt', async () => {
  const silent = await startDnsServer(zone);
  silent.setMode('drop');
  try {
    const resolver = resolverFor({ servers: [{ host: silent.host, port: silent.port }], timeoutMs: 150, attempts: 3 });
    const started = performance.now();
    const error = await rejectsWithCode(resolver.resolve('host.example', 'A'), 'ETIMEOUT');
    const elapsed = performance.now() - started;
    assert.equal(error.message, 'ETIMEOUT A host.example');
    // The upper bound only catches a hang; the query count below pins the attempts.
    assert.ok(elapsed >= 440 && elapsed < 2000, `elapsed ${elapsed} ms`);
    assert.equal(silent.queries.length, 3);
    assert.equal(resolver.stats().timeouts, 3);
    assert.equal(resolver.stats().failures, 1);
    // Timeouts are not cached.
    silent.setMode('normal');
    assert.deepEqual(((await resolver.resolve('host.example', 'A')) as string[]).sort(), ['192.0.2.1', '192.0.2.2']);
  } finally {
    await silent.close();
  }
});

test('a dead first server (nothing listening) or a silent one: the second server answers', async () => {
  const dead = await deadUdpPort();
  const viaDead = resolverFor({ servers: [{ host: '127.0.0.1', port: dead }, { host: server.host, port: server.port }], timeoutMs: 2000 });
  const started = performance.now();
  assert.deepEqual(await viaDead.resolve('host.example', 'AAAA'), ['2001:db8::1']);
  // ICMP port unreachable on the connected socket fails over without waiting for the timeout.
  assert.ok(performance.now() - started < 1000);

  const silent = await startDnsServer(zone);
  silent.setMode('drop');
  try {
    const viaSilent = resolverFor({ servers: [{ host: silent.host, port: silent.port }, { host: server.host, port: server.port }], timeoutMs: 150 });
    assert.deepEqual(await viaSilent.resolve('a.example', 'A'), ['192.0.2.21']);
    assert.equal(silent.queries.length, 1);
    assert.equal(viaSilent.stats().timeouts, 1);
  } finally {
    await silent.close();
  }
});

test('a truncated UDP answer is asked again over TCP (RFC 7766 §5)', async () => {
  const resolver = resolverFor();
  const records = (await resolver.resolve('big.example', 'TXT')) as string[][];
  assert.equal(records.length, 12);
  assert.deepEqual(
    records.map((record) => record.join('')).sort(),
    Array.from({ length: 12 }, (_, index) => `${index}-${'x'.repeat(200)}`).sort(),
  );
  assert.deepEqual(
    server.queries.filter((query) => query.name === 'big.example').map((query) => query.transport),
    ['udp', 'tcp'],
  );
  assert.equal(resolver.stats().tcpQueries, 1);
  assert.equal(resolver.stats().queries, 2);
});

test('CNAME chains are followed inside the answer; a CNAME question gets the alias itself', async () => {
  const resolver = resolverFor();
  assert.deepEqual(await resolver.resolve('alias1.example', 'A'), ['192.0.2.77']);
  assert.deepEqual(await resolver.resolve('alias1.example', 'TXT'), [['at the target']]);
  assert.deepEqual(await resolver.resolve('alias1.example', 'CNAME'), ['alias2.example']);
  // The chain ends at a name with no MX: NODATA for the question.
  await rejectsWithCode(resolver.resolve('alias1.example', 'MX'), 'ENODATA');
});

test('the cache answers a repeated question without reaching the server, with its own copy', async () => {
  const resolver = resolverFor();
  const first = (await resolver.resolve('a.example', 'A')) as string[];
  const before = queriesFor('a.example');
  first.push('mutated by a caller');
  assert.deepEqual(await resolver.resolve('A.EXAMPLE.', 'A'), ['192.0.2.21']);
  assert.equal(queriesFor('a.example'), before);
  assert.deepEqual(resolver.stats(), { lookups: 2, cacheHits: 1, inFlightJoins: 0, queries: 1, tcpQueries: 0, timeouts: 0, failures: 0, cacheSize: 1 });
  // Another type at the same name is another question.
  await rejectsWithCode(resolver.resolve('a.example', 'TXT'), 'ENODATA');
  assert.equal(queriesFor('a.example'), before + 1);

  resolver.clear();
  assert.equal(resolver.stats().cacheSize, 0);
  await resolver.resolve('a.example', 'A');
  assert.equal(queriesFor('a.example'), before + 2);

  // An answer that lands after clear() belongs to the forgotten cache and is not stored.
  const landing = resolver.resolve('c.example', 'A');
  resolver.clear();
  await landing;
  const beforeRepeat = queriesFor('c.example');
  await resolver.resolve('c.example', 'A');
  assert.equal(queriesFor('c.example'), beforeRepeat + 1);
});

test('TTL expiry on the injected clock, clamped to maxTtlSeconds and raised to minTtlSeconds', async () => {
  const clock = manualClock();
  const resolver = resolverFor({ now: clock.now, cache: { maxEntries: 100, maxTtlSeconds: 300, minTtlSeconds: 5 } });

  await resolver.resolve('ttl.example', 'A');
  clock.advance(59);
  await resolver.resolve('ttl.example', 'A');
  assert.equal(queriesFor('ttl.example'), 1);
  clock.advance(1);
  await resolver.resolve('ttl.example', 'A');
  assert.equal(queriesFor('ttl.example'), 2);

  await resolver.resolve('long-ttl.example', 'A');
  clock.advance(299);
  await resolver.resolve('long-ttl.example', 'A');
  assert.equal(queriesFor('long-ttl.example'), 1);
  clock.advance(1);
  await resolver.resolve('long-ttl.example', 'A');
  assert.equal(queriesFor('long-ttl.example'), 2);

  await resolver.resolve('zero-ttl.example', 'A');
  clock.advance(4);
  await resolver.resolve('zero-ttl.example', 'A');
  assert.equal(queriesFor('zero-ttl.example'), 1);
  clock.advance(1);
  await resolver.resolve('zero-ttl.example', 'A');
  assert.equal(queriesFor('zero-ttl.example'), 2);
});

test('a TTL of 0 without minTtlSeconds is not cached', async () => {
  const resolver = resolverFor();
  const before = queriesFor('zero-ttl.example');
  await resolver.resolve('zero-ttl.example', 'A');
  await resolver.resolve('zero-ttl.example', 'A');
  assert.equal(queriesFor('zero-ttl.example'), before + 2);
});

test('negative answers without an SOA are not cached (RFC 2308 §5)', async () => {
  const resolver = resolverFor();
  const before = queriesFor('nothing-here.example');
  await rejectsWithCode(resolver.resolve('nothing-here.example', 'A'), 'ENOTFOUND');
  await rejectsWithCode(resolver.resolve('nothing-here.example', 'A'), 'ENOTFOUND');
  assert.equal(queriesFor('nothing-here.example'), before + 2);
});

test('negative answers with an SOA are cached for min(SOA TTL, MINIMUM), each caller gets a fresh error', async () => {
  const soa = (ttl: number, minimum: number) => ({
    type: 'SOA' as const,
    name: 'example.net',
    ttl,
    class: 'IN' as const,
    data: { mname: 'ns.example.net', rname: 'hostmaster.example.net', serial: 1, refresh: 3600, retry: 600, expire: 86400, minimum },
  });
  const scripted = await startScriptedServer((query) => {
    const name = query.questions?.[0]?.name;
    if (name === 'gone.example.net') return [responseTo(query, { rcode: 3, authorities: [soa(300, 30)] })];
    return [responseTo(query, { rcode: 0, authorities: [soa(20, 3600)] })]; // NODATA
  });
  try {
    const clock = manualClock();
    const resolver = resolverFor({ servers: [{ host: '127.0.0.1', port: scripted.port }], now: clock.now });
    const first = await rejectsWithCode(resolver.resolve('gone.example.net', 'TXT'), 'ENOTFOUND');
    clock.advance(29);
    const second = await rejectsWithCode(resolver.resolve('gone.example.net', 'TXT'), 'ENOTFOUND');
    assert.notEqual(first, second);
    assert.equal(scripted.received.length, 1);
    clock.advance(1);
    await rejectsWithCode(resolver.resolve('gone.example.net', 'TXT'), 'ENOTFOUND');
    assert.equal(scripted.received.length, 2);

    await rejectsWithCode(resolver.resolve('empty.example.net', 'TXT'), 'ENODATA');
    clock.advance(19);
    await rejectsWithCode(resolver.resolve('empty.example.net', 'TXT'), 'ENODATA');
    assert.equal(scripted.received.length, 3);
    clock.advance(1);
    await rejectsWithCode(resolver.resolve('empty.example.net', 'TXT'), 'ENODATA');
    assert.equal(scripted.received.length, 4);
  } finally {
    await scripted.close();
  }
});

test('REFUSED → EREFUSED; forged and mismatched datagrams are ignored', async () => {
  const scripted = await startScriptedServer((query) => {
    const question = query.questions?.[0];
    if (question?.name === 'refused.example') return [responseTo(query, { rcode: 5 })];
    const answer = { type: 'A' as const, name: question?.name ?? '', ttl: 60, class: 'IN' as const, data: '192.0.2.99' };
    const forged = { type: 'A' as const, name: question?.name ?? '', ttl: 60, class: 'IN' as const, data: '203.0.113.66' };
    return [
      responseTo(query, { id: ((query.id ?? 0) + 1) & 0xffff, answers: [forged] }), // wrong ID
      responseTo(query, { questions: [{ name: 'other.example', type: 'A', class: 'IN' }], answers: [forged] }), // wrong question
      responseTo(query, { questions: [{ name: question?.name ?? '', type: 'TXT', class: 'IN' }], answers: [forged] }), // wrong type
      Buffer.from('not dns at all'),
      responseTo(query, { answers: [answer] }),
    ];
  });
  try {
    const resolver = resolverFor({ servers: [{ host: '127.0.0.1', port: scripted.port }] });
    await rejectsWithCode(resolver.resolve('refused.example', 'A'), 'EREFUSED');
    assert.deepEqual(await resolver.resolve('Spoof-Target.example', 'A'), ['192.0.2.99']);
    const query = scripted.received.at(-1);
    assert.ok(query && (query.flags ?? 0) & 0x0100, 'RD flag set');
    assert.equal(query.additionals?.find((record) => record.type === 'OPT')?.type, 'OPT');
  } finally {
    await scripted.close();
  }
});

test('query IDs are random', async () => {
  const scripted = await startScriptedServer((query) => [responseTo(query, { rcode: 3 })]);
  try {
    const resolver = resolverFor({ servers: [{ host: '127.0.0.1', port: scripted.port }] });
    for (let index = 0; index < 20; index++) await rejectsWithCode(resolver.resolve(`n${index}.example`, 'A'), 'ENOTFOUND');
    const ids = new Set(scripted.received.map((query) => query.id));
    assert.ok(ids.size >= 18, `ids ${[...ids].join(',')}`);
  } finally {
    await scripted.close();
  }
});

test('maxEntries bounds the cache; the least recently used entry goes first', async () => {
  const resolver = resolverFor({ cache: { maxEntries: 2, maxTtlSeconds: 3600 } });
  const count = () => queriesFor('a.example') + queriesFor('b.example') + queriesFor('c.example');
  const start = count();
  await resolver.resolve('a.example', 'A');
  await resolver.resolve('b.example', 'A');
  await resolver.resolve('a.example', 'A'); // hit: a becomes the most recently used
  assert.equal(count(), start + 2);
  await resolver.resolve('c.example', 'A'); // evicts b
  assert.equal(resolver.stats().cacheSize, 2);
  await resolver.resolve('a.example', 'A');
  await resolver.resolve('c.example', 'A');
  assert.equal(count(), start + 3);
  await resolver.resolve('b.example', 'A');
  assert.equal(count(), start + 4);
});

test('identical questions in flight share one request; each caller gets its own result', async () => {
  const resolver = resolverFor();
  const before = queriesFor('b.example');
  const results = (await Promise.all(Array.from({ length: 5 }, () => resolver.resolve('b.example', 'A')))) as string[][];
  assert.equal(queriesFor('b.example'), before + 1);
  assert.equal(resolver.stats().inFlightJoins, 4);
  for (const result of results) assert.deepEqual(result, ['192.0.2.22']);
  assert.notEqual(results[0], results[1]);

  const failures = await Promise.allSettled([resolver.resolve('missing2.example', 'A'), resolver.resolve('missing2.example', 'A')]);
  assert.equal(queriesFor('missing2.example'), 1);
  const [one, two] = failures;
  assert.ok(one?.status === 'rejected' && two?.status === 'rejected');
  assert.notEqual(one.reason, two.reason);
});

test('bad names and unsupported types are refused without a query', async () => {
  const resolver = resolverFor();
  await rejectsWithCode(resolver.resolve(`${'a'.repeat(64)}.example`, 'TXT'), 'EBADNAME');
  await rejectsWithCode(resolver.resolve(Array.from({ length: 130 }, () => 'ab').join('.'), 'TXT'), 'EBADNAME');
  await rejectsWithCode(resolver.resolve('a..example', 'A'), 'EBADNAME');
  await rejectsWithCode(resolver.resolve('a.example', 'SOA'), 'ERR_INVALID_ARG_VALUE');
  assert.equal(resolver.stats().queries, 0);
});

test('systemServers reads nameserver lines from resolv.conf; none → the local machine', async () => {
  assert.deepEqual(
    parseResolvConf('# comment\nsearch example\nnameserver 192.0.2.53 # trailing\n  nameserver\t2001:db8::53\nnameserver not-an-ip\n; nameserver 192.0.2.1\nnameserver 192.0.2.54\nnameserver 192.0.2.55\n'),
    [
      { host: '192.0.2.53', port: 53 },
      { host: '2001:db8::53', port: 53 },
      { host: '192.0.2.54', port: 53 },
    ],
  );
  const directory = await mkdtemp(path.join(tmpdir(), 'sello-resolv-'));
  try {
    const file = path.join(directory, 'resolv.conf');
    await writeFile(file, 'nameserver 198.51.100.1\n');
    assert.deepEqual(systemServers(file), [{ host: '198.51.100.1', port: 53 }]);
    await writeFile(file, 'options ndots:1\n');
    assert.deepEqual(systemServers(file), [{ host: '127.0.0.1', port: 53 }]);
    assert.deepEqual(systemServers(path.join(directory, 'absent')), [{ host: '127.0.0.1', port: 53 }]);
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
});

test("mailauth's spf() uses the resolver: pass for 127.0.0.1, fail for 127.0.0.2", async () => {
  // DnsResolve promises unknown; mailauth's type names the shapes it resolves to.
  const resolve = createResolver({ servers: [{ host: server.host, port: server.port }], timeoutMs: 500, cache: { maxEntries: 100, maxTtlSeconds: 3600 } })
    .resolve as DNSResolver;
  const pass = await spf({ sender: 'user@example.com', ip: '127.0.0.1', helo: 'client.test', mta: 'sello.test', resolver: resolve });
  assert.equal(pass.status.result, 'pass');
  const fail = await spf({ sender: 'user@example.com', ip: '127.0.0.2', helo: 'client.test', mta: 'sello.test', resolver: resolve });
  assert.equal(fail.status.result, 'fail');
  assert.ok(queriesFor('example.com', 'TXT') >= 1);
});

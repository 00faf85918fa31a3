// Tests for src/checks/spf.ts beyond the RFC 7208 suite (test/golden/spf): identity choice,
// limits, time budget, DNS failures as temperror, and the outcome's fields.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { checkSpf } from '../../../src/checks/spf.ts';
import { dnsError, type DnsErrorCode, type DnsResolve } from '../../../src/dns/types.ts';

type Records = { TXT?: string[]; A?: string[]; fail?: DnsErrorCode };

/** A zone resolver that also records the questions asked. */
function zone(records: Record<string, Records>): DnsResolve & { asked: string[] } {
  const asked: string[] = [];
  const resolve = async (name: string, rrtype: string): Promise<unknown> => {
    asked.push(`${rrtype} ${name}`);
    const set = records[name.toLowerCase()];
    if (!set) throw dnsError('ENOTFOUND', name, rrtype);
    if (set.fail) throw dnsError(set.fail, name, rrtype);
    if (rrtype === 'TXT' && set.TXT) return set.TXT.map((text) => [text]);
    if (rrtype === 'A' && set.A) return set.A;
    throw dnsError('ENODATA', name, rrtype);
  };
  return Object.assign(resolve, { asked });
}

const input = { clientIp: '192.0.2.1', mailFrom: 'alice@example.com', helo: 'mail.example.net', receiver: 'mx.example.org' };

describe('identities', () => {
  test('MAIL FROM: the sender domain is evaluated; the outcome carries what was checked', async () => {
    const resolver = zone({ 'example.com': { TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] } });
    const outcome = await checkSpf(input, { resolver, timeBudgetMs: 1000, identity: 'mailfrom' });
    assert.deepEqual({ ...outcome, durationMs: 0 }, {
      identity: 'mailfrom',
      result: 'pass',
      domain: 'example.com',
      sender: 'alice@example.com',
      mailFrom: 'alice@example.com',
      clientIp: '192.0.2.1',
      helo: 'mail.example.net',
      comment: 'mx.example.org: domain of alice@example.com designates 192.0.2.1 as permitted sender',
      durationMs: 0,
    });
  });

  test('null sender: the MAIL FROM identity is postmaster@<HELO> (RFC 7208 §2.4)', async () => {
    const resolver = zone({ 'mail.example.net': { TXT: ['v=spf1 -all'] } });
    const outcome = await checkSpf({ ...input, mailFrom: '' }, { resolver, timeBudgetMs: 1000, identity: 'mailfrom' });
    assert.equal(outcome.result, 'fail');
    assert.equal(outcome.identity, 'mailfrom');
    assert.equal(outcome.sender, 'postmaster@mail.example.net');
    assert.equal(outcome.mailFrom, '');
    assert.equal(outcome.domain, 'mail.example.net');
  });

  test('HELO identity: the HELO domain is evaluated, the MAIL FROM is kept for the header', async () => {
    const resolver = zone({ 'mail.example.net': { TXT: ['v=spf1 ip4:192.0.2.1 -all'] }, 'example.com': { TXT: ['v=spf1 -all'] } });
    const outcome = await checkSpf(input, { resolver, timeBudgetMs: 1000, identity: 'helo' });
    assert.equal(outcome.result, 'pass');
    assert.equal(outcome.identity, 'helo');
    assert.equal(outcome.domain, 'mail.example.net');
    assert.equal(outcome.sender, 'postmaster@mail.example.net');
    assert.equal(outcome.mailFrom, 'alice@example.com');
    assert.deepEqual(resolver.asked, ['TXT mail.example.net']);
  });

  for (const helo of ['[192.0.2.1]', '[IPv6:2001:db8::1]', '192.0.2.1', '2001:db8::1', 'localhost', 'OEMCOMPUTER', '', 'a..example', `${'a'.repeat(64)}.example`]) {
    test(`HELO identity: ${JSON.stringify(helo)} is not a multi-label domain name → none without DNS (RFC 7208 §2.3)`, async () => {
      const resolver = zone({});
      const outcome = await checkSpf({ ...input, helo }, { resolver, timeBudgetMs: 1000, identity: 'helo' });
      assert.equal(outcome.result, 'none');
      assert.equal(outcome.helo, helo);
      assert.deepEqual(resolver.asked, []);
    });
  }

  test('an IPv4-mapped IPv6 client is evaluated (and reported) as IPv4 (RFC 7208 §5)', async () => {
    const resolver = zone({ 'example.com': { TXT: ['v=spf1 ip4:192.0.2.1 -all'] } });
    const outcome = await checkSpf({ ...input, clientIp: '::ffff:192.0.2.1' }, { resolver, timeBudgetMs: 1000, identity: 'mailfrom' });
    assert.equal(outcome.result, 'pass');
    assert.equal(outcome.clientIp, '192.0.2.1');
  });
});

describe('limits (RFC 7208 §4.6.4)', () => {
  test('the 11th DNS-querying term is permerror, 10 are fine', async () => {
    const records: Record<string, Records> = {};
    for (let i = 0; i < 11; i++) records[`i${i}.example.com`] = { TXT: [`v=spf1 include:i${i + 1}.example.com`] };
    records['i11.example.com'] = { TXT: ['v=spf1 +all'] };
    records['example.com'] = { TXT: ['v=spf1 include:i0.example.com -all'] };
    const outcome = await checkSpf(input, { resolver: zone(records), timeBudgetMs: 1000, identity: 'mailfrom' });
    assert.equal(outcome.result, 'permerror');

    records['i9.example.com'] = { TXT: ['v=spf1 +all'] };
    const withinLimit = await checkSpf(input, { resolver: zone(records), timeBudgetMs: 1000, identity: 'mailfrom' });
    assert.equal(withinLimit.result, 'pass');
  });

  test('a third void lookup is permerror, two are fine', async () => {
    const three = zone({ 'example.com': { TXT: ['v=spf1 a:v1.example.com a:v2.example.com a:v3.example.com -all'] } });
    assert.equal((await checkSpf(input, { resolver: three, timeBudgetMs: 1000, identity: 'mailfrom' })).result, 'permerror');
    const two = zone({ 'example.com': { TXT: ['v=spf1 a:v1.example.com a:v2.example.com -all'] } });
    assert.equal((await checkSpf(input, { resolver: two, timeBudgetMs: 1000, identity: 'mailfrom' })).result, 'fail');
  });

  test('the time budget ends a hanging evaluation with temperror', async () => {
    const never: DnsResolve = () => new Promise(() => {});
    const started = performance.now();
    const outcome = await checkSpf(input, { resolver: never, timeBudgetMs: 50, identity: 'mailfrom' });
    assert.equal(outcome.result, 'temperror');
    assert.ok(performance.now() - started < 2000);
  });
});

describe('DNS failures are temperror, never thrown', () => {
  for (const code of ['ESERVFAIL', 'EREFUSED', 'ETIMEOUT', 'EBADRESP'] as const) {
    test(code, async () => {
      const outcome = await checkSpf(input, { resolver: zone({ 'example.com': { fail: code } }), timeBudgetMs: 1000, identity: 'mailfrom' });
      assert.equal(outcome.result, 'temperror');
    });
  }

  test('a resolver that rejects with a non-error or throws synchronously', async () => {
    const rejectsString: DnsResolve = () => Promise.reject('boom');
    const throwsNow: DnsResolve = () => {
      throw new Error('sync');
    };
    for (const resolver of [rejectsString, throwsNow]) {
      assert.equal((await checkSpf(input, { resolver, timeBudgetMs: 1000, identity: 'mailfrom' })).result, 'temperror');
    }
  });

  test('an error inside an include is temperror too', async () => {
    const resolver = zone({ 'example.com': { TXT: ['v=spf1 include:broken.example.com -all'] }, 'broken.example.com': { fail: 'ESERVFAIL' } });
    assert.equal((await checkSpf(input, { resolver, timeBudgetMs: 1000, identity: 'mailfrom' })).result, 'temperror');
  });
});

describe('outcome fields', () => {
  test('the exp= explanation accompanies a fail, and only a fail (RFC 7208 §6.2)', async () => {
    const resolver = zone({
      'example.com': { TXT: ['v=spf1 ip4:192.0.2.1 ~all exp=why.example.com'] },
      'fail.example.com': { TXT: ['v=spf1 -all exp=why.example.com'] },
      'why.example.com': { TXT: ['%{i} may not send for %{d}'] },
    });
    const failed = await checkSpf({ ...input, mailFrom: 'bob@fail.example.com' }, { resolver, timeBudgetMs: 1000, identity: 'mailfrom' });
    assert.equal(failed.result, 'fail');
    assert.equal(failed.explanation, '192.0.2.1 may not send for fail.example.com');
    const passed = await checkSpf(input, { resolver, timeBudgetMs: 1000, identity: 'mailfrom' });
    assert.equal(passed.result, 'pass');
    assert.equal(passed.explanation, undefined);
    assert.ok(!('explanation' in passed));
  });

  test('durationMs comes from the injected clock', async () => {
    const ticks = [100, 142];
    const clock = () => ticks.shift() ?? 0;
    const outcome = await checkSpf(input, { resolver: zone({}), timeBudgetMs: 1000, identity: 'mailfrom' }, clock);
    assert.equal(outcome.result, 'none');
    assert.equal(outcome.durationMs, 42);
  });

  test('the default time budget applies when none is given', async () => {
    const outcome = await checkSpf(input, { resolver: zone({ 'example.com': { TXT: ['v=spf1 -all'] } }), identity: 'mailfrom' });
    assert.equal(outcome.result, 'fail');
  });
});

// Tests for src/pipeline/policy.ts: the exact bytes of every SPF reply (admins grep for "[SPF]"),
// the explanation URL after the text, the operator's action table, and hostile names sanitised.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { SpfOutcome, SpfResultWord } from '../../../src/checks/types.ts';
import { parseConfig } from '../../../src/config/load.ts';
import { formatReply } from '../../../src/errors.ts';
import { spfDecision } from '../../../src/pipeline/policy.ts';

function outcome(result: SpfResultWord, overrides: Partial<SpfOutcome> = {}): SpfOutcome {
  return {
    identity: 'mailfrom',
    result,
    domain: 'example.com',
    sender: 'alice@example.com',
    mailFrom: 'alice@example.com',
    clientIp: '192.0.2.7',
    helo: 'mail.example.org',
    comment: '',
    durationMs: 1,
    ...overrides,
  };
}

function spfConfig(spf: Record<string, unknown> = {}) {
  return parseConfig({ listeners: [{ name: 'filter', role: 'filter', listen: '127.0.0.1:10025' }], inbound: { spf } }).inbound.spf;
}

function wire(result: SpfResultWord, spf: Record<string, unknown> = {}, overrides: Partial<SpfOutcome> = {}): string | undefined {
  const decision = spfDecision(outcome(result, overrides), spfConfig(spf));
  return decision.reply ? formatReply(decision.reply) : undefined;
}

test('SPF fail reads exactly "550 5.7.23 [SPF] <ip> is not allowed to send mail from <domain>"', () => {
  assert.equal(wire('fail'), '550 5.7.23 [SPF] 192.0.2.7 is not allowed to send mail from example.com');
});

test('the explanation URL, when configured, follows the text after one space', () => {
  assert.equal(
    wire('fail', { explanationUrl: 'https://example.com/why-rejected' }),
    '550 5.7.23 [SPF] 192.0.2.7 is not allowed to send mail from example.com https://example.com/why-rejected',
  );
});

test('the other SPF replies carry the same [SPF] tag', () => {
  assert.equal(wire('temperror'), '451 4.7.24 [SPF] temporary DNS failure while checking example.com, try again later');
  assert.equal(wire('temperror', { policy: { temperror: 'reject' } }), '550 5.7.24 [SPF] DNS failure while checking example.com');
  assert.equal(wire('permerror', { policy: { permerror: 'reject' } }), '550 5.7.24 [SPF] example.com has an invalid SPF record');
  assert.equal(wire('permerror', { policy: { permerror: 'defer' } }), '451 4.7.24 [SPF] example.com has an invalid SPF record');
  assert.equal(wire('softfail', { policy: { softfail: 'reject' } }), '550 5.7.1 [SPF] result softfail for example.com is not accepted here');
  assert.equal(wire('fail', { policy: { fail: 'defer' } }), '451 4.7.23 [SPF] 192.0.2.7 is not allowed to send mail from example.com');
  assert.equal(
    wire('fail', {}, { identity: 'helo', helo: 'mail.example.org' }),
    '550 5.7.23 [SPF] 192.0.2.7 is not allowed to send mail from HELO mail.example.org',
  );
});

test('tagged results give no reply; a hostile domain cannot inject text or line breaks', () => {
  assert.equal(wire('softfail'), undefined);
  assert.equal(wire('pass'), undefined);
  assert.equal(wire('fail', {}, { domain: 'evil.example\r\n250 ok' }), '550 5.7.23 [SPF] 192.0.2.7 is not allowed to send mail from evil.example??250?ok');
});

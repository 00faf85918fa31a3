// The metric contract of docs/metrics.md as the Prometheus text exposition shows it: names,
// types, labels, bounded label values, and one private registry per createMetrics().

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { createMetrics } from '../../../src/observability/metrics.ts';

const contract = await readFile(path.join(import.meta.dirname, '../../../docs/metrics.md'), 'utf8');

/** `name{labels} value` lines of one metric, labels as written by prom-client. */
function samples(text: string, name: string): string[] {
  return text.split('\n').filter((line) => line.startsWith(`${name}{`) || line.startsWith(`${name} `));
}

test('every metric of docs/metrics.md is registered with the documented type and labels', async () => {
  const metrics = createMetrics({ defaultMetrics: false });
  const documented = [...contract.matchAll(/^\| `(sello_[a-z_]+)` \| (counter|histogram|gauge)[^|]*\| ([^|]*) \|/gm)];
  assert.ok(documented.length >= 20, `parsed ${documented.length} rows`);
  const registered = await metrics.registry.getMetricsAsJSON();
  for (const [, name, type, labels] of documented) {
    const metric = registered.find((entry) => entry.name === name);
    assert.ok(metric, `${name} is registered`);
    assert.equal(metric.type, type, `${name} type`);
    const wanted = (labels as string).trim() === '—' ? [] : [...(labels as string).matchAll(/(?:^|, )([a-z_]+)/g)].map((match) => match[1]);
    const declared = ((await metrics.registry.getSingleMetric(name as string)) as unknown as { labelNames: string[] }).labelNames;
    assert.deepEqual([...declared].sort(), [...wanted].sort(), `${name} labels`);
  }
  assert.equal(registered.length, documented.length, 'nothing beyond the contract (default metrics off)');
});

test('recorded values appear with exactly the documented labels', async () => {
  const metrics = createMetrics({ defaultMetrics: false });
  metrics.transaction('submission', 'relayed', 0.2);
  metrics.transaction('submission', 'relayed', 0.3);
  metrics.transaction('mx', 'deferred', 1);
  metrics.reply('mx', 'rcpt', 550);
  metrics.reply('mx', 'rcpt', 1234); // not an SMTP code: not counted
  metrics.spfResult('mailfrom', 'fail', 'reject');
  metrics.signature('example.com', 'rsa1', 'rsa-sha256', 'signed');
  metrics.unsigned('filter', 'domain-not-configured');
  metrics.dkimVerification('surprise'); // a library's surprise never becomes a label value
  metrics.dmarcResult('fail', 'REJECT-ish');
  metrics.arcSeal('sealed');
  metrics.arcSeal('sealed');
  metrics.arcSeal('failed');
  metrics.relayError('smtp://127.0.0.1:2525', 'unreachable');
  metrics.connectionOpened('mx');
  metrics.connectionOpened('mx');
  metrics.connectionClosed('mx');
  const text = await metrics.registry.metrics();
  assert.deepEqual(samples(text, 'sello_transactions_total'), [
    'sello_transactions_total{listener="submission",outcome="relayed"} 2',
    'sello_transactions_total{listener="mx",outcome="deferred"} 1',
  ]);
  assert.deepEqual(samples(text, 'sello_smtp_replies_total'), ['sello_smtp_replies_total{listener="mx",stage="rcpt",code="550"} 1']);
  assert.deepEqual(samples(text, 'sello_spf_results_total'), ['sello_spf_results_total{identity="mailfrom",result="fail",action="reject"} 1']);
  assert.deepEqual(samples(text, 'sello_dkim_signatures_total'), [
    'sello_dkim_signatures_total{domain="example.com",selector="rsa1",algorithm="rsa-sha256",result="signed"} 1',
  ]);
  assert.deepEqual(samples(text, 'sello_unsigned_messages_total'), ['sello_unsigned_messages_total{listener="filter",reason="domain-not-configured"} 1']);
  assert.deepEqual(samples(text, 'sello_dkim_verifications_total'), ['sello_dkim_verifications_total{result="permerror"} 1']);
  assert.deepEqual(samples(text, 'sello_dmarc_results_total'), ['sello_dmarc_results_total{result="fail",policy="unknown"} 1']);
  assert.deepEqual(samples(text, 'sello_arc_seals_total'), ['sello_arc_seals_total{result="sealed"} 2', 'sello_arc_seals_total{result="failed"} 1']);
  assert.deepEqual(samples(text, 'sello_relay_errors_total'), ['sello_relay_errors_total{relay="smtp://127.0.0.1:2525",kind="unreachable"} 1']);
  assert.deepEqual(samples(text, 'sello_active_connections'), ['sello_active_connections{listener="mx"} 1']);
  assert.ok(text.includes('sello_transaction_duration_seconds_count{listener="submission"} 2'));
  assert.ok(text.includes('sello_transaction_duration_seconds_bucket{le="0.25",listener="submission"} 1'));
});

test('key info and age come from the loaded keys; age grows with the clock', async () => {
  let now = new Date('2026-11-23T10:00:00Z');
  const metrics = createMetrics({ defaultMetrics: false, now: () => now });
  metrics.keysLoaded([
    { domain: 'example.com', selector: 'rsa1', algorithm: 'rsa-sha256', bits: 2048, modified: new Date('2026-11-22T10:00:00Z') },
    { domain: 'example.com', selector: 'ed1', algorithm: 'ed25519-sha256', bits: 256, modified: new Date('2026-11-23T09:00:00Z') },
  ]);
  let text = await metrics.registry.metrics();
  assert.deepEqual(samples(text, 'sello_key_info'), [
    'sello_key_info{domain="example.com",selector="rsa1",algorithm="rsa-sha256",bits="2048"} 1',
    'sello_key_info{domain="example.com",selector="ed1",algorithm="ed25519-sha256",bits="256"} 1',
  ]);
  assert.deepEqual(samples(text, 'sello_key_age_seconds'), [
    'sello_key_age_seconds{domain="example.com",selector="rsa1"} 86400',
    'sello_key_age_seconds{domain="example.com",selector="ed1"} 3600',
  ]);
  now = new Date('2026-11-23T11:00:00Z');
  metrics.keysLoaded([{ domain: 'example.com', selector: 'ed1', algorithm: 'ed25519-sha256', bits: 256, modified: new Date('2026-11-23T09:00:00Z') }]);
  text = await metrics.registry.metrics();
  assert.deepEqual(samples(text, 'sello_key_age_seconds'), ['sello_key_age_seconds{domain="example.com",selector="ed1"} 7200'], 'a key gone after reload is gone');
});

test('config loads and reloads; build info; both reload results start at 0', async () => {
  const metrics = createMetrics({ defaultMetrics: false, now: () => new Date('2026-11-23T10:00:00Z') });
  let text = await metrics.registry.metrics();
  assert.deepEqual(samples(text, 'sello_config_reloads_total'), ['sello_config_reloads_total{result="success"} 0', 'sello_config_reloads_total{result="failure"} 0']);
  const { version } = JSON.parse(await readFile(path.join(import.meta.dirname, '../../../package.json'), 'utf8')) as { version: string };
  assert.deepEqual(samples(text, 'sello_build_info'), [`sello_build_info{version="${version}",node_version="${process.version}"} 1`]);
  metrics.configLoaded();
  metrics.configReload('failure');
  text = await metrics.registry.metrics();
  assert.deepEqual(samples(text, 'sello_config_reloads_total'), ['sello_config_reloads_total{result="success"} 0', 'sello_config_reloads_total{result="failure"} 1']);
  assert.deepEqual(samples(text, 'sello_config_last_reload_success_timestamp_seconds'), ['sello_config_last_reload_success_timestamp_seconds 1795428000']);
});

test('registries are private: two instances count separately; default metrics carry the sello_ prefix', async () => {
  const first = createMetrics();
  const second = createMetrics();
  first.transaction('a', 'relayed', 0.1);
  assert.match(await first.registry.metrics(), /sello_transactions_total\{listener="a",outcome="relayed"\} 1/);
  assert.doesNotMatch(await second.registry.metrics(), /sello_transactions_total\{/);
  const text = await second.registry.metrics();
  assert.match(text, /^sello_process_cpu_seconds_total /m);
  assert.match(text, /^sello_nodejs_eventloop_lag_seconds /m);
  assert.doesNotMatch(text, /^(process|nodejs)_/m, 'no unprefixed default metrics');
});

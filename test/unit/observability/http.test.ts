// The operations endpoint over real HTTP on loopback, and the readiness cache.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cachedReadiness, startOperationsEndpoint, type ReadinessReport } from '../../../src/observability/http.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import { createMetrics } from '../../../src/observability/metrics.ts';

async function endpoint(t: import('node:test').TestContext, readiness: () => Promise<ReadinessReport>) {
  const metrics = createMetrics({ defaultMetrics: false });
  const running = await startOperationsEndpoint({ listen: { host: '127.0.0.1', port: 0 }, registry: metrics.registry, readiness, logger: silentLogger() });
  t.after(() => running.close());
  const url = (path: string) => `http://127.0.0.1:${running.address.port}${path}`;
  return { metrics, url };
}

test('/metrics in the Prometheus text format, /healthz ok, 404 elsewhere, 405 for other methods', async (t) => {
  const { metrics, url } = await endpoint(t, async () => ({ ready: true, checks: {} }));
  metrics.transaction('mx', 'relayed', 0.1);
  const scrape = await fetch(url('/metrics'));
  assert.equal(scrape.status, 200);
  assert.match(scrape.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  assert.match(await scrape.text(), /^sello_transactions_total\{listener="mx",outcome="relayed"\} 1$/m);
  const health = await fetch(url('/healthz'));
  assert.deepEqual([health.status, await health.text()], [200, 'ok\n']);
  assert.equal((await fetch(url('/'))).status, 404);
  assert.equal((await fetch(url('/metrics/x'))).status, 404);
  assert.equal((await fetch(url('/metrics'), { method: 'POST' })).status, 405);
});

test('/readyz: 200 when every check holds, 503 with a JSON body naming what failed', async (t) => {
  let report: ReadinessReport = { ready: true, checks: { keys: 'ok', 'relay smtp://127.0.0.1:1': 'ok' } };
  const { url } = await endpoint(t, async () => report);
  let response = await fetch(url('/readyz'));
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), { status: 'ready', checks: report.checks });
  report = { ready: false, checks: { keys: 'ok', 'relay smtp://127.0.0.1:1': 'connect ECONNREFUSED' } };
  response = await fetch(url('/readyz'));
  assert.equal(response.status, 503);
  assert.deepEqual(await response.json(), { status: 'not ready', checks: report.checks });
});

test('cachedReadiness: runs checks in parallel, names failures, bounds each by the timeout, caches', async () => {
  let clock = 0;
  let probes = 0;
  let relayUp = false;
  const readiness = cachedReadiness(
    () => [
      { name: 'keys', check: async () => undefined },
      {
        name: 'relay',
        check: async () => {
          probes++;
          if (!relayUp) throw new Error('connect ECONNREFUSED 127.0.0.1:1');
        },
      },
      { name: 'dns', check: () => new Promise<void>(() => undefined) },
    ],
    { cacheMs: 5000, timeoutMs: 50, now: () => clock },
  );
  const [first, concurrent] = await Promise.all([readiness(), readiness()]);
  assert.equal(probes, 1, 'concurrent requests share one evaluation');
  assert.deepEqual(first, { ready: false, checks: { keys: 'ok', relay: 'connect ECONNREFUSED 127.0.0.1:1', dns: 'no answer within 50 ms' } });
  assert.equal(concurrent, first);
  relayUp = true;
  clock = 4999;
  assert.equal((await readiness()).checks.relay, 'connect ECONNREFUSED 127.0.0.1:1', 'cached');
  clock = 5000;
  assert.equal((await readiness()).checks.relay, 'ok');
  assert.equal(probes, 2);
});

test('cachedReadiness: an advisory check shows its reason but never makes sello unready', async () => {
  const readiness = cachedReadiness(
    () => [
      { name: 'keys', check: async () => undefined },
      { name: 'rotation new._domainkey.example.com', advisory: true, check: async () => Promise.reject(new Error('pending, not promoted: revoked')) },
    ],
    { cacheMs: 0 },
  );
  assert.deepEqual(await readiness(), { ready: true, checks: { keys: 'ok', 'rotation new._domainkey.example.com': 'pending, not promoted: revoked' } });
  const failing = cachedReadiness(() => [{ name: 'keys', check: async () => Promise.reject(new Error('0 of 1 keys loaded')) }, { name: 'advice', advisory: true, check: async () => undefined }], { cacheMs: 0 });
  assert.equal((await failing()).ready, false, 'an advisory check does not hide a real failure');
});

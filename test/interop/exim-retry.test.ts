// docs/debian.md "A sello restart must not hold mail": with the shipped retry rule
// (config/exim/retry-content-filter.conf, included verbatim) and Debian's retry rule after it, a
// real Exim that deferred mail while sello's filter listener was down delivers it within a minute
// of sello's return (queue runner every 30s, Debian QUEUEINTERVAL='30s'), and new mail goes at
// once. The control, Debian's rule alone, holds both: that is the trap the rule removes.

import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { startSello, type RunningSello } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { startExim, type Exim } from '../helpers/exim.ts';
import { makeKeys } from '../helpers/sello.ts';
import { SmtpDialog } from '../helpers/smtp-dialog.ts';
import { checkExim, freePort, suiteOptions } from '../helpers/tools.ts';

const snippets = path.join(import.meta.dirname, '../../config/exim');
/** Debian's conf.d/retry/30_exim4-config (exim4-config 4.96). */
const DEBIAN_RETRY_RULE = '*   *   F,2h,15m; G,16h,1h,1.5; F,4d,6h';
const QUEUE_INTERVAL = '30s';

const message = (id: string) =>
  Buffer.from(`From: alice@example.com\r\nTo: bob@remote.example\r\nSubject: ${id}\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <${id}@example.com>\r\n\r\nsent while sello restarts\r\n`);

async function submit(exim: Exim, id: string): Promise<void> {
  const dialog = await SmtpDialog.connect(exim.port, { localAddress: '127.0.0.2' });
  await dialog.command('EHLO client.test');
  assert.match(await dialog.command(`AUTH PLAIN ${Buffer.from('\0alice\0wonderland').toString('base64')}`), /^235 /);
  assert.match(await dialog.command('MAIL FROM:<alice@example.com>'), /^250 /);
  assert.match(await dialog.command('RCPT TO:<bob@remote.example>'), /^250 /);
  assert.match(await dialog.sendData(message(id)), /^250 /, 'Exim takes the mail into its queue while sello is down');
  await dialog.close();
}

async function waitForLog(exim: Exim, pattern: RegExp, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (pattern.test(await exim.mainlog())) return;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  assert.fail(`no ${pattern} in Exim's mainlog within ${timeoutMs} ms:\n${(await exim.mainlog()).split('\n').slice(-15).join('\n')}`);
}

/** Exim as the content-filter tests set it up, with a queue runner and the given retry rules. */
async function setUp(t: TestContext, retryRules: string[]) {
  const { keysDir, records } = await makeKeys([{ domain: 'example.com', selector: 's1', algorithm: 'rsa' }]);
  const filterPort = await freePort();
  const reinjectPort = await freePort();
  const exim = await startExim({
    zone: Object.fromEntries([...records].map(([name, value]) => [name, { TXT: [value] }])),
    localDomains: ['example.net'],
    extraPorts: [reinjectPort],
    mainConfig: [`SELLO_FILTER_PORT = ${filterPort}`, `SELLO_REINJECT_PORT = ${reinjectPort}`, `.include ${snippets}/main-content-filter.conf`],
    routers: [`.include ${snippets}/router-content-filter.conf`],
    transports: [`.include ${snippets}/transport-content-filter.conf`],
    retryRules,
    retryDefault: DEBIAN_RETRY_RULE,
    queueInterval: QUEUE_INTERVAL,
    users: { alice: 'wonderland' },
    relayFromHosts: ['127.0.0.1'],
    captureRemote: true,
  });
  t.after(() => exim.close());
  const config = parseConfig({
    hostname: 'sello.test',
    listeners: [{ name: 'filter', role: 'filter', listen: `127.0.0.1:${filterPort}` }],
    relay: { target: `smtp://127.0.0.1:${reinjectPort}`, starttls: 'never' },
    signing: { keysDir, domains: { 'example.com': 's1' } },
  });
  let sello: RunningSello | undefined;
  t.after(() => sello?.close());
  const startFilter = async () => {
    sello = await startSello(config, silentLogger());
  };
  const stopFilter = async () => {
    await sello?.close();
    sello = undefined;
  };
  return { exim, startFilter, stopFilter };
}

/** Stop sello, send, see Exim defer, start sello; the time from the start to the delivery. */
async function restartWithMailWaiting(exim: Exim, startFilter: () => Promise<void>, stopFilter: () => Promise<void>): Promise<number> {
  await startFilter();
  await stopFilter();
  await submit(exim, 'during-restart');
  await waitForLog(exim, /R=sello_filter T=sello_filter_smtp defer \(111\): Connection refused/, 15_000);
  await startFilter();
  return performance.now();
}

describe('a sello restart does not hold mail in Exim (shipped retry rule)', { ...suiteOptions(checkExim()), concurrency: true }, () => {
  test('with the rule: the deferred mail leaves within a minute of sello\'s return; new mail goes at once', { timeout: 120_000 }, async (t) => {
    const { exim, startFilter, stopFilter } = await setUp(t, [`.include ${snippets}/retry-content-filter.conf`]);
    const started = await restartWithMailWaiting(exim, startFilter, stopFilter);
    await exim.waitForMessages(1, 60_000);
    const seconds = (performance.now() - started) / 1000;
    t.diagnostic(`delivered ${seconds.toFixed(1)} s after sello started`);
    assert.ok(seconds < 60, `delivered ${seconds.toFixed(1)} s after sello started`);
    const sent = performance.now();
    await submit(exim, 'after-restart');
    await exim.waitForMessages(2, 10_000);
    assert.ok(performance.now() - sent < 10_000);
    assert.doesNotMatch(await exim.mainlog(), /retry time not reached/);
  });

  test('control, Debian\'s rule alone: the deferred mail is still queued a minute later, and new mail is held too', { timeout: 120_000 }, async (t) => {
    const { exim, startFilter, stopFilter } = await setUp(t, []);
    await restartWithMailWaiting(exim, startFilter, stopFilter);
    await submit(exim, 'after-restart');
    await waitForLog(exim, /R=sello_filter T=sello_filter_smtp defer \(-54\): retry time not reached for any host/, 15_000);
    await assert.rejects(exim.waitForMessages(1, 60_000), 'nothing delivered within a minute');
  });
});

// Operations end to end: a scripted mix of traffic through an in-process sello (real DNS server
// and real SMTP sink on loopback), then /metrics scraped over HTTP with exact counter values;
// /readyz following the relay target; the decision log (one record per transaction, never a
// password); and sello as a real child process for SIGHUP reloads and SIGTERM draining.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { startSello } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import { startDnsServer } from '../helpers/dns-server.ts';
import { captureLog } from '../helpers/log.ts';
import { makeKeys, recordsResolver, startTestSello } from '../helpers/sello.ts';
import { SmtpDialog, sendMail } from '../helpers/smtp-dialog.ts';
import { startSink } from '../helpers/smtp-sink.ts';
import { freePort } from '../helpers/tools.ts';

const ZONE = {
  'pass.example': { TXT: ['v=spf1 ip4:127.0.0.2 -all'] },
  'fail.example': { TXT: ['v=spf1 ip4:127.0.0.99 -all'] },
  'soft.example': { TXT: ['v=spf1 ip4:127.0.0.99 ~all'] },
  'servfail.example': { fault: 'servfail' as const },
};

const message = (from: string, subject = 'operations') =>
  `From: ${from}\r\nTo: bob@example.net\r\nSubject: ${subject}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <${subject}@x>\r\n\r\nHello.\r\n`;

/** Every sample of `name` (exact name or name{...}), as "labels value" → for exact assertions. */
function series(text: string, name: string): Record<string, number> {
  const found: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const match = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (match && match[1] === name) found[match[2] ?? ''] = Number(match[3]);
  }
  return found;
}

async function scrape(port: number): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(response.status, 200);
  return response.text();
}

/** Polls until `condition` holds (sessions close asynchronously after QUIT). */
async function eventually(condition: () => Promise<boolean> | boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

test('a scripted mix of traffic → exact counters on /metrics', async (t) => {
  const dns = await startDnsServer(ZONE as never);
  t.after(() => dns.close());
  const sink = await startSink();
  t.after(() => sink.close());
  const deadPort = await freePort();
  const sello = await startTestSello(t, {
    keys: [{ domain: 'example.com', selector: 'rsa1', algorithm: 'rsa' }],
    config: {
      listeners: [
        { name: 'submission', role: 'submission', listen: '127.0.0.1:0', trustedNetworks: ['127.0.0.1/32'] },
        { name: 'mx', role: 'mx', listen: '127.0.0.1:0', greetingDelay: 0 },
        { name: 'down', role: 'submission', listen: '127.0.0.1:0', trustedNetworks: ['127.0.0.1/32'], relay: { target: `smtp://127.0.0.1:${deadPort}`, starttls: 'never' } },
      ],
      relay: { target: sink.url, starttls: 'never' },
      inbound: { localDomains: ['example.net'] },
      dns: { servers: [dns.address], timeout: '500ms' },
      metrics: { listen: '127.0.0.1:0' },
    },
    options: { operationsEndpoint: true, readinessCacheMs: 0 },
  });
  const metricsPort = sello.running.operationsAddress!.port;

  // submission: one signed, one unsigned (its From domain has no key).
  let sent = await sendMail(sello.port('submission'), { from: 'alice@example.com', to: ['bob@example.net'], data: message('alice@example.com') });
  assert.equal(sent.data, '250 2.0.0 OK: queued as SINK1');
  sent = await sendMail(sello.port('submission'), { from: 'carol@elsewhere.example', to: ['bob@example.net'], data: message('carol@elsewhere.example') });
  assert.equal(sent.data, '250 2.0.0 OK: queued as SINK2');
  // mx: SPF fail (refused at RCPT), softfail (tagged, relayed), temperror (deferred at RCPT).
  sent = await sendMail(sello.port('mx'), { from: 'alice@fail.example', to: ['bob@example.net'], data: message('alice@fail.example') }, { localAddress: '127.0.0.2' });
  assert.match(sent.rcpt[0]!, /^550 5\.7\.23 /);
  sent = await sendMail(sello.port('mx'), { from: 'alice@soft.example', to: ['bob@example.net'], data: message('alice@soft.example') }, { localAddress: '127.0.0.2' });
  assert.equal(sent.data, '250 2.0.0 OK: queued as SINK3');
  sent = await sendMail(sello.port('mx'), { from: 'alice@servfail.example', to: ['bob@example.net'], data: message('alice@servfail.example') }, { localAddress: '127.0.0.2' });
  assert.match(sent.rcpt[0]!, /^451 4\.7\.24 /);
  // The MTA is down for this listener.
  sent = await sendMail(sello.port('down'), { from: 'alice@example.com', to: ['bob@example.net'], data: message('alice@example.com') });
  assert.equal(sent.mail, '451 4.4.1 Downstream mail server unreachable, try again later');

  await eventually(async () => Object.values(series(await scrape(metricsPort), 'sello_active_connections')).every((value) => value === 0), 'sessions to close');
  const text = await scrape(metricsPort);
  const down = `smtp://127.0.0.1:${deadPort}`;

  assert.deepEqual(series(text, 'sello_transactions_total'), {
    '{listener="submission",outcome="relayed"}': 2,
    '{listener="mx",outcome="relayed"}': 1,
  });
  assert.deepEqual(series(text, 'sello_smtp_replies_total'), {
    '{listener="submission",stage="connect",code="220"}': 2,
    '{listener="submission",stage="helo",code="250"}': 2,
    '{listener="submission",stage="mail",code="250"}': 2,
    '{listener="submission",stage="rcpt",code="250"}': 2,
    '{listener="submission",stage="data",code="354"}': 2,
    '{listener="submission",stage="data",code="250"}': 2,
    '{listener="mx",stage="connect",code="220"}': 3,
    '{listener="mx",stage="helo",code="250"}': 3,
    '{listener="mx",stage="mail",code="250"}': 3,
    '{listener="mx",stage="rcpt",code="550"}': 1,
    '{listener="mx",stage="rcpt",code="250"}': 1,
    '{listener="mx",stage="data",code="354"}': 1,
    '{listener="mx",stage="data",code="250"}': 1,
    '{listener="mx",stage="rcpt",code="451"}': 1,
    '{listener="down",stage="connect",code="220"}': 1,
    '{listener="down",stage="helo",code="250"}': 1,
    '{listener="down",stage="mail",code="451"}': 1,
    // smtp-server's own reply to the RCPT that followed the refused MAIL is counted too.
    '{listener="down",stage="rcpt",code="503"}': 1,
  });
  assert.deepEqual(series(text, 'sello_spf_results_total'), {
    '{identity="mailfrom",result="fail",action="reject"}': 1,
    '{identity="mailfrom",result="softfail",action="tag"}': 1,
    '{identity="mailfrom",result="temperror",action="defer"}': 1,
  });
  assert.deepEqual(series(text, 'sello_dkim_signatures_total'), { '{domain="example.com",selector="rsa1",algorithm="rsa-sha256",result="signed"}': 1 });
  assert.deepEqual(series(text, 'sello_unsigned_messages_total'), {
    '{listener="submission",reason="domain-not-configured"}': 1,
    '{listener="mx",reason="listener-does-not-sign"}': 1,
  });
  assert.deepEqual(series(text, 'sello_dkim_verifications_total'), { '{result="none"}': 1 });
  assert.deepEqual(series(text, 'sello_dmarc_results_total'), { '{result="none",policy="none"}': 1 });
  assert.deepEqual(series(text, 'sello_arc_results_total'), { '{result="none"}': 1 });
  assert.deepEqual(series(text, 'sello_relay_errors_total'), { [`{relay="${down}",kind="unreachable"}`]: 1 });
  assert.deepEqual(series(text, 'sello_active_connections'), { '{listener="submission"}': 0, '{listener="mx"}': 0, '{listener="down"}': 0 });
  assert.deepEqual(series(text, 'sello_transaction_duration_seconds_count'), { '{listener="submission"}': 2, '{listener="mx"}': 1 });
  assert.deepEqual(series(text, 'sello_relay_duration_seconds_count'), { [`{relay="${sink.url}"}`]: 3 });
  assert.deepEqual(series(text, 'sello_spf_duration_seconds_count'), { '': 3 });
  assert.deepEqual(series(text, 'sello_signing_duration_seconds_count'), { '': 1 });
  // One per lookup that went to the DNS server: the three SPF domains, then DMARC's
  // _dmarc.soft.example and, finding none, the organizational domain's _dmarc.example
  // (RFC 7489 §6.6.3). The server saw exactly those.
  assert.deepEqual(dns.queries.map((query) => query.name), ['fail.example', 'soft.example', '_dmarc.soft.example', '_dmarc.example', 'servfail.example']);
  assert.deepEqual(series(text, 'sello_dns_query_duration_seconds_count'), { '': 5 });
  assert.deepEqual(series(text, 'sello_key_info'), { '{domain="example.com",selector="rsa1",algorithm="rsa-sha256",bits="2048"}': 1 });
  assert.deepEqual(Object.keys(series(text, 'sello_key_age_seconds')), ['{domain="example.com",selector="rsa1"}']);
  assert.deepEqual(series(text, 'sello_config_reloads_total'), { '{result="success"}': 0, '{result="failure"}': 0 });
  assert.ok((series(text, 'sello_config_last_reload_success_timestamp_seconds')[''] ?? 0) > 1.7e9);
  assert.match(text, /^sello_build_info\{version="\d+\.\d+\.\d+",node_version="v\d+\.\d+\.\d+"\} 1$/m);
  assert.match(text, /^sello_process_cpu_seconds_total /m);
  // Bounded labels: no client address, HELO or unconfigured domain anywhere.
  for (const leak of ['127.0.0.2', 'client.test', 'elsewhere.example', 'fail.example', 'soft.example', 'alice']) {
    assert.ok(!text.includes(leak), `${leak} must not be a label value`);
  }

  // /readyz names the relay that is down; DNS answers (NXDOMAIN counts); keys are loaded.
  const ready = await fetch(`http://127.0.0.1:${metricsPort}/readyz`);
  assert.equal(ready.status, 503);
  const body = (await ready.json()) as { status: string; checks: Record<string, string> };
  assert.equal(body.status, 'not ready');
  assert.equal(body.checks.listeners, 'ok');
  assert.equal(body.checks.keys, 'ok');
  assert.equal(body.checks.dns, 'ok');
  assert.equal(body.checks[`relay ${sink.url}`], 'ok');
  assert.match(body.checks[`relay ${down}`] ?? '', /ECONNREFUSED/);
  assert.equal((await fetch(`http://127.0.0.1:${metricsPort}/healthz`)).status, 200);
});

/** A minimal SMTP server on `port` for probes: greets, answers QUIT. */
async function greeter(port: number): Promise<net.Server> {
  const server = net.createServer((socket) => {
    socket.write('220 mta.test ESMTP\r\n');
    socket.on('data', () => socket.end('221 bye\r\n'));
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return server;
}

test('/readyz: 503 while the relay target is down, 200 once it answers, 503 again when it goes', async (t) => {
  const port = await freePort();
  const sello = await startTestSello(t, {
    config: {
      listeners: [{ name: 'submission', role: 'submission', listen: '127.0.0.1:0', trustedNetworks: ['127.0.0.1/32'] }],
      relay: { target: `smtp://127.0.0.1:${port}`, starttls: 'never' },
      metrics: { listen: '127.0.0.1:0' },
    },
    options: { operationsEndpoint: true, readinessCacheMs: 0 },
  });
  const readyz = async () => {
    const response = await fetch(`http://127.0.0.1:${sello.running.operationsAddress!.port}/readyz`);
    return { status: response.status, body: (await response.json()) as { checks: Record<string, string> } };
  };
  let answer = await readyz();
  assert.equal(answer.status, 503);
  assert.match(answer.body.checks[`relay smtp://127.0.0.1:${port}`]!, /ECONNREFUSED/);
  assert.equal(answer.body.checks.dns, undefined, 'no mx listener: DNS is not needed');
  const mta = await greeter(port);
  answer = await readyz();
  assert.deepEqual(answer, { status: 200, body: { status: 'ready', checks: { listeners: 'ok', keys: 'ok', [`relay smtp://127.0.0.1:${port}`]: 'ok' } } });
  await new Promise<void>((resolve) => mta.close(() => resolve()));
  assert.equal((await readyz()).status, 503);
});

test('decision log: one complete record per transaction; AUTH passwords never appear in the log', async (t) => {
  const password = 'Tr0ub4dor&3-horse';
  const wrongPassword = 'n0t-the-Passw0rd';
  const sink = await startSink({ auth: { username: 'alice', password } });
  t.after(() => sink.close());
  const dns = await startDnsServer(ZONE as never);
  t.after(() => dns.close());
  const log = captureLog('trace');
  const sello = await startTestSello(t, {
    keys: [{ domain: 'example.com', selector: 'ed1', algorithm: 'ed25519' }],
    config: {
      listeners: [
        { name: 'submission', role: 'submission', listen: '127.0.0.1:0' },
        { name: 'mx', role: 'mx', listen: '127.0.0.1:0', greetingDelay: 0 },
      ],
      relay: { target: sink.url, starttls: 'never' },
      inbound: { localDomains: ['example.net'] },
      dns: { servers: [dns.address], timeout: '500ms' },
      logging: { level: 'trace' },
    },
    // The most verbose level there is: nothing sello logs may carry the password.
    logger: log.logger,
  });

  const dialog = await SmtpDialog.connect(sello.port('submission'));
  await dialog.command('EHLO client.test');
  assert.match(await dialog.command(`AUTH PLAIN ${Buffer.from(`\0alice\0${wrongPassword}`).toString('base64')}`), /^535 /);
  assert.match(await dialog.command('AUTH LOGIN'), /^334 /);
  assert.match(await dialog.command(Buffer.from('alice').toString('base64')), /^334 /);
  assert.match(await dialog.command(Buffer.from(password).toString('base64')), /^235 /);
  assert.match(await dialog.command('MAIL FROM:<alice@example.com>'), /^250 /);
  assert.match(await dialog.command('RCPT TO:<bob@example.net>'), /^250 /);
  assert.equal(await dialog.sendData(message('alice@example.com')), '250 2.0.0 OK: queued as SINK1');
  await dialog.close();
  await sendMail(sello.port('mx'), { from: 'alice@fail.example', to: ['bob@example.net'], data: message('alice@fail.example') }, { localAddress: '127.0.0.2' });
  await eventually(() => log.records().filter((record) => record.msg === 'transaction').length === 2, 'two transaction records');
  await sello.running.close();

  const text = log.text();
  // The log did see the AUTH exchange (the refusal is logged with the user name)…
  assert.match(text, /"user":"alice".*"msg":"authentication refused by the MTA"/);
  // …and holds neither password in any form a client sent it.
  for (const secret of [password, wrongPassword]) {
    for (const form of [secret, Buffer.from(secret).toString('base64'), Buffer.from(`\0alice\0${secret}`).toString('base64')]) {
      assert.ok(!text.includes(form), `the log must not contain ${JSON.stringify(form)}`);
    }
  }
  const transactions = log.records().filter((record) => record.msg === 'transaction');
  assert.equal(transactions.length, 2, 'exactly one record per transaction');
  const [submitted, refused] = transactions as [Record<string, any>, Record<string, any>];
  assert.equal(submitted.level, 30);
  assert.equal(submitted.listener, 'submission');
  assert.equal(submitted.client, '127.0.0.1');
  assert.equal(submitted.user, 'alice');
  assert.equal(typeof submitted.session, 'string');
  assert.equal(submitted.outcome, 'relayed');
  assert.deepEqual(submitted.signatures, [{ domain: 'example.com', selector: 'ed1', algorithm: 'ed25519-sha256' }]);
  assert.deepEqual(submitted.relay, { relay: sink.url, code: 250, queueId: 'SINK1' });
  assert.equal(submitted.spf, undefined, 'SPF is evaluated on mx only');
  for (const duration of ['totalMs', 'signingMs', 'relayMs']) assert.equal(typeof submitted.durations[duration], 'number', duration);
  assert.equal(refused.listener, 'mx');
  assert.equal(refused.client, '127.0.0.2');
  assert.equal(refused.outcome, 'rejected');
  assert.deepEqual(refused.spf, { result: 'fail', identity: 'mailfrom', domain: 'fail.example', action: 'reject' });
  assert.deepEqual(refused.refusedRecipients, [550]);
  assert.equal(refused.recipients, 0);
  assert.equal(typeof refused.durations.spfMs, 'number');
  assert.equal(typeof refused.durations.totalMs, 'number');
});

// ── sello as a real process ─────────────────────────────────────────────────────────────────

const bin = path.join(import.meta.dirname, '../../bin/sello.js');

interface Child {
  process: ChildProcess;
  /** stdout so far: pino JSON lines. */
  log(): Record<string, unknown>[];
  exit: Promise<number | null>;
}

async function startChild(t: TestContext, configFile: string, listenPort: number): Promise<Child> {
  const child = spawn(process.execPath, [bin, 'serve', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (text: string) => (stdout += text));
  child.stderr!.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  const exit = once(child, 'exit').then(([code]) => code as number | null);
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  await eventually(() => stderr.includes(`listening on 127.0.0.1:${listenPort}`) || child.exitCode !== null, 'sello to listen', 15_000);
  assert.equal(child.exitCode, null, `sello exited: ${stderr}`);
  return {
    process: child,
    log: () => stdout.split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as Record<string, unknown>),
    exit,
  };
}

async function childSetup(t: TestContext, sinkOptions: Parameters<typeof startSink>[0] = {}) {
  const sink = await startSink(sinkOptions);
  t.after(() => sink.close());
  const dir = await mkdtemp(path.join(tmpdir(), 'sello-operations-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const keysDir = path.join(dir, 'keys');
  const [smtpPort, metricsPort] = [await freePort(), await freePort()];
  const configFile = path.join(dir, 'sello.yaml');
  const writeConfig = (selectors: string[], extra = '') =>
    writeFile(
      configFile,
      [
        'hostname: sello.test',
        'listeners:',
        `  - { name: submission, role: submission, listen: "127.0.0.1:${smtpPort}", trustedNetworks: ["127.0.0.1/32"] }`,
        `relay: { target: "${sink.url}", starttls: never }`,
        `signing: { keysDir: "${keysDir}", domains: { example.com: [${selectors.join(', ')}] } }`,
        `metrics: { listen: "127.0.0.1:${metricsPort}" }`,
        extra,
      ].join('\n'),
    );
  return { sink, keysDir, smtpPort, metricsPort, configFile, writeConfig };
}

/** The s= of each DKIM-Signature, and whether each verifies against `records`. */
async function signatures(data: Buffer, records: Map<string, string>) {
  const result = await dkimVerify(data, { resolver: recordsResolver(records) as never });
  return result.results.map((entry) => `${entry.selector}:${entry.status?.result}`);
}

test('SIGHUP: a new selector key and config take effect for new transactions; an open one finishes with the old; a broken config keeps the old one', async (t) => {
  const setup = await childSetup(t);
  const { records } = await makeKeys([{ domain: 'example.com', selector: 's1', algorithm: 'ed25519' }], setup.keysDir);
  await setup.writeConfig(['s1']);
  const child = await startChild(t, setup.configFile, setup.smtpPort);
  const submit = () => sendMail(setup.smtpPort, { from: 'alice@example.com', to: ['bob@example.net'], data: message('alice@example.com') });

  assert.match((await submit()).data ?? '', /^250 /);
  assert.deepEqual(await signatures(setup.sink.messages[0]!.data, records), ['s1:pass']);

  // A transaction opened before the reload…
  const open = await SmtpDialog.connect(setup.smtpPort);
  await open.command('EHLO client.test');
  assert.match(await open.command('MAIL FROM:<alice@example.com>'), /^250 /);
  assert.match(await open.command('RCPT TO:<bob@example.net>'), /^250 /);

  const added = await makeKeys([{ domain: 'example.com', selector: 's2', algorithm: 'rsa' }], setup.keysDir);
  for (const [name, value] of added.records) records.set(name, value);
  await setup.writeConfig(['s2']);
  child.process.kill('SIGHUP');
  await eventually(() => child.log().some((record) => record.msg === 'config reloaded'), 'the reload');

  // …finishes with the config it started with; the next one gets the new key.
  assert.match(await open.sendData(message('alice@example.com', 'open')), /^250 /);
  await open.close();
  assert.deepEqual(await signatures(setup.sink.messages[1]!.data, records), ['s1:pass']);
  assert.match((await submit()).data ?? '', /^250 /);
  assert.deepEqual(await signatures(setup.sink.messages[2]!.data, records), ['s2:pass']);

  // A config naming a key that does not exist: refused, logged, counted; s2 keeps signing.
  await setup.writeConfig(['s2', 's3']);
  child.process.kill('SIGHUP');
  await eventually(() => child.log().some((record) => record.msg === 'config reload failed: the running configuration stays in effect'), 'the failed reload');
  const failure = child.log().find((record) => record.msg === 'config reload failed: the running configuration stays in effect')!;
  assert.equal(failure.level, 50);
  assert.equal(failure.path, 'signing.domains["example.com"]');
  assert.match(String(failure.err), new RegExp(`selector "s3": ${path.join(setup.keysDir, 'example.com', 's3.pem').replace(/[.]/g, '\\.')}: no such key file`));
  // YAML that does not parse is refused the same way.
  await writeFile(setup.configFile, 'listeners: [\n');
  child.process.kill('SIGHUP');
  await eventually(() => child.log().filter((record) => record.msg === 'config reload failed: the running configuration stays in effect').length === 2, 'the second failed reload');

  const metrics = await scrape(setup.metricsPort);
  assert.deepEqual(series(metrics, 'sello_config_reloads_total'), { '{result="success"}': 1, '{result="failure"}': 2 });
  assert.deepEqual(series(metrics, 'sello_key_info'), { '{domain="example.com",selector="s2",algorithm="rsa-sha256",bits="2048"}': 1 });
  assert.match((await submit()).data ?? '', /^250 /);
  assert.deepEqual(await signatures(setup.sink.messages[3]!.data, records), ['s2:pass']);

  child.process.kill('SIGTERM');
  assert.equal(await child.exit, 0);
});

/** A session whose message is sent and whose reply the (slow) sink still holds back. */
async function messageInFlight(port: number): Promise<SmtpDialog> {
  const busy = await SmtpDialog.connect(port);
  await busy.command('EHLO client.test');
  await busy.command('MAIL FROM:<alice@example.com>');
  await busy.command('RCPT TO:<bob@example.net>');
  await busy.command('DATA');
  busy.write(`${message('alice@example.com')}.\r\n`);
  await new Promise((resolve) => setTimeout(resolve, 200));
  return busy;
}

test('SIGTERM: the in-flight transaction completes, idle sessions get 421, new connections are refused, exit 0', async (t) => {
  const setup = await childSetup(t, { dataDelayMs: 1000 });
  await makeKeys([{ domain: 'example.com', selector: 's1', algorithm: 'ed25519' }], setup.keysDir);
  await setup.writeConfig(['s1']);
  const child = await startChild(t, setup.configFile, setup.smtpPort);

  const busy = await SmtpDialog.connect(setup.smtpPort);
  await busy.command('EHLO client.test');
  await busy.command('MAIL FROM:<alice@example.com>');
  await busy.command('RCPT TO:<bob@example.net>');
  assert.match(await busy.command('DATA'), /^354 /);
  const idle = await SmtpDialog.connect(setup.smtpPort);
  assert.match(await idle.command('EHLO client.test'), /^250/);
  const between = await SmtpDialog.connect(setup.smtpPort);
  await between.command('EHLO client.test');
  assert.match(await between.command('MAIL FROM:<alice@example.com>'), /^250 /);

  busy.write(`${message('alice@example.com')}.\r\n`);
  // The message reaches the sink, which holds its reply for 1 s.
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(setup.sink.messages.length, 0);
  const stoppedAt = Date.now();
  child.process.kill('SIGTERM');

  // Outside a transaction: 421 at once.
  assert.equal(await idle.readReply(1000), '421 4.3.2 Service shutting down, try again later');
  await eventually(() => idle.closed, 'the idle session to close');
  // Refused by the OS: nothing listens any more.
  await eventually(
    () =>
      new Promise<boolean>((resolve) => {
        const socket = net.connect(setup.smtpPort, '127.0.0.1');
        socket.once('connect', () => (socket.destroy(), resolve(false)));
        socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code === 'ECONNREFUSED'));
      }),
    'new connections to be refused',
    1000,
  );
  // Inside a transaction: it may go on, and finish.
  assert.match(await between.command('RCPT TO:<bob@example.net>'), /^250 /);
  // The message under way is answered with the MTA's 250, after the sink's delay.
  assert.equal(await busy.readReply(5000), '250 2.0.0 OK: queued as SINK1');
  assert.ok(Date.now() - stoppedAt >= 500, 'the 250 came well after SIGTERM');
  // The next command after the finished transaction gets the 421.
  assert.equal(await busy.command('MAIL FROM:<alice@example.com>'), '421 4.3.2 Service shutting down, try again later');
  assert.equal(setup.sink.messages.length, 1);
  between.write('DATA\r\n');
  assert.match(await between.readReply(), /^354 /);
  assert.match(await between.sendMessage(message('alice@example.com', 'between')), /^250 2\.0\.0 OK: queued as SINK2/);
  assert.equal(await between.command('QUIT'), '221 Bye');
  assert.equal(await child.exit, 0);
});

test('SIGTERM: a transaction still running at shutdown.deadline gets 421, and sello exits 0', async (t) => {
  // The sink holds the message far longer than the deadline, so the bounds below leave room
  // for a loaded machine and still tell "deadline" from "waited for the sink".
  const setup = await childSetup(t, { dataDelayMs: 6000 });
  await makeKeys([{ domain: 'example.com', selector: 's1', algorithm: 'ed25519' }], setup.keysDir);
  await setup.writeConfig(['s1'], 'shutdown: { deadline: 300ms }');
  const child = await startChild(t, setup.configFile, setup.smtpPort);
  const busy = await messageInFlight(setup.smtpPort);
  const stoppedAt = Date.now();
  child.process.kill('SIGTERM');
  assert.equal(await busy.readReply(3000), '421 4.3.2 Service shutting down, try again later');
  assert.equal(await child.exit, 0);
  assert.ok(Date.now() - stoppedAt < 3000, `exited after ${Date.now() - stoppedAt} ms`);
});

test('SIGTERM twice: the second one does not wait for shutdown.deadline', async (t) => {
  const setup = await childSetup(t, { dataDelayMs: 6000 });
  await makeKeys([{ domain: 'example.com', selector: 's1', algorithm: 'ed25519' }], setup.keysDir);
  await setup.writeConfig(['s1'], 'shutdown: { deadline: 30s }');
  const child = await startChild(t, setup.configFile, setup.smtpPort);
  const busy = await messageInFlight(setup.smtpPort);
  child.process.kill('SIGTERM');
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(child.process.exitCode, null, 'still draining');
  const stoppedAt = Date.now();
  child.process.kill('SIGTERM');
  assert.equal(await busy.readReply(3000), '421 4.3.2 Service shutting down, try again later');
  assert.equal(await child.exit, 0);
  assert.ok(Date.now() - stoppedAt < 3000, `exited ${Date.now() - stoppedAt} ms after the second SIGTERM`);
});

test('reload in-process: kept listeners keep their socket and take the new rules; moved, changed, added and removed listeners; a bind failure changes nothing', async (t) => {
  const sink = await startSink();
  t.after(() => sink.close());
  const [keptPort, movedFrom, movedTo, changedPort, addedPort] = [await freePort(), await freePort(), await freePort(), await freePort(), await freePort()];
  const base = (listeners: Record<string, unknown>[]) =>
    parseConfig({ hostname: 'sello.test', listeners, relay: { target: sink.url, starttls: 'never' }, shutdown: { deadline: '1s' } });
  const kept = { name: 'kept', role: 'submission', listen: `127.0.0.1:${keptPort}`, trustedNetworks: ['127.0.0.1/32'] };
  const moved = { name: 'moved', role: 'submission', listen: `127.0.0.1:${movedFrom}`, trustedNetworks: ['127.0.0.1/32'] };
  const changed = { name: 'changed', role: 'submission', listen: `127.0.0.1:${changedPort}`, trustedNetworks: ['127.0.0.1/32'] };
  const removed = { name: 'removed', role: 'submission', listen: '127.0.0.1:0', trustedNetworks: ['127.0.0.1/32'] };
  const log = captureLog();
  const running = await startSello(base([kept, moved, changed, removed]), log.logger);
  t.after(() => running.close());
  const removedPort = running.addresses.get('removed')!.port;

  // A session on the kept listener, connected before the reload.
  const before = await SmtpDialog.connect(keptPort);
  await before.command('EHLO client.test');

  // A bind failure (the added listener's port is taken) leaves everything as it was.
  const squatter = net.createServer();
  await new Promise<void>((resolve) => squatter.listen(addedPort, '127.0.0.1', resolve));
  const next = base([
    { ...kept, trustedNetworks: ['192.0.2.0/24'] },
    { ...moved, listen: `127.0.0.1:${movedTo}` },
    { ...changed, tls: { mode: 'starttls' } },
    { name: 'added', role: 'submission', listen: `127.0.0.1:${addedPort}`, trustedNetworks: ['127.0.0.1/32'] },
  ]);
  assert.equal(await running.reload(async () => next), false);
  assert.match(log.text(), /"level":50.*EADDRINUSE.*"msg":"config reload failed: the running configuration stays in effect"/);
  assert.deepEqual([...running.addresses.keys()], ['kept', 'moved', 'changed', 'removed']);
  for (const port of [keptPort, movedFrom, changedPort, removedPort]) {
    assert.match((await sendMail(port, { from: 'alice@example.com', to: ['bob@example.net'], data: message('alice@example.com') })).data ?? '', /^250 /, `port ${port} still serves`);
  }
  const ehlo = await sendMail(changedPort, { from: 'alice@example.com', to: ['bob@example.net'], data: message('alice@example.com') });
  assert.doesNotMatch(ehlo.ehlo, /STARTTLS/, 'the changed listener was rebound as it was');

  await new Promise<void>((resolve) => squatter.close(() => resolve()));
  assert.equal(await running.reload(async () => next), true);
  assert.deepEqual(
    [...running.addresses].map(([name, address]) => `${name}:${address.port}`),
    [`kept:${keptPort}`, `moved:${movedTo}`, `changed:${changedPort}`, `added:${addedPort}`],
  );
  // Kept: same socket, the session opened before goes on, under the new trust rules.
  assert.equal(await before.command('MAIL FROM:<alice@example.com>'), '530 5.7.0 Authentication required');
  await before.close();
  // Changed: same address, now with STARTTLS; moved and added serve; the old addresses refuse.
  assert.match((await sendMail(changedPort, { from: 'a@example.com', to: ['b@example.net'], data: message('a@example.com') })).ehlo, /STARTTLS/);
  for (const port of [movedTo, addedPort]) {
    assert.match((await sendMail(port, { from: 'alice@example.com', to: ['bob@example.net'], data: message('alice@example.com') })).data ?? '', /^250 /);
  }
  for (const port of [movedFrom, removedPort]) {
    await assert.rejects(SmtpDialog.connect(port), /ECONNREFUSED/, `port ${port} is closed`);
  }
  const text = await running.metrics.registry.metrics();
  assert.deepEqual(series(text, 'sello_config_reloads_total'), { '{result="success"}': 1, '{result="failure"}': 1 });
});

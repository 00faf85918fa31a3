// DNS-gated key rotation end to end (docs/rotation.md): sello running with a short check
// interval, `sello rotate` run against its keys directory, the new key's record published (or
// not, or wrong) on the loopback DNS server, real SMTP in and a sink on loopback out. The
// signatures are checked by selector and, under load, by dkimpy against the same DNS server.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createPrivateKey } from 'node:crypto';
import { chmod, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { main } from '../../src/cli/run.ts';
import { dnsRecordValue, generateKey } from '../../src/signing/keys.ts';
import { verifyWithDkimpy } from '../helpers/dkimpy.ts';
import { withoutCapabilities } from '../helpers/capabilities.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { captureLog, type CapturedLog } from '../helpers/log.ts';
import { poll } from '../helpers/mta-harness.ts';
import { runCommand } from '../helpers/cli.ts';
import { startTestSello, type TestSello } from '../helpers/sello.ts';
import { sendMail } from '../helpers/smtp-dialog.ts';
import { startSink, type Sink } from '../helpers/smtp-sink.ts';
import { checkDkimpy, removeTempDir, requireTool, tempDir } from '../helpers/tools.ts';

const CHECK_INTERVAL_MS = 300;

const message = (n: number) =>
  `From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: rotation ${String(n)}\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <${String(n)}@example.com>\r\n\r\nMessage ${String(n)}.\r\n`;

/** The s= of every DKIM-Signature in a delivered message. */
function selectors(data: Buffer): string[] {
  const header = data.toString('latin1').split('\r\n\r\n')[0] ?? '';
  return [...header.matchAll(/^DKIM-Signature:[^]*?(?=\r\n(?![ \t]))/gim)].map((field) => /[;\s]s=([^;\s]+)/.exec(field[0])?.[1] ?? '?');
}

async function setup(t: TestContext, log: CapturedLog, checkIntervalMs = CHECK_INTERVAL_MS): Promise<{ sello: TestSello; sink: Sink; dns: DnsServer; send: (n: number) => Promise<string[]> }> {
  const sink = await startSink();
  t.after(() => sink.close());
  const dns = await startDnsServer();
  t.after(() => dns.close());
  const sello = await startTestSello(t, {
    keys: [{ domain: 'example.com', selector: 'old', algorithm: 'rsa' }],
    logger: log.logger,
    config: {
      listeners: [{ name: 'submission', role: 'submission', listen: '127.0.0.1:0', trustedNetworks: ['127.0.0.1/32'] }],
      relay: { target: sink.url, starttls: 'never' },
      dns: { servers: [dns.address], timeout: '2s' },
      signing: { rotation: { checkInterval: `${String(checkIntervalMs)}ms`, confirmations: 2 } },
    },
    options: { readinessCacheMs: 0 },
  });
  dns.set('old._domainkey.example.com', { TXT: [sello.records.get('old._domainkey.example.com') ?? ''] });
  const send = async (n: number) => {
    const sent = await sendMail(sello.port('submission'), { from: 'alice@example.com', to: ['bob@example.net'], data: message(n) });
    assert.match(sent.data ?? '', /^250 /);
    const delivered = sink.messages.find((entry) => entry.data.includes(`Message-ID: <${String(n)}@example.com>`));
    assert.ok(delivered, `message ${String(n)} delivered`);
    return selectors(delivered.data);
  };
  return { sello, sink, dns, send };
}

const logged = (log: CapturedLog, msg: string, extra: (record: Record<string, unknown>) => boolean = () => true) =>
  poll(
    async () => log.records().filter((record) => record.msg === msg && extra(record)),
    (records) => records.length > 0,
    15_000,
    async () => `no log "${msg}"; log:\n${log.text()}`,
    20,
  );

test('a pending key is not used while its record is absent, wrong or revoked, and signs from the first message after DNS served it twice', async (t) => {
  const log = captureLog();
  const { sello, dns, send } = await setup(t, log);
  const rotated = await runCommand(main, ['rotate', 'example.com', '--keys-dir', sello.keysDir, '--selector', 'new', '--format', 'value']);
  assert.equal(rotated.code, 0, rotated.err);
  const record = rotated.out.trim();
  const name = 'new._domainkey.example.com';

  await logged(log, 'pending DKIM key: its record is not published yet, not promoted', (r) => r.selector === 'new');
  assert.deepEqual(await send(1), ['old']);

  dns.set(name, { TXT: [dnsRecordValue(createPrivateKey(generateKey('rsa')))] });
  const [wrong] = await logged(log, 'pending DKIM key: its record is wrong, not promoted', (r) => r.state === 'mismatch');
  assert.equal(wrong?.reason, 'p= is a different public key');
  assert.equal(wrong?.level, 40, 'a wrong record is a warning');
  const report = await sello.running.readiness();
  assert.equal(report.ready, true, 'a wrong pending record does not make sello unready: the old key still signs');
  assert.equal(report.checks[`rotation ${name}`], 'pending, not promoted: mismatch (p= is a different public key)');
  assert.deepEqual(await send(2), ['old']);

  dns.set(name, { TXT: ['v=DKIM1; k=rsa; p='] }); // RFC 6376 §3.6.1: an empty p= revokes
  await logged(log, 'pending DKIM key: its record is wrong, not promoted', (r) => r.state === 'revoked');
  // Several check intervals with the revoked record: still never promoted.
  await new Promise((resolve) => setTimeout(resolve, CHECK_INTERVAL_MS * 4));
  assert.deepEqual(await send(3), ['old']);
  assert.equal(log.records().filter((r) => r.msg === 'DKIM key promoted: DNS serves its record, it signs from now on').length, 0);
  assert.match(await sello.running.metrics.registry.getSingleMetricAsString('sello_dkim_key_state'), /sello_dkim_key_state\{domain="example.com",selector="new",state="pending"\} 1/);

  const publishedAt = Date.now();
  dns.set(name, { TXT: [record] });
  const [switched] = await logged(log, 'signing keys switched (key rotation)', (r) => JSON.stringify(r.signing) === '{"example.com":["new"]}');
  const switchedAt = Date.now();
  assert.ok(switched);
  assert.ok(switchedAt - publishedAt >= CHECK_INTERVAL_MS * 0.99, `switched ${String(switchedAt - publishedAt)} ms after publishing: the record must be seen twice, a check interval apart`);
  assert.equal(log.records().filter((r) => r.msg === 'signing keys switched (key rotation)').length, 1, 'one switch, when the key was promoted');
  const sightings = log.records().filter((r) => r.msg === 'pending DKIM key: DNS serves its record').map((r) => r.seen);
  assert.deepEqual(sightings, [1, 2]);
  assert.deepEqual(await send(4), ['new'], 'the first message after the switch is signed with the new key only');

  const [promoted] = log.records().filter((r) => r.msg === 'DKIM key promoted: DNS serves its record, it signs from now on');
  assert.equal(promoted?.recorded, 'rotation.yaml');
  const state = await readFile(join(sello.keysDir, 'example.com', 'rotation.yaml'), 'utf8');
  assert.match(state, /- selector: new\n {4}state: active\n/);
  assert.match(state, /- selector: old\n {4}state: retiring\n/);
  const metrics = await sello.running.metrics.registry.metrics();
  assert.match(metrics, /sello_dkim_key_state\{domain="example.com",selector="new",state="active"\} 1/);
  assert.match(metrics, /sello_dkim_key_state\{domain="example.com",selector="old",state="retiring"\} 1/);
  assert.match(metrics, /sello_dkim_key_promotions_total\{domain="example.com"\} 1/);
  assert.match(metrics, /sello_key_info\{domain="example.com",selector="new",algorithm="rsa-sha256",bits="2048"\} 1/);
});

test('under continuous load during the switch, every message carries one valid signature of one of the two keys (dkimpy, same DNS)', async (t) => {
  if (!requireTool(t, checkDkimpy())) return;
  const log = captureLog();
  const { sello, sink, dns, send } = await setup(t, log);
  const rotated = await runCommand(main, ['rotate', 'example.com', '--keys-dir', sello.keysDir, '--selector', 'new', '--format', 'value']);
  assert.equal(rotated.code, 0, rotated.err);
  dns.set('new._domainkey.example.com', { TXT: [rotated.out.trim()] });

  // Two clients sending back to back until a few messages after the switch (bounded in count and time).
  const deadline = Date.now() + 30_000;
  let counter = 0;
  const switched = () => log.records().some((r) => r.msg === 'signing keys switched (key rotation)');
  assert.equal(switched(), false, 'nothing switches before the record was seen');
  const client = async () => {
    const seen: string[][] = [];
    let afterSwitch = 0;
    while (afterSwitch < 5 && counter < 400 && Date.now() < deadline) {
      const wasSwitched = switched();
      seen.push(await send(++counter));
      if (wasSwitched) afterSwitch++;
    }
    return seen;
  };
  const sequences = await Promise.all([client(), client()]);
  assert.ok(switched(), 'the server switched during the load');
  for (const sequence of sequences) {
    for (const signatures of sequence) assert.equal(signatures.length, 1, 'exactly one signature per message');
    const flat = sequence.map((signatures) => signatures[0]);
    const firstNew = flat.indexOf('new');
    assert.ok(firstNew > 0, `each client saw old then new: ${flat.join(',')}`);
    assert.ok(flat.slice(0, firstNew).every((s) => s === 'old') && flat.slice(firstNew).every((s) => s === 'new'), `no message signed with the old key after the new one: ${flat.join(',')}`);
  }

  for (const delivered of sink.messages) {
    const verification = await verifyWithDkimpy(delivered.data, { host: dns.host, port: dns.port });
    assert.equal(verification.signatures.length, 1);
    const [signature] = verification.signatures;
    assert.ok(signature?.ok, `dkimpy: ${JSON.stringify(signature)}`);
    assert.ok(['old', 'new'].includes(signature.selector));
  }
  t.diagnostic(`${String(sink.messages.length)} messages during the switch, each verified by dkimpy`);
  assert.ok(sink.messages.length >= 12, `${String(sink.messages.length)} messages`);
});

test('two sello processes sharing one keys directory switch within one check period of each other', async (t) => {
  const interval = 1500;
  const keysDir = await tempDir(t);
  const made = await runCommand(main, ['keygen', 'example.com', '--selector', 'old', '--keys-dir', keysDir, '--format', 'value']);
  assert.equal(made.code, 0, made.err);
  const dns = await startDnsServer({ 'old._domainkey.example.com': { TXT: [made.out.trim()] } });
  t.after(() => dns.close());
  const configFile = join(keysDir, 'sello.yaml');
  await writeFile(
    configFile,
    [
      'hostname: sello.test',
      'listeners:',
      '  - {name: submission, role: submission, listen: "127.0.0.1:0", trustedNetworks: [127.0.0.1/32]}',
      `relay: {target: "dir:${join(keysDir, 'mail')}"}`,
      `signing: {keysDir: "${keysDir}", domains: {example.com: old}, rotation: {checkInterval: ${String(interval)}ms, confirmations: 2}}`,
      `dns: {servers: ["${dns.address}"]}`,
      'metrics: {listen: "127.0.0.1:0"}',
      'shutdown: {deadline: 1s}',
      '',
    ].join('\n'),
  );
  const sello = fileURLToPath(new URL('../../bin/sello.js', import.meta.url));
  const start = () => {
    const child = spawn(process.execPath, [sello, 'serve', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    const state = { child, output: '', switchedAt: undefined as number | undefined, listening: false };
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      state.output += chunk;
      if (state.switchedAt === undefined && state.output.includes('"msg":"signing keys switched (key rotation)"')) state.switchedAt = Date.now();
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      state.output += chunk;
      if (chunk.includes('submission listening on')) state.listening = true;
    });
    t.after(async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5000))]);
      child.kill('SIGKILL');
    });
    return state;
  };
  // The second starts half a period later, so their checks do not fall at the same moments.
  const processes = [start()];
  await poll(async () => processes.every((p) => p.listening), Boolean, 20_000, async () => processes.map((p) => p.output).join('\n---\n'), 50);
  await new Promise((resolve) => setTimeout(resolve, interval / 2));
  processes.push(start());
  await poll(async () => processes.every((p) => p.listening), Boolean, 20_000, async () => processes.map((p) => p.output).join('\n---\n'), 50);

  const rotated = await runCommand(main, ['rotate', 'example.com', '--keys-dir', keysDir, '--selector', 'new', '--format', 'value']);
  assert.equal(rotated.code, 0, rotated.err);
  dns.set('new._domainkey.example.com', { TXT: [rotated.out.trim()] });
  await poll(async () => processes.every((p) => p.switchedAt !== undefined), Boolean, 30_000, async () => processes.map((p) => p.output).join('\n---\n'), 20);
  const [first, second] = processes.map((p) => p.switchedAt ?? 0);
  const apart = Math.abs((first ?? 0) - (second ?? 0));
  t.diagnostic(`the two processes switched ${String(apart)} ms apart (check period ${String(interval)} ms)`);
  // One check period, plus slack for two processes sharing a loaded machine.
  assert.ok(apart <= interval + 1000, `switched ${String(apart)} ms apart; a check period is ${String(interval)} ms`);
  const state = (await loadRotationText(keysDir)).replace(/#.*\n/g, '');
  assert.match(state, /selector: new\n\s+state: active/, processes.map((p) => p.output).join('\n---\n'));
});

async function loadRotationText(keysDir: string): Promise<string> {
  return readFile(join(keysDir, 'example.com', 'rotation.yaml'), 'utf8');
}

test('a read-only keys directory (a Kubernetes Secret): the process promotes in memory, says so once, and signs with the new key', async (t) => {
  const interval = 300;
  const keysDir = await tempDir(); // removed at the end, after the server stops and the mode is restored
  const made = await runCommand(main, ['keygen', 'example.com', '--selector', 'old', '--keys-dir', keysDir, '--format', 'value']);
  assert.equal(made.code, 0, made.err);
  const rotated = await runCommand(main, ['rotate', 'example.com', '--keys-dir', keysDir, '--selector', 'new', '--format', 'value']);
  assert.equal(rotated.code, 0, rotated.err);
  const before = await readFile(join(keysDir, 'example.com', 'rotation.yaml'), 'utf8');
  const mailDir = join(keysDir, 'mail');
  const configFile = join(keysDir, 'sello.yaml');
  await writeFile(
    configFile,
    [
      'hostname: sello.test',
      // One process: each worker would hold (and log) its own promotion.
      'workers: 1',
      'listeners:',
      '  - {name: submission, role: submission, listen: "127.0.0.1:0", trustedNetworks: [127.0.0.1/32]}',
      `relay: {target: "dir:${mailDir}"}`,
      `signing: {keysDir: "${keysDir}", domains: {example.com: old}, rotation: {checkInterval: ${String(interval)}ms, confirmations: 2}}`,
      'metrics: {listen: "127.0.0.1:0"}',
      'shutdown: {deadline: 1s}',
      '',
    ].join('\n'),
  );
  const dns = await startDnsServer({ 'old._domainkey.example.com': { TXT: [made.out.trim()] }, 'new._domainkey.example.com': { TXT: [rotated.out.trim()] } });
  t.after(() => dns.close());
  await writeFile(configFile, `${await readFile(configFile, 'utf8')}dns: {servers: ["${dns.address}"]}\n`);
  // The keys readable but their directory not writable by the server, as a Secret volume is. Root
  // writes anywhere, so as root the server runs without CAP_DAC_OVERRIDE: still the owner of the
  // keys and of the checkout (readable even from a 0700 directory), but bound by the mode.
  await mkdir(mailDir);
  await chmod(join(keysDir, 'example.com'), 0o500);

  const sello = fileURLToPath(new URL('../../bin/sello.js', import.meta.url));
  const [command, args] = withoutCapabilities(['dac_override', 'dac_read_search'], process.execPath, [sello, 'serve', '--config', configFile]);
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  t.after(async () => {
    if (child.exitCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5000))]);
      child.kill('SIGKILL');
    }
    await chmod(join(keysDir, 'example.com'), 0o700);
    await removeTempDir(keysDir);
  });
  const port = await poll(async () => Number(/submission listening on 127\.0\.0\.1:(\d+)/.exec(output)?.[1] ?? 0), (value) => value > 0, 20_000, async () => output, 50);
  await poll(async () => output.includes('"msg":"signing keys switched (key rotation)"'), Boolean, 20_000, async () => output, 20);

  const lines = output.split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as Record<string, unknown>);
  const promoted = lines.filter((line) => line.msg === 'DKIM key promoted: DNS serves its record, it signs from now on');
  assert.equal(promoted.length, 1);
  assert.equal(promoted[0]?.recorded, 'memory');
  assert.equal(lines.filter((line) => typeof line.msg === 'string' && line.msg.startsWith('cannot record the promotion in rotation.yaml')).length, 1);
  assert.equal(await readFile(join(keysDir, 'example.com', 'rotation.yaml'), 'utf8'), before, 'the file is left as it was');

  const sent = await sendMail(port, { from: 'alice@example.com', to: ['bob@example.net'], data: message(1) });
  assert.match(sent.data ?? '', /^250 /);
  const [file] = (await readdir(mailDir)).filter((name) => name.endsWith('.eml'));
  assert.ok(file, `a message in ${mailDir}`);
  assert.deepEqual(selectors(await readFile(join(mailDir, file))), ['new']);
  // Later checks keep the held promotion: no second promotion, no switch back.
  await new Promise((resolve) => setTimeout(resolve, interval * 3));
  assert.equal(output.split('"msg":"signing keys switched (key rotation)"').length - 1, 1, output);
});

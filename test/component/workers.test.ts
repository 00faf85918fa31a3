// `workers: 2` end to end (src/cluster/): sello as a real child process — both workers serve,
// /metrics adds them up, SIGHUP reloads both with the config the primary validated, SIGTERM
// drains both, and a worker killed with SIGKILL mid-transaction loses nothing that was
// acknowledged and is replaced.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { test, type TestContext } from 'node:test';
import { makeKeys } from '../helpers/sello.ts';
import { SmtpDialog, sendMail } from '../helpers/smtp-dialog.ts';
import { startSink, type SinkOptions } from '../helpers/smtp-sink.ts';
import { freePort } from '../helpers/tools.ts';

const bin = path.join(import.meta.dirname, '../../bin/sello.js');

const message = (subject: string) =>
  `From: alice@example.com\r\nTo: bob@example.net\r\nSubject: ${subject}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <${subject}@x>\r\n\r\nHello.\r\n`;

type LogRecord = Record<string, unknown>;

async function eventually(condition: () => Promise<boolean> | boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function series(text: string, name: string): Record<string, number> {
  const found: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const match = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (match && match[1] === name) found[match[2] ?? ''] = Number(match[3]);
  }
  return found;
}

interface Cluster {
  process: ChildProcess;
  log(): LogRecord[];
  /** Records with this msg. */
  logged(msg: string): LogRecord[];
  exit: Promise<number | null>;
  smtpPort: number;
  tlsPort: number;
  metricsPort: number;
  keysDir: string;
  configFile: string;
  writeConfig(selector: string): Promise<void>;
  submit(subject: string): ReturnType<typeof sendMail>;
}

/** Starts `sello serve` with workers: 2 relaying to a sink; resolves once both workers listen. */
async function startCluster(t: TestContext, sinkOptions: SinkOptions = {}) {
  const sink = await startSink(sinkOptions);
  t.after(() => sink.close());
  const dir = await mkdtemp(path.join(tmpdir(), 'sello-workers-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const keysDir = path.join(dir, 'keys');
  await makeKeys([{ domain: 'example.com', selector: 's1', algorithm: 'ed25519' }, { domain: 'example.com', selector: 's2', algorithm: 'ed25519' }], keysDir);
  const [smtpPort, tlsPort, metricsPort] = [await freePort(), await freePort(), await freePort()];
  const configFile = path.join(dir, 'sello.yaml');
  const writeConfig = (selector: string) =>
    writeFile(
      configFile,
      [
        'hostname: sello.test',
        'workers: 2',
        'listeners:',
        `  - { name: submission, role: submission, listen: "127.0.0.1:${smtpPort}", trustedNetworks: ["127.0.0.1/32"] }`,
        // TLS without a certificate: a self-signed one is made at start.
        `  - { name: submissions, role: submission, listen: "127.0.0.1:${tlsPort}", tls: { mode: implicit }, trustedNetworks: ["127.0.0.1/32"] }`,
        `relay: { target: "${sink.url}", starttls: never }`,
        `signing: { keysDir: "${keysDir}", domains: { example.com: ${selector} } }`,
        `metrics: { listen: "127.0.0.1:${metricsPort}" }`,
        'shutdown: { deadline: 5s }',
      ].join('\n'),
    );
  await writeConfig('s1');
  // Round robin (Node's NODE_CLUSTER_SCHED_POLICY): consecutive connections alternate between the
  // workers, so these tests know both took part. sello's default lets the workers accept
  // themselves, where the kernel picks the worker.
  const env = { ...process.env, NODE_CLUSTER_SCHED_POLICY: 'rr' };
  const child = spawn(process.execPath, [bin, 'serve', '--config', configFile], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (text: string) => (stdout += text));
  child.stderr!.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  const exit = once(child, 'exit').then(([code]) => code as number | null);
  const log = () => stdout.split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as LogRecord);
  t.after(() => {
    // The workers first (their pids are in the log), then the primary.
    for (const record of log().filter((entry) => entry.msg === 'worker started')) {
      try {
        process.kill(record.pid as number, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  await eventually(() => stderr.includes(`listening on 127.0.0.1:${smtpPort}`) || child.exitCode !== null, 'sello to listen', 20_000);
  assert.equal(child.exitCode, null, `sello exited: ${stderr}`);
  const cluster: Cluster = {
    process: child,
    log,
    logged: (msg) => log().filter((record) => record.msg === msg),
    exit,
    smtpPort,
    tlsPort,
    metricsPort,
    keysDir,
    configFile,
    writeConfig,
    submit: (subject) => sendMail(smtpPort, { from: 'alice@example.com', to: ['bob@example.net'], data: message(subject) }),
  };
  // Each worker logs to its own stdout pipe: its record can arrive after the primary's "listening".
  await eventually(() => cluster.logged('worker started').length >= 2, 'both workers to log that they started', 10_000);
  assert.equal(cluster.logged('worker started').length, 2, 'two workers');
  return { sink, cluster };
}

/** The SHA-256 fingerprint of the certificate a TLS listener presents. */
function certificateFingerprint(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      resolve(socket.getPeerCertificate().fingerprint256);
      socket.destroy();
    });
    socket.once('error', reject);
  });
}

/** The pids of the workers that wrote transaction records. */
const transactionPids = (cluster: Cluster) => new Set(cluster.logged('transaction').map((record) => record.pid));

test('workers: 2 — both serve; /metrics adds up every worker; /readyz counts them; one self-signed certificate', async (t) => {
  const { sink, cluster } = await startCluster(t);
  for (let index = 0; index < 6; index++) assert.match((await cluster.submit(`m${index}`)).data ?? '', /^250 /);
  assert.equal(sink.messages.length, 6);
  await eventually(() => cluster.logged('transaction').length === 6, 'six transaction records');
  assert.equal(transactionPids(cluster).size, 2, 'both workers served');
  const metrics = await (await fetch(`http://127.0.0.1:${cluster.metricsPort}/metrics`)).text();
  // Summed over the workers: a single worker's registry would show its share only.
  assert.deepEqual(series(metrics, 'sello_transactions_total'), { '{listener="submission",outcome="relayed"}': 6 });
  assert.equal(Object.values(series(metrics, 'sello_build_info'))[0], 1, 'build info is not summed');
  assert.deepEqual(series(metrics, 'sello_key_info'), { '{domain="example.com",selector="s1",algorithm="ed25519-sha256",bits="256"}': 1 });
  const ready = await fetch(`http://127.0.0.1:${cluster.metricsPort}/readyz`);
  assert.equal(ready.status, 200);
  assert.equal(((await ready.json()) as { checks: Record<string, string> }).checks.workers, 'ok');
  // The self-signed certificate is the primary's, the same whichever worker takes the connection.
  const fingerprints = new Set<string>();
  for (let index = 0; index < 4; index++) fingerprints.add(await certificateFingerprint(cluster.tlsPort));
  assert.equal(fingerprints.size, 1, 'one certificate across the workers');
  cluster.process.kill('SIGTERM');
  assert.equal(await cluster.exit, 0);
});

test('workers: 2 — SIGHUP reloads every worker with the validated config; a broken one reaches none', async (t) => {
  const { sink, cluster } = await startCluster(t);
  await cluster.writeConfig('s2');
  cluster.process.kill('SIGHUP');
  await eventually(() => new Set(cluster.logged('config reloaded').map((record) => record.pid)).size === 2, 'both workers to reload');
  for (let index = 0; index < 4; index++) assert.match((await cluster.submit(`after${index}`)).data ?? '', /^250 /);
  await eventually(() => cluster.logged('transaction').length === 4, 'four transaction records');
  assert.equal(transactionPids(cluster).size, 2, 'both workers served');
  for (const sent of sink.messages) assert.match(sent.data.toString(), /^DKIM-Signature:[^]*\bs=s2;/, 'signed with the new selector');

  // A selector without a key: refused once by the primary, nothing reaches the workers.
  await cluster.writeConfig('s3');
  cluster.process.kill('SIGHUP');
  await eventually(() => cluster.logged('config reload failed: the running configuration stays in effect').length === 1, 'the refusal');
  const failure = cluster.logged('config reload failed: the running configuration stays in effect')[0]!;
  assert.equal(failure.path, 'signing.domains["example.com"]');
  assert.equal(failure.worker, undefined, 'logged by the primary');
  await eventually(async () => {
    const metrics = await (await fetch(`http://127.0.0.1:${cluster.metricsPort}/metrics`)).text();
    return JSON.stringify(series(metrics, 'sello_config_reloads_total')) === JSON.stringify({ '{result="success"}': 1, '{result="failure"}': 1 });
  }, 'one success and one failure counted once each');
  assert.match((await cluster.submit('still-s2')).data ?? '', /^250 /);
  assert.match(sink.messages.at(-1)!.data.toString(), /\bs=s2;/);
  cluster.process.kill('SIGTERM');
  assert.equal(await cluster.exit, 0);
});

test('workers: 2 — SIGTERM drains every worker: open transactions on both finish, idle sessions get 421, exit 0', async (t) => {
  const { sink, cluster } = await startCluster(t);
  // Consecutive connections go to alternate workers (node:cluster round robin); the transaction
  // records below show both took part.
  const open: SmtpDialog[] = [];
  for (let index = 0; index < 2; index++) {
    const dialog = await SmtpDialog.connect(cluster.smtpPort);
    await dialog.command('EHLO client.test');
    assert.match(await dialog.command('MAIL FROM:<alice@example.com>'), /^250 /);
    assert.match(await dialog.command('RCPT TO:<bob@example.net>'), /^250 /);
    open.push(dialog);
  }
  const idle = await SmtpDialog.connect(cluster.smtpPort);
  assert.match(await idle.command('EHLO client.test'), /^250/);
  cluster.process.kill('SIGTERM');
  assert.equal(await idle.readReply(3000), '421 4.3.2 Service shutting down, try again later');
  for (const [index, dialog] of open.entries()) {
    assert.match(await dialog.command('DATA'), /^354 /);
    assert.match(await dialog.sendMessage(message(`drain${index}`)), /^250 2\.0\.0 OK: queued as SINK/);
    await dialog.close();
  }
  assert.equal(await cluster.exit, 0);
  assert.equal(sink.messages.length, 2);
  assert.equal(transactionPids(cluster).size, 2, 'each worker finished one');
  const stopped = cluster.logged('stopped');
  assert.equal(new Set(stopped.filter((record) => record.worker !== undefined).map((record) => record.pid)).size, 2, 'both workers stopped');
  assert.equal(stopped.filter((record) => record.worker === undefined).length, 1, 'then the primary');
});

test('workers: 2 — a worker killed with SIGKILL mid-transaction: no 250, nothing at the MTA, the retry is delivered once; the worker is replaced', async (t) => {
  const { sink, cluster } = await startCluster(t);
  const workers = cluster.logged('worker started').map((record) => record.pid as number);
  const dialog = await SmtpDialog.connect(cluster.smtpPort);
  await dialog.command('EHLO client.test');
  assert.match(await dialog.command('MAIL FROM:<alice@example.com>'), /^250 /);
  assert.match(await dialog.command('RCPT TO:<bob@example.net>'), /^250 /);
  assert.match(await dialog.command('DATA'), /^354 /);
  dialog.write(message('killed').slice(0, 60));
  await new Promise((resolve) => setTimeout(resolve, 200));
  // Whichever worker holds the session: both die.
  for (const pid of workers) process.kill(pid, 'SIGKILL');
  await eventually(() => dialog.closed, 'the session to drop');
  await assert.rejects(dialog.readReply(500), 'no reply at all, so no 250');
  await eventually(() => cluster.logged('worker started').length === 4, 'two new workers');
  const deaths = cluster.logged('worker died: starting a new one');
  assert.deepEqual(deaths.map((record) => record.signal).sort(), ['SIGKILL', 'SIGKILL']);
  assert.deepEqual(deaths.map((record) => record.pid).sort(), [...workers].sort());
  assert.equal(sink.messages.length, 0, 'the MTA got nothing of the unfinished message');
  // The client retries, as it must without a 250: exactly one copy arrives.
  assert.match((await cluster.submit('killed')).data ?? '', /^250 /);
  assert.equal(sink.messages.length, 1);
  assert.match(sink.messages[0]!.data.toString(), /Subject: killed/);
  cluster.process.kill('SIGTERM');
  assert.equal(await cluster.exit, 0);
});

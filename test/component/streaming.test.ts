// Streaming DATA end to end (docs/performance.md "Memory"): real SMTP in, real SMTP out to a sink
// on loopback. A body past data.spillThreshold is relayed from its spill file byte for byte as
// an in-memory one is (same keys, same clock); the file is 0600 while DATA runs and gone after
// every ending: delivered, refused, MTA failure, client gone mid-DATA.

import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { startSello } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import { ConfigError } from '../../src/errors.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { makeKeys, recordsResolver } from '../helpers/sello.ts';
import { dotStuff, SmtpDialog } from '../helpers/smtp-dialog.ts';
import { startSink, type Sink, type SinkOptions } from '../helpers/smtp-sink.ts';

const fixedClock = () => new Date('2026-11-23T10:00:00Z');

async function eventually(condition: () => Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function temporaryDirectory(t: TestContext, prefix: string): Promise<string> {
  const directory = await mkdtemp(path.join(tmpdir(), prefix));
  t.after(() => rm(directory, { recursive: true, force: true }));
  return directory;
}

/** One sello with a submission listener for 127.0.0.1, signing with the keys in `keysDir`, spilling into its own directory. */
async function startStreamingSello(t: TestContext, options: { keysDir: string; sink: Sink; data?: Record<string, unknown>; limits?: Record<string, unknown> }) {
  const spillDirectory = path.join(await temporaryDirectory(t, 'sello-spill-test-'), 'spill');
  const config = parseConfig({
    hostname: 'sello.test',
    listeners: [{ name: 'submission', role: 'submission', listen: '127.0.0.1:0', trustedNetworks: ['127.0.0.1/32'] }],
    relay: { target: options.sink.url, starttls: 'never' },
    signing: { keysDir: options.keysDir, domains: { 'example.com': ['rsa1', 'ed1'] } },
    data: { spillDirectory, ...options.data },
    ...(options.limits ? { limits: options.limits } : {}),
  });
  const running = await startSello(config, silentLogger(), { now: fixedClock });
  t.after(() => running.close());
  return { port: running.addresses.get('submission')?.port as number, spillDirectory };
}

async function setup(t: TestContext, sinkOptions: SinkOptions = {}) {
  const { keysDir, records } = await makeKeys([
    { domain: 'example.com', selector: 'rsa1', algorithm: 'rsa' },
    { domain: 'example.com', selector: 'ed1', algorithm: 'ed25519' },
  ]);
  t.after(() => rm(keysDir, { recursive: true, force: true }));
  const sink = await startSink(sinkOptions);
  t.after(() => sink.close());
  return { keysDir, records, sink };
}

/** ~120 KiB: dot lines, bare LFs and CRs, trailing whitespace and tabs (relaxed canonicalization), a line cut by no CRLF at the end. */
function bigMessage(): Buffer {
  const lines = ['From: Alice <alice@example.com>', 'To: bob@example.net', 'Subject: a big one', 'Date: Mon, 23 Nov 2026 10:00:00 +0000', 'Message-ID: <big@example.com>', ''];
  for (let index = 0; index < 3000; index++) lines.push(index % 7 === 0 ? `.dotted ${index}\t  ` : `line ${index} ${'x'.repeat(index % 61)}  `);
  const text = `${lines.join('\r\n')}\nbare lf\rbare cr\r\n\r\n\r\nlast line`;
  return Buffer.from(text, 'latin1');
}

/** MAIL, RCPT, DATA, then the dot-stuffed message in two halves with `between` run after the first. */
async function sendInTwoParts(port: number, message: Buffer, between: (dialog: SmtpDialog) => Promise<'go on' | 'stop'>): Promise<string | undefined> {
  const dialog = await SmtpDialog.connect(port);
  try {
    assert.match(await dialog.command('EHLO client.test'), /^250/);
    assert.match(await dialog.command('MAIL FROM:<alice@example.com>'), /^250/);
    assert.match(await dialog.command('RCPT TO:<bob@example.net>'), /^250/);
    assert.match(await dialog.command('DATA'), /^354/);
    const stuffed = dotStuff(message);
    const half = Math.floor(stuffed.length / 2);
    dialog.write(stuffed.subarray(0, half));
    if ((await between(dialog)) === 'stop') return undefined;
    dialog.write(stuffed.subarray(half));
    return await dialog.readReply(30_000);
  } finally {
    await dialog.close();
  }
}

const filesIn = (directory: string) => readdir(directory).catch(() => [] as string[]);

test('a spilled message is relayed byte for byte as the same message held in memory (same keys, same clock), and both signatures pass', async (t) => {
  const { keysDir, records, sink } = await setup(t);
  const spilling = await startStreamingSello(t, { keysDir, sink, data: { spillThreshold: '1KiB' } });
  const inMemory = await startStreamingSello(t, { keysDir, sink });
  const message = bigMessage();
  let sawSpillFile = false;
  assert.equal(
    await sendInTwoParts(spilling.port, message, async () => {
      await eventually(async () => (await filesIn(spilling.spillDirectory)).length === 1, 'the spill file');
      const [name] = await filesIn(spilling.spillDirectory);
      assert.equal((await stat(path.join(spilling.spillDirectory, name as string))).mode & 0o777, 0o600, 'the spill file is private');
      sawSpillFile = true;
      return 'go on';
    }),
    '250 2.0.0 OK: queued as SINK1',
  );
  assert.ok(sawSpillFile);
  assert.equal(
    await sendInTwoParts(inMemory.port, message, async () => {
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.deepEqual(await filesIn(inMemory.spillDirectory), [], 'below the threshold nothing is spilled');
      return 'go on';
    }),
    '250 2.0.0 OK: queued as SINK2',
  );
  const [fromFile, fromMemory] = sink.messages.map((delivered) => delivered.data);
  assert.ok(fromFile && fromMemory);
  assert.equal(fromFile.length, fromMemory.length);
  assert.ok(fromFile.equals(fromMemory), 'the spilled message leaves exactly as the in-memory one');
  assert.ok(fromFile.includes(Buffer.from('\r\nbare lf\r\nbare cr\r\n')), 'line endings were made CRLF across the spill');
  const verified = await dkimVerify(fromFile, { resolver: recordsResolver(records) as never, curTime: fixedClock() });
  assert.deepEqual(
    verified.results.map((entry) => [entry.selector, entry.status?.result]),
    [
      ['rsa1', 'pass'],
      ['ed1', 'pass'],
    ],
  );
  assert.deepEqual(await filesIn(spilling.spillDirectory), [], 'the spill file is gone once the message is relayed');
});

test('a client that disconnects mid-DATA: the spill file (0600 while it exists) is removed and nothing is relayed', async (t) => {
  const { keysDir, sink } = await setup(t);
  const sello = await startStreamingSello(t, { keysDir, sink, data: { spillThreshold: '1KiB' } });
  await sendInTwoParts(sello.port, bigMessage(), async (dialog) => {
    await eventually(async () => (await filesIn(sello.spillDirectory)).length === 1, 'the spill file');
    const [name] = await filesIn(sello.spillDirectory);
    assert.equal((await stat(path.join(sello.spillDirectory, name as string))).mode & 0o777, 0o600);
    dialog.destroy();
    return 'stop';
  });
  await eventually(async () => (await filesIn(sello.spillDirectory)).length === 0, 'the spill file to be removed after the disconnect');
  assert.equal(sink.messages.length, 0);
});

test('the spill file is gone after a refusal (552 5.3.4 over limits.maxMessageSize) and after an MTA failure (its 451)', async (t) => {
  const refusing = await setup(t);
  const small = await startStreamingSello(t, { keysDir: refusing.keysDir, sink: refusing.sink, data: { spillThreshold: '1KiB' }, limits: { maxMessageSize: '100KiB' } });
  const tooLarge = await sendInTwoParts(small.port, bigMessage(), async () => {
    await eventually(async () => (await filesIn(small.spillDirectory)).length === 1, 'the spill file');
    return 'go on';
  });
  assert.equal(tooLarge, '552 5.3.4 Message size exceeds fixed maximum message size');
  assert.deepEqual(await filesIn(small.spillDirectory), []);
  assert.equal(refusing.sink.messages.length, 0);

  const failing = await setup(t, { dataReply: '451 4.3.0 Queue file write error' });
  const sello = await startStreamingSello(t, { keysDir: failing.keysDir, sink: failing.sink, data: { spillThreshold: '1KiB' } });
  const deferred = await sendInTwoParts(sello.port, bigMessage(), async () => {
    await eventually(async () => (await filesIn(sello.spillDirectory)).length === 1, 'the spill file');
    return 'go on';
  });
  assert.equal(deferred, '451 4.3.0 Queue file write error');
  assert.deepEqual(await filesIn(sello.spillDirectory), []);
});

test('a data.spillDirectory that is not a directory stops start-up with a config error naming the key', async (t) => {
  const { keysDir, sink } = await setup(t);
  const notADirectory = path.join(await temporaryDirectory(t, 'sello-spill-bad-'), 'file');
  await writeFile(notADirectory, 'not a directory');
  const config = parseConfig({
    hostname: 'sello.test',
    listeners: [{ name: 'submission', role: 'submission', listen: '127.0.0.1:0', trustedNetworks: ['127.0.0.1/32'] }],
    relay: { target: sink.url, starttls: 'never' },
    signing: { keysDir, domains: { 'example.com': ['rsa1', 'ed1'] } },
    data: { spillDirectory: notADirectory },
  });
  await assert.rejects(startSello(config, silentLogger()), (error: unknown) => {
    assert.ok(error instanceof ConfigError, String(error));
    assert.equal(error.path, 'data.spillDirectory');
    assert.match(error.message, /^data\.spillDirectory: .* cannot be used for spill files: /);
    return true;
  });
});

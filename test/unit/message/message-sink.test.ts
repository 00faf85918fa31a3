// The streaming message sink: line endings across chunk boundaries give exactly what the whole-
// message normalization gives, the header/body split wherever the empty line is cut, the limits
// (552 5.3.4 for size and header, nothing kept past them), and the spill file's life: 0600 while
// it exists, read back byte for byte, gone after dispose; leftovers of dead processes removed;
// young-generation collections asked for by big messages only.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { Replies, SmtpReplyError } from '../../../src/errors.ts';
import {
  LineEndingNormalizer,
  MessageSink,
  messageBytes,
  normalizeLineEndings,
  removeLeftoverSpillFiles,
  splitMessage,
  type MessageSinkOptions,
} from '../../../src/message/index.ts';
import { bigMessageCollections, bigMessageFrom, collectEveryOctets, spillCollectionIntervalMs } from '../../../src/message/garbage.ts';

async function spillDirectory(t: TestContext): Promise<string> {
  const parent = await mkdtemp(path.join(tmpdir(), 'sello-sink-'));
  t.after(() => rm(parent, { recursive: true, force: true }));
  return path.join(parent, 'spill');
}

function sinkOptions(directory: string, overrides: Partial<MessageSinkOptions> = {}): MessageSinkOptions {
  return { maxMessageSize: 1024 * 1024, maxHeaderSize: 4096, bareLineEndings: 'normalize', nul: 'reject', spillThreshold: Number.POSITIVE_INFINITY, spillDirectory: directory, ...overrides };
}

/** Every way to cut `input` into three chunks (two cut points). */
function* threeWaySplits(input: Buffer): Generator<Buffer[]> {
  for (let first = 0; first <= input.length; first++) {
    for (let second = first; second <= input.length; second++) yield [input.subarray(0, first), input.subarray(first, second), input.subarray(second)];
  }
}

const lineEndingCases = ['a\rb', 'a\nb', 'a\r\r\nb', 'a\r\n\rb', 'x\r', 'x\n', 'x\r\n', '\r\n', '\n\r', 'a\r\n.\r\n', 'a\n.\nb\r.\r', 'no end', '', 'H: v\r\n\r\nbody\r\r\n\n'];

test('line endings made CRLF chunk by chunk equal the whole-message normalization, wherever the chunks are cut', () => {
  for (const text of lineEndingCases) {
    const input = Buffer.from(text, 'latin1');
    const expected = input.length === 0 ? Buffer.alloc(0) : normalizeLineEndings(input);
    for (const chunks of threeWaySplits(input)) {
      const normalizer = new LineEndingNormalizer();
      const out = Buffer.concat([...chunks.map((chunk) => normalizer.push(chunk)), normalizer.end()]);
      assert.equal(out.toString('latin1'), expected.toString('latin1'), `${JSON.stringify(text)} cut as ${JSON.stringify(chunks.map(String))}`);
      const bare = /\r(?!\n)|(?<!\r)\n/.test(text);
      assert.equal(normalizer.sawBareLineEnding, bare, `bare line ending seen in ${JSON.stringify(text)}`);
    }
  }
});

test('a chunk that already has only CRLF endings is passed on as it is, not copied', () => {
  const normalizer = new LineEndingNormalizer();
  const chunk = Buffer.from('Subject: x\r\n\r\nbody\r');
  assert.equal(normalizer.push(chunk), chunk);
  const next = Buffer.from('\nmore\r\n');
  assert.equal(normalizer.push(next), next, 'the CR that ended the last chunk pairs with this LF');
});

test('header and body are split at the first empty line wherever it is cut; observers see every byte in order', async (t) => {
  const directory = await spillDirectory(t);
  for (const text of ['From: a@example.com\r\nSubject: s\r\n\r\nbody\r\n\r\nmore\r\n', '\r\nbody only\r\n', 'From: a@example.com\r\n', 'A: 1\n\nbare\n']) {
    const normalized = normalizeLineEndings(Buffer.from(text, 'latin1'));
    const expected = splitMessage(normalized);
    for (const chunks of threeWaySplits(Buffer.from(text, 'latin1'))) {
      const sink = new MessageSink(sinkOptions(directory));
      const seen: Buffer[] = [];
      const body: Buffer[] = [];
      sink.observeMessage({ write: (chunk) => void seen.push(Buffer.from(chunk)), end: () => undefined, abort: () => assert.fail('not aborted') });
      sink.observeBody({ write: (chunk) => void body.push(Buffer.from(chunk)), end: () => undefined, abort: () => assert.fail('not aborted') });
      for (const chunk of chunks) await sink.write(chunk);
      const source = await sink.finish();
      const cut = JSON.stringify(chunks.map(String));
      assert.equal(source.header.toString('latin1'), expected.header.toString('latin1'), `header of ${cut}`);
      assert.equal(Buffer.concat(body).toString('latin1'), expected.body.toString('latin1'), `body of ${cut}`);
      assert.equal(Buffer.concat(seen).toString('latin1'), normalized.toString('latin1'), `observed bytes of ${cut}`);
      assert.equal((await messageBytes(source)).toString('latin1'), normalized.toString('latin1'));
      assert.equal(source.size, normalized.length);
      await sink.dispose();
    }
  }
});

test('an oversized message is counted and refused with 552 5.3.4; nothing past the limit is kept or observed', async (t) => {
  const directory = await spillDirectory(t);
  const sink = new MessageSink(sinkOptions(directory, { maxMessageSize: 64 * 1024, spillThreshold: 16 * 1024 }));
  let aborted = 0;
  let observed = 0;
  sink.observeBody({ write: (chunk) => void (observed += chunk.length), end: () => assert.fail('never ends'), abort: () => void aborted++ });
  await sink.write(Buffer.from('From: a@example.com\r\n\r\n'));
  const line = Buffer.from(`${'x'.repeat(1022)}\r\n`);
  for (let index = 0; index < 40; index++) await sink.write(line);
  assert.ok(sink.spilled, 'the body went to a file past the threshold');
  for (let index = 0; index < 200; index++) await sink.write(line);
  assert.equal(sink.spilled, false, 'the spill file is dropped as soon as the limit is passed');
  assert.deepEqual(await readdir(directory), []);
  assert.equal(sink.receivedOctets, 23 + 240 * 1024, 'every octet is counted');
  assert.ok(observed <= 64 * 1024, `observers saw ${observed} octets, no more than the limit`);
  assert.equal(aborted, 1);
  await assert.rejects(sink.finish(), (error: unknown) => error instanceof SmtpReplyError && error.reply.code === 552 && error.reply.enhanced === '5.3.4' && /maxMessageSize/.test(error.message));
  await sink.dispose();
});

test('a header section past limits.maxHeaderSize is refused with 552 5.3.4, also when it never ends', async (t) => {
  const directory = await spillDirectory(t);
  const field = Buffer.from(`X-Long: ${'y'.repeat(90)}\r\n`);
  for (const ending of ['\r\nbody\r\n', '']) {
    const sink = new MessageSink(sinkOptions(directory, { maxHeaderSize: 1000 }));
    for (let index = 0; index < 11; index++) await sink.write(field);
    await sink.write(Buffer.from(ending));
    await assert.rejects(sink.finish(), (error: unknown) => error instanceof SmtpReplyError && error.reply.code === 552 && /header section/.test(error.reply.text));
    await sink.dispose();
  }
  const fits = new MessageSink(sinkOptions(directory, { maxHeaderSize: 1000 }));
  for (let index = 0; index < 10; index++) await fits.write(field);
  await fits.write(Buffer.from('\r\nbody\r\n'));
  assert.equal((await fits.finish()).header.length, 1000, 'exactly maxHeaderSize octets fit');
});

test('data.bareLineEndings: reject refuses a bare LF split over two chunks with 550 5.6.0; a CR LF split is fine', async (t) => {
  const directory = await spillDirectory(t);
  const refused = new MessageSink(sinkOptions(directory, { bareLineEndings: 'reject' }));
  await refused.write(Buffer.from('A: 1\r\n\r\nline\r'));
  await refused.write(Buffer.from('x\r\n'));
  await assert.rejects(refused.finish(), (error: unknown) => error instanceof SmtpReplyError && error.reply.code === 550 && error.reply.enhanced === '5.6.0');
  const accepted = new MessageSink(sinkOptions(directory, { bareLineEndings: 'reject' }));
  await accepted.write(Buffer.from('A: 1\r\n\r\nline\r'));
  await accepted.write(Buffer.from('\nx\r\n'));
  assert.equal((await messageBytes(await accepted.finish())).toString(), 'A: 1\r\n\r\nline\r\nx\r\n');
});

test('a spilled body: a 0600 file in a 0700 directory while it exists, read back byte for byte, removed by dispose', async (t) => {
  const directory = await spillDirectory(t);
  const sink = new MessageSink(sinkOptions(directory, { spillThreshold: 4096 }));
  const header = 'From: a@example.com\r\nSubject: big\r\n';
  await sink.write(Buffer.from(`${header}\r\n`));
  const lines: Buffer[] = [];
  for (let index = 0; index < 3000; index++) lines.push(Buffer.from(`line ${index} ${'z'.repeat(index % 97)}\n`));
  for (const line of lines) await sink.write(line);
  const source = await sink.finish();
  assert.ok(source.spilled);
  const spillPath = sink.spillPath as string;
  assert.match(path.basename(spillPath), new RegExp(`^spill-${process.pid}-[0-9a-f]{16}$`));
  assert.equal((await stat(spillPath)).mode & 0o777, 0o600);
  assert.equal((await stat(directory)).mode & 0o777, 0o700);
  const expected = normalizeLineEndings(Buffer.concat([Buffer.from(`${header}\r\n`), ...lines]));
  assert.ok((await messageBytes(source)).equals(expected), 'the spilled message reads back as received, line endings made CRLF');
  assert.ok((await messageBytes(source)).equals(expected), 'and again (the relay may read it once more)');
  await sink.dispose();
  assert.deepEqual(await readdir(directory), []);
});

test('at start-up, spill files of processes that are gone are removed; a live process keeps its own', async (t) => {
  const directory = await spillDirectory(t);
  const sink = new MessageSink(sinkOptions(directory, { spillThreshold: 10 }));
  await sink.write(Buffer.from('A: 1\r\n\r\n0123456789abcdef\r\n'));
  assert.ok(sink.spilled);
  const gone = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  const deadPid = Number(gone.stdout);
  assert.ok(deadPid > 0);
  await writeFile(path.join(directory, `spill-${deadPid}-00ff`), 'left over', { mode: 0o600 });
  await writeFile(path.join(directory, 'unrelated.txt'), 'kept');
  assert.equal(await removeLeftoverSpillFiles(directory), 1);
  assert.deepEqual((await readdir(directory)).sort(), [path.basename(sink.spillPath as string), 'unrelated.txt'].sort());
  await sink.dispose();
});

test('a spill directory removed while sello runs (a /tmp cleaner) is made again for the next spill', async (t) => {
  const directory = await spillDirectory(t);
  const first = new MessageSink(sinkOptions(directory, { spillThreshold: 10 }));
  await first.write(Buffer.from('A: 1\r\n\r\n0123456789abcdef\r\n'));
  assert.ok(first.spilled);
  await first.dispose();
  await rm(directory, { recursive: true });
  const second = new MessageSink(sinkOptions(directory, { spillThreshold: 10 }));
  await second.write(Buffer.from('A: 1\r\n\r\n0123456789abcdef\r\n'));
  assert.ok(second.spilled);
  assert.equal((await stat(directory)).mode & 0o777, 0o700);
  await second.dispose();
});

test('dispose() called twice at once (engine and listener): the second call too resolves only once the file is gone', async (t) => {
  const directory = await spillDirectory(t);
  for (let round = 0; round < 20; round++) {
    const sink = new MessageSink(sinkOptions(directory, { spillThreshold: 10 }));
    await sink.write(Buffer.from('A: 1\r\n\r\n0123456789abcdef\r\n'));
    assert.ok(sink.spilled);
    void sink.dispose();
    await sink.dispose();
    assert.deepEqual(await readdir(directory), [], `round ${round}`);
  }
});

test('data.nul in the stream: reject refuses at the end with 550 5.6.0 whatever chunk held the NUL; strip removes it before line ends are read', async () => {
  const directory = await mkdtemp(path.join(tmpdir(), "sello-sink-nul-"));
  try {
    const smuggling = Buffer.from('Subject: x\r\n\r\na\r\n\x00.\r\nb\n\x00.\nc\r\n', 'latin1');
    for (let cut = 0; cut <= smuggling.length; cut++) {
      const refused = new MessageSink(sinkOptions(directory));
      await refused.write(smuggling.subarray(0, cut));
      await refused.write(smuggling.subarray(cut));
      await assert.rejects(refused.finish(), (error: unknown) => error instanceof SmtpReplyError && error.reply === Replies.nulInMessage);
      await refused.dispose();
      const stripped = new MessageSink(sinkOptions(directory, { nul: 'strip' }));
      await stripped.write(smuggling.subarray(0, cut));
      await stripped.write(smuggling.subarray(cut));
      const source = await stripped.finish();
      const rest: Buffer[] = [];
      for await (const chunk of source.rest()) rest.push(chunk);
      assert.equal(Buffer.concat([source.header, ...rest]).toString('latin1'), 'Subject: x\r\n\r\na\r\n.\r\nb\r\n.\r\nc\r\n');
      await stripped.dispose();
    }
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
});

test('big messages ask V8 to collect their dead buffers as they pass; small ones never do', async (t) => {
  const directory = await spillDirectory(t);
  const block = Buffer.from(`${'x'.repeat(1022)}\r\n`.repeat(64)); // 64 KiB
  const send = async (octets: number, options: Partial<MessageSinkOptions>) => {
    const sink = new MessageSink(sinkOptions(directory, { maxMessageSize: 8 * 1024 * 1024, ...options }));
    await sink.write(Buffer.from('Subject: x\r\n\r\n'));
    for (let sent = 0; sent < octets; sent += block.length) await sink.write(block);
    try {
      const source = await sink.finish();
      for await (const piece of source.rest()) assert.ok(piece.length > 0);
    } catch (error) {
      assert.ok(error instanceof SmtpReplyError);
    } finally {
      await sink.dispose();
    }
  };
  const before = bigMessageCollections();
  for (let message = 0; message < 40; message++) await send(bigMessageFrom / 2, { spillThreshold: 64 * 1024 });
  assert.deepEqual(bigMessageCollections(), before, '40 messages of half a MiB, spilled: no collection');
  await send(4 * collectEveryOctets, { spillThreshold: 64 * 1024 });
  const afterSpilled = bigMessageCollections();
  assert.ok(afterSpilled.scavenges - before.scavenges >= 5, `a 4 MiB spilled message (received and read back): ${afterSpilled.scavenges - before.scavenges} scavenges`);
  assert.equal(afterSpilled.full, before.full, 'the 64 KiB it held before spilling is not worth a full collection');
  await send(4 * collectEveryOctets, { maxMessageSize: 2 * 1024 * 1024 });
  const afterOversized = bigMessageCollections();
  assert.ok(afterOversized.scavenges - afterSpilled.scavenges >= 2, 'an oversized message, counted and discarded, collects too');
  // A body over 1 MiB held in memory, then spilled: one full collection (at most one per second).
  await new Promise((resolve) => setTimeout(resolve, spillCollectionIntervalMs));
  await send(3 * collectEveryOctets, { spillThreshold: 1.5 * collectEveryOctets });
  assert.equal(bigMessageCollections().full, afterOversized.full + 1, 'the held body, dead once spilled, gets one full collection');
  await send(3 * collectEveryOctets, { spillThreshold: 1.5 * collectEveryOctets });
  assert.equal(bigMessageCollections().full, afterOversized.full + 1, 'not a second one within the same second');
});

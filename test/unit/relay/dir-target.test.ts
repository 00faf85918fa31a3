// The dir:PATH target: atomic .eml files with the envelope lines (src/relay/dir-target.ts).
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { SmtpReplyError } from '../../../src/errors.ts';
import { DirTarget, envelopeHeader } from '../../../src/relay/dir-target.ts';
import type { ClientIdentity } from '../../../src/relay/types.ts';

const client: ClientIdentity = { address: '127.0.0.1', port: 40000, helo: 'client.test', protocol: 'ESMTP', localAddress: '127.0.0.1', localPort: 2525 };

async function withTemporaryDirectory(run: (directory: string) => Promise<void>): Promise<void> {
  const directory = await mkdtemp(path.join(tmpdir(), 'sello-dir-target-'));
  try {
    await run(directory);
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
}

test('a message becomes one <unique>.eml: envelope lines, then the exact bytes; mode 0640, dir 0750', () =>
  withTemporaryDirectory(async (base) => {
    const directory = path.join(base, 'spool', 'mail');
    const target = new DirTarget({ url: `dir:${directory}` });
    assert.equal(target.supportsAuth, false);
    assert.equal(target.description, `dir:${directory}`);
    const session = await target.open(client);
    assert.deepEqual(await session.mailFrom('sender@example.com', { body: '8BITMIME' }), {
      code: 250,
      enhanced: '2.1.0',
      text: 'Sender OK',
    });
    assert.deepEqual(await session.rcptTo('a@example.org', {}), { code: 250, enhanced: '2.1.5', text: 'Recipient OK' });
    await session.rcptTo('b@example.org', {});
    const message = ['From: sender@example.com\r\nSubject: ', 'dir\r\n\r\n.not stuffed\r\nünïcödé\r\n'].map((part) => Buffer.from(part));
    const answer = await session.data(message);
    assert.equal(answer.code, 250);
    assert.equal(answer.enhanced, '2.0.0');
    assert.match(answer.queueId ?? '', /^\d+\.\d+\.[0-9a-f]{16}\.eml$/);
    assert.deepEqual(await readdir(directory), [answer.queueId], 'only the final file, no temp file left');
    const file = path.join(directory, answer.queueId ?? '');
    assert.deepEqual(
      await readFile(file),
      Buffer.concat([Buffer.from('Return-Path: <sender@example.com>\r\nEnvelope-To: a@example.org, b@example.org\r\n'), ...message]),
    );
    assert.equal((await stat(file)).mode & 0o777, 0o640);
    assert.equal((await stat(directory)).mode & 0o777, 0o750);
    assert.equal(await session.authenticate({ mechanism: 'PLAIN', username: 'u', password: 'p' }).then((r) => r.code), 454);

    // Next transaction: the envelope starts afresh; null sender.
    await session.mailFrom('', {});
    await session.rcptTo('c@example.org', {});
    const second = await session.data([Buffer.from('Subject: two\r\n\r\nx\r\n')]);
    assert.notEqual(second.queueId, answer.queueId);
    assert.match(
      (await readFile(path.join(directory, second.queueId ?? ''))).toString(),
      /^Return-Path: <>\r\nEnvelope-To: c@example.org\r\nSubject: two/,
    );
    await session.close();
    assert.equal(session.closed, true);
  }));

test('a bare LF is refused like on the SMTP targets; no file is written', () =>
  withTemporaryDirectory(async (directory) => {
    const session = await new DirTarget({ url: `dir:${directory}` }).open(client);
    await session.mailFrom('s@example.com', {});
    await session.rcptTo('r@example.com', {});
    await assert.rejects(session.data([Buffer.from('a\n.\nb\r\n')]), SmtpReplyError);
    assert.deepEqual(await readdir(directory), []);
  }));

test('DATA without recipients is refused; reset() forgets the envelope', () =>
  withTemporaryDirectory(async (directory) => {
    const session = await new DirTarget({ url: `dir:${directory}` }).open(client);
    assert.equal((await session.data([Buffer.from('x\r\n')])).code, 503);
    await session.mailFrom('s@example.com', {});
    assert.equal((await session.data([Buffer.from('x\r\n')])).code, 554);
    await session.rcptTo('r@example.com', {});
    await session.reset();
    assert.equal((await session.rcptTo('r@example.com', {})).code, 503);
    assert.deepEqual(await readdir(directory), []);
  }));

test('a write failure is 451 4.3.0 (the client retries) and is reported to the observer; probe() fails', () =>
  withTemporaryDirectory(async (base) => {
    const notADirectory = path.join(base, 'file');
    await writeFile(notADirectory, 'x');
    const errors: unknown[] = [];
    const target = new DirTarget({ url: `dir:${notADirectory}` }, 'relay.target', (error) => errors.push(error));
    const session = await target.open(client);
    await session.mailFrom('s@example.com', {});
    await session.rcptTo('r@example.com', {});
    assert.deepEqual(await session.data([Buffer.from('x\r\n')]), {
      code: 451,
      enhanced: '4.3.0',
      text: 'Local error in processing, try again later',
    });
    assert.equal(errors.length, 1);
    await assert.rejects(target.probe());
    await new DirTarget({ url: `dir:${path.join(base, 'fresh')}` }).probe();
    assert.equal((await stat(path.join(base, 'fresh'))).isDirectory(), true);
  }));

test('Envelope-To folds long recipient lists', () => {
  const recipients = Array.from({ length: 6 }, (_, index) => `recipient-number-${index}@example.org`);
  const header = envelopeHeader('s@example.com', recipients).toString();
  const lines = header.split('\r\n');
  assert.equal(lines[0], 'Return-Path: <s@example.com>');
  assert.ok(lines.every((line) => line.length <= 78), header);
  assert.equal(header.replace(/\r\n\t/g, ' ').split('\r\n')[1], `Envelope-To: ${recipients.join(', ')}`);
});

async function* streamed(parts: readonly string[]): AsyncGenerator<Buffer> {
  for (const part of parts) yield Buffer.from(part, 'latin1');
}

test('streamed chunks (a spilled body) are written as they come; a bare CR or LF among them leaves no file at all', () =>
  withTemporaryDirectory(async (directory) => {
    const session = await new DirTarget({ url: `dir:${directory}` }).open(client);
    await session.mailFrom('s@example.com', {});
    await session.rcptTo('r@example.com', {});
    const answer = await session.data(streamed(['Subject: s\r', '\n\r\nbody\r\n']));
    assert.equal(answer.code, 250);
    assert.equal((await readFile(path.join(directory, answer.queueId ?? ''))).toString(), 'Return-Path: <s@example.com>\r\nEnvelope-To: r@example.com\r\nSubject: s\r\n\r\nbody\r\n');
    for (const parts of [['Subject: s\r\n\r\n', 'a\n.\nb\r\n'], ['Subject: s\r\n\r\nx\r']]) {
      await session.mailFrom('s@example.com', {});
      await session.rcptTo('r@example.com', {});
      await assert.rejects(session.data(streamed(parts)), (error: unknown) => error instanceof SmtpReplyError && error.reply.code === 550);
    }
    assert.deepEqual(await readdir(directory), [answer.queueId], 'no second file, no temporary file left');
  }));

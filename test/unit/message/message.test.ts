import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Replies, SmtpReplyError } from '../../../src/errors.ts';
import { fieldValues, hasBareLineEnding, headerFields, headerValues, normalizeLineEndings, prepareMessage, singleFromAddress, splitMessage, stripNul } from '../../../src/message/index.ts';

const b = (text: string) => Buffer.from(text, 'latin1');

test('bare line endings are detected and normalised to CRLF, with a final CRLF added', () => {
  assert.equal(hasBareLineEnding(b('a\r\nb\r\n')), false);
  for (const input of ['a\nb', 'a\rb', 'a\r\r\nb', '\n', 'a\r']) assert.equal(hasBareLineEnding(b(input)), true, JSON.stringify(input));
  assert.equal(normalizeLineEndings(b('a\nb\rc\r\nd')).toString(), 'a\r\nb\r\nc\r\nd\r\n');
  // Every smuggling shape becomes an ordinary line holding a dot, which the relay dot-stuffs.
  for (const shape of ['\n.\n', '\r.\r', '\n.\r\n', '\r\n.\n', '\r.\r\n']) {
    assert.equal(normalizeLineEndings(b(`x${shape}y`)).toString(), 'x\r\n.\r\ny\r\n', JSON.stringify(shape));
  }
});

test('prepareMessage: CRLF input untouched, reject mode refuses bare endings with 550 5.6.0', () => {
  const clean = b('From: a@b.c\r\n\r\nbody\r\n');
  assert.equal(prepareMessage(clean, 'reject'), clean);
  assert.equal(prepareMessage(b('From: a@b.c\r\n\r\nno final'), 'reject').toString(), 'From: a@b.c\r\n\r\nno final\r\n');
  assert.throws(
    () => prepareMessage(b('From: a@b.c\n\nbody\n'), 'reject'),
    (error: unknown) => error instanceof SmtpReplyError && error.reply.code === 550 && error.reply.enhanced === '5.6.0',
  );
});

test('splitMessage finds the first empty line; no empty line = all header; leading empty line = all body', () => {
  assert.deepEqual(
    Object.values(splitMessage(b('A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore\r\n'))).map(String),
    ['A: 1\r\nB: 2\r\n', 'body\r\n\r\nmore\r\n'],
  );
  assert.deepEqual(Object.values(splitMessage(b('A: 1\r\n'))).map(String), ['A: 1\r\n', '']);
  assert.deepEqual(Object.values(splitMessage(b('\r\nbody\r\n'))).map(String), ['', 'body\r\n']);
});

test('headerValues unfolds and matches names case-insensitively', () => {
  assert.deepEqual(headerValues(b('from: A\r\n <a@b.c>\r\nX: y\r\nFROM:b@c.d\r\n'), 'From'), ['A <a@b.c>', 'b@c.d']);
});

test('singleFromAddress: exactly one From field with one mailbox', () => {
  assert.deepEqual(singleFromAddress(b('From: "Doe, J" <J@Example.COM>\r\n')), { address: 'J@Example.COM', domain: 'example.com' });
  assert.deepEqual(singleFromAddress(b('From: team: j@example.com;\r\n')).domain, 'example.com');
  const refused = (header: string, enhanced = '5.6.0') =>
    assert.throws(() => singleFromAddress(b(header)), (error: unknown) => error instanceof SmtpReplyError && error.reply.enhanced === enhanced, header);
  refused('To: x@y.z\r\n');
  refused('From: a@b.c\r\nFrom: d@e.f\r\n');
  refused('From: a@b.c, d@e.f\r\n');
  refused('From: undisclosed:;\r\n');
  refused('From: no-at-sign\r\n');
});

test('fieldValues over split fields reads exactly what headerValues reads from the bytes, malformed lines included', () => {
  for (const header of [
    'from: A\r\n <a@b.c>\r\nX: y\r\nFROM:b@c.d\r\n',
    ' From: leading@wsp.example\r\nFrom: real@example.com\r\n',
    'From\r\n : folded-before-colon@evil.example\r\nSubject: s\r\n',
    ':From: x@y.z\r\nno colon at all\r\nFrom:\t tab@example.com \r\n',
  ]) {
    assert.deepEqual(fieldValues(headerFields(header), 'From'), headerValues(b(header), 'From'), JSON.stringify(header));
  }
});

test('data.nul: reject refuses any NUL with 550 5.6.0; strip removes them before the line ends are normalised', () => {
  const smuggling = Buffer.from('Subject: x\r\n\r\na\r\n\x00.\r\nb\n\x00.\nc\r\n', 'latin1');
  assert.throws(() => prepareMessage(smuggling, 'normalize', 'reject'), (error: unknown) => error instanceof SmtpReplyError && error.reply === Replies.nulInMessage);
  assert.equal(prepareMessage(smuggling, 'normalize', 'strip').toString('latin1'), 'Subject: x\r\n\r\na\r\n.\r\nb\r\n.\r\nc\r\n');
  assert.equal(stripNul(Buffer.from('\x00\x00a\x00b\x00', 'latin1')).toString('latin1'), 'ab');
  const clean = Buffer.from('Subject: x\r\n\r\nno nul\r\n');
  assert.equal(prepareMessage(clean, 'normalize', 'reject'), clean, 'a clean message is not copied');
});

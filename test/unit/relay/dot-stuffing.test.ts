// Bare line ending detection and dot-stuffing across chunk boundaries (src/relay/dot-stuffing.ts).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DotStuffer, findBareLineEnding } from '../../../src/relay/dot-stuffing.ts';

const chunks = (...parts: string[]) => parts.map((part) => Buffer.from(part, 'latin1'));
const stuff = (...parts: string[]) => {
  const stuffer = new DotStuffer();
  const out = chunks(...parts).map((chunk) => stuffer.push(chunk));
  return Buffer.concat([...out, stuffer.end()]).toString('latin1');
};

test('CRLF-only input passes, also when CR and LF are split across chunks', () => {
  assert.equal(findBareLineEnding(chunks('a\r\nb\r\n')), -1);
  assert.equal(findBareLineEnding(chunks('a\r', '\nb\r\n')), -1);
  assert.equal(findBareLineEnding(chunks('a\r', '', '\n')), -1);
  assert.equal(findBareLineEnding(chunks()), -1);
  assert.equal(findBareLineEnding(chunks('no line end')), -1);
});

test('bare LF, bare CR and smuggling sequences are found with their offset', () => {
  assert.equal(findBareLineEnding(chunks('a\n.\nb\r\n')), 1);
  assert.equal(findBareLineEnding(chunks('ab\r\n', '\n.\r\n')), 4);
  assert.equal(findBareLineEnding(chunks('a\r.\rb')), 1);
  assert.equal(findBareLineEnding(chunks('a\r', 'x')), 1);
  assert.equal(findBareLineEnding(chunks('abc\r')), 3);
  assert.equal(findBareLineEnding(chunks('a\r\r\n')), 1);
  assert.equal(findBareLineEnding(chunks('\n')), 0);
});

test('dot at a line start is doubled, also at a chunk start after a chunk that ended a line', () => {
  assert.equal(stuff('.a\r\nb\r\n.c\r\n'), '..a\r\nb\r\n..c\r\n.\r\n');
  assert.equal(stuff('a\r\n', '.b\r\n'), 'a\r\n..b\r\n.\r\n');
  assert.equal(stuff('a\r', '\n.b\r\n'), 'a\r\n..b\r\n.\r\n');
  assert.equal(stuff('a\r\n', '', '.b\r\n'), 'a\r\n..b\r\n.\r\n');
  assert.equal(stuff('a.', '.b\r\n'), 'a..b\r\n.\r\n');
});

test('a body line that is just "." is stuffed, not taken as the end', () => {
  assert.equal(stuff('a\r\n.\r\nb\r\n'), 'a\r\n..\r\nb\r\n.\r\n');
  assert.equal(stuff('a\r\n.', '\r\n'), 'a\r\n..\r\n.\r\n');
});

test('CRLF is added before the final dot only when missing', () => {
  assert.equal(stuff('abc'), 'abc\r\n.\r\n');
  assert.equal(stuff('abc\r\n'), 'abc\r\n.\r\n');
  assert.equal(stuff('abc\r', '\n'), 'abc\r\n.\r\n');
  assert.equal(stuff(''), '.\r\n');
  assert.equal(stuff(), '.\r\n');
});

test('a chunk that needs no stuffing is passed through as the same Buffer', () => {
  const stuffer = new DotStuffer();
  const chunk = Buffer.from('no dots at line starts\r\n');
  assert.equal(stuffer.push(chunk), chunk);
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { dkimBody } from 'mailauth/lib/dkim/body/index.js';
import { LineEndingNormalizer } from '../../../src/message/line-endings.ts';
import { RelaxedBodyHash } from '../../../src/signing/relaxed-body-hash.ts';
import { seededRandom } from '../../helpers/random.ts';

/** mailauth's relaxed/SHA-256 body hash of `body`, given whole: the reference. */
function mailauthHash(body: Buffer): string {
  const hasher = dkimBody('relaxed/relaxed', 'sha256', false);
  hasher.update(body);
  return hasher.digest('base64');
}

function ourHash(chunks: readonly Buffer[], crlfLineEndings: boolean): string {
  const hash = new RelaxedBodyHash({ crlfLineEndings });
  for (const chunk of chunks) hash.update(chunk);
  return hash.digest();
}

/** Bodies built from the pieces canonicalization cares about: whitespace, line ends, empty lines. */
function randomBody(next: () => number, length: number, pieces: readonly string[]): Buffer {
  let text = '';
  while (text.length < length) text += pieces[Math.floor(next() * pieces.length)];
  return Buffer.from(text, 'latin1');
}

function randomCuts(next: () => number, body: Buffer): Buffer[] {
  const chunks: Buffer[] = [];
  let at = 0;
  while (at < body.length) {
    const size = 1 + Math.floor(next() * (next() < 0.3 ? 4 : 40));
    chunks.push(body.subarray(at, at + size));
    at += size;
  }
  return chunks;
}

const anyPieces = ['a', 'b', 'xyz', ' ', '  ', '\t', ' \t ', '\r\n', '\r\n\r\n', '\n', '\r', '.', 'é'];
const crlfPieces = ['a', 'b', 'xyz', 'word ', ' ', '  ', '\t', '\r\n', '\r\n\r\n', ' \r\n', 'text\r\n'];

test('relaxed body hash: the same as mailauth on fixed bodies, given whole and byte by byte', () => {
  const bodies = ['', '\r\n', '\r\n\r\n', 'a', 'a\r\n', 'a\r\n\r\n\r\n', ' a \r\n', 'a  b\t\tc \r\n', '  \r\n\r\nx\r\n \r\n', 'a\r\n \r\n\t\r\n', 'a \r', 'line\nbare\r\n', 'cr\ralone\r\n'];
  for (const text of bodies) {
    const body = Buffer.from(text, 'latin1');
    const expected = mailauthHash(body);
    assert.equal(ourHash([body], false), expected, `whole: ${JSON.stringify(text)}`);
    assert.equal(ourHash([...body].map((byte) => Buffer.from([byte])), false), expected, `byte by byte: ${JSON.stringify(text)}`);
  }
});

test('relaxed body hash: the same as mailauth on 3000 random bodies in random chunks (any line endings)', () => {
  const next = seededRandom(9);
  for (let round = 0; round < 3000; round++) {
    const body = randomBody(next, Math.floor(next() * 120), anyPieces);
    assert.equal(ourHash(randomCuts(next, body), false), mailauthHash(body), `round ${round}: ${JSON.stringify(body.toString('latin1'))}`);
  }
});

test('relaxed body hash: the CRLF fast path gives mailauth\'s hash on 3000 normalized random bodies in random chunks', () => {
  const next = seededRandom(17);
  for (let round = 0; round < 3000; round++) {
    const body = randomBody(next, Math.floor(next() * 160), crlfPieces);
    // What the hasher sees in sello: the sink's normalizer output, chunk by chunk.
    const normalizer = new LineEndingNormalizer();
    const chunks = randomCuts(next, body).map((chunk) => normalizer.push(chunk));
    chunks.push(normalizer.end());
    const normalized = Buffer.concat(chunks);
    assert.equal(ourHash(chunks, true), mailauthHash(normalized), `round ${round}: ${JSON.stringify(normalized.toString('latin1'))}`);
  }
});

test('relaxed body hash: a chunk that needs no change is hashed without the byte loop, and still right', () => {
  const line = 'the quick brown fox jumps over the lazy dog\r\n';
  const body = Buffer.from(`${line.repeat(3000)}\r\n\r\n`);
  const chunks = [body.subarray(0, 65536), body.subarray(65536)];
  assert.equal(ourHash(chunks, true), mailauthHash(body));
  assert.equal(ourHash(chunks, false), mailauthHash(body));
});

test('relaxed body hash: update after digest and a second digest are refused', () => {
  const hash = new RelaxedBodyHash();
  hash.update(Buffer.from('a\r\n'));
  hash.digest();
  assert.throws(() => hash.update(Buffer.from('b')), /update after digest/);
  assert.throws(() => hash.digest(), /digest twice/);
});

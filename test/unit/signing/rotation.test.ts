// Tests for src/signing/rotation.ts (the rotation.yaml format, the promotion rule, retirement
// times) and the PromotionGate of src/signing/rotation-watcher.ts.

import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { PromotionGate } from '../../../src/signing/rotation-watcher.ts';
import {
  formatRotation,
  parseRotation,
  promote,
  readRotation,
  removableFrom,
  rotatedSigningDomains,
  withHeldPromotions,
  writeRotation,
  type RotationState,
} from '../../../src/signing/rotation.ts';
import { tempDir } from '../../helpers/tools.ts';

const at = new Date('2026-12-04T12:00:00.000Z');
const state: RotationState = {
  domain: 'example.com',
  keys: [
    { selector: '202612-rsa', state: 'pending', algorithm: 'rsa', since: new Date('2026-12-01T00:00:00Z') },
    { selector: '202606-rsa', state: 'active', algorithm: 'rsa', since: new Date('2026-06-01T00:00:00Z') },
    { selector: '202606-ed25519', state: 'active', algorithm: 'ed25519' },
  ],
};

test('the written file parses back to the same state, and says what it is', () => {
  const text = formatRotation(state);
  assert.match(text, /^# DKIM key rotation of example\.com/);
  const parsed = parseRotation(text, 'keys/example.com/rotation.yaml', 'example.com');
  assert.deepEqual(parsed, state);
});

test('a hand-written file: selectors as bare numbers, no algorithm, offsets in timestamps', () => {
  const parsed = parseRotation('keys:\n  - selector: 202612\n    state: pending\n  - {selector: Old, state: retiring, since: "2026-11-01T10:00:00+01:00"}\n  - selector: cur\n    state: active\n', 'f', 'example.com');
  assert.deepEqual(parsed.keys.map((key) => [key.selector, key.state, key.since?.toISOString()]), [
    ['202612', 'pending', undefined],
    ['old', 'retiring', '2026-11-01T09:00:00.000Z'],
    ['cur', 'active', undefined],
  ]);
});

test('a bad file is an error naming the file and the entry', () => {
  const cases: [string, RegExp][] = [
    ['keys:\n  - selector: a\n    state: signing\n', /: f: keys\[0\]\.state: /],
    ['keys:\n  - selector: a\n    state: active\n  - selector: A\n    state: pending\n', /: f: keys\[1\]\.selector: a is listed twice/],
    ['keys:\n  - selector: a\n    state: active\n  - selector: b\n    state: retiring\n', /: f: keys\[1\]\.since: a retiring key needs since:/],
    ['keys:\n  - selector: a\n    state: pending\n', /: f: keys: no key is active/],
    ['keys:\n  - selector: a\n    state: active\n    since: yesterday\n', /: f: keys\[0\]\.since: not a timestamp/],
    ['keys:\n  - selector: ../x\n    state: active\n', /: f: keys\[0\]\.selector: invalid selector/],
    ['keys:\n  - selector: a\n    state: active\n    colour: red\n', /: f: keys\[0\]: /],
    ['keys: [\n', /: f: not valid YAML/],
  ];
  for (const [text, expected] of cases) assert.throws(() => parseRotation(text, 'f', 'example.com'), expected, text);
});

test('promotion: the pending key replaces the active key of its algorithm only (RFC 8463 dual signing)', () => {
  const next = promote(state, '202612-rsa', (key) => key.algorithm ?? 'rsa', at);
  assert.deepEqual(
    next.keys.map((key) => [key.selector, key.state, key.since?.toISOString()]),
    [
      ['202612-rsa', 'active', at.toISOString()],
      ['202606-rsa', 'retiring', at.toISOString()],
      ['202606-ed25519', 'active', undefined],
    ],
  );
  assert.equal(promote(next, '202612-rsa', () => 'rsa', new Date()), next, 'promoting a key that is no longer pending changes nothing');
});

test('held promotions (read-only keys directory) apply on top of the file as it is', () => {
  const held = new Map([['example.com', [{ selector: '202612-rsa', at, algorithmOf: new Map() }]]]);
  assert.deepEqual(withHeldPromotions(state, held), promote(state, '202612-rsa', (key) => key.algorithm ?? 'rsa', at));
  assert.equal(withHeldPromotions(state, new Map()), state);
});

test('retirement: last signature + signing.expiry + margin; without x= the 7-day default stands in', () => {
  const retiring = { selector: 'old', state: 'retiring' as const, since: at };
  const day = 86_400_000;
  assert.equal(removableFrom(retiring, { expiryMs: 2 * day, retireMarginMs: day })?.toISOString(), '2026-12-07T12:00:00.000Z');
  assert.equal(removableFrom(retiring, { expiryMs: 7 * day, retireMarginMs: 0 })?.toISOString(), '2026-12-11T12:00:00.000Z');
  assert.equal(removableFrom(retiring, { expiryMs: false, retireMarginMs: day })?.toISOString(), '2026-12-12T12:00:00.000Z');
  assert.equal(removableFrom({ selector: 'cur', state: 'active', since: at }, { expiryMs: day, retireMarginMs: 0 }), undefined);
});

test('the signing table with rotation.yaml applied: a rotating domain signs with its active keys', async (t) => {
  const keysDir = await tempDir(t);
  await mkdir(join(keysDir, 'example.com'), { recursive: true });
  assert.equal(await writeRotation(keysDir, state), true);
  const { domains } = await rotatedSigningDomains({ 'example.com': 'configured', '*.example.com': ['x'], 'other.org': 'o1' }, keysDir);
  assert.deepEqual(domains, { 'example.com': ['202606-rsa', '202606-ed25519'], '*.example.com': ['202606-rsa', '202606-ed25519'], 'other.org': ['o1'] });
});

test('writeRotation does not overwrite a file someone else changed since it was read', async (t) => {
  const keysDir = await tempDir(t);
  await mkdir(join(keysDir, 'example.com'), { recursive: true });
  await writeRotation(keysDir, state);
  const read = await readRotation(keysDir, 'example.com');
  assert.ok(read);
  await writeFile(join(keysDir, 'example.com', 'rotation.yaml'), `${read.text}# an admin's comment\n`);
  const promoted = promote(read.state, '202612-rsa', () => 'rsa', at);
  assert.equal(await writeRotation(keysDir, promoted, read.text), false);
  assert.match(await readFile(join(keysDir, 'example.com', 'rotation.yaml'), 'utf8'), /an admin's comment/);
  const again = await readRotation(keysDir, 'example.com');
  assert.ok(again);
  assert.equal(await writeRotation(keysDir, promoted, again.text), true);
  assert.equal((await readRotation(keysDir, 'example.com'))?.state.keys[0]?.state, 'active');
});

test('the gate: N ok sightings in a row, each a check interval after the last; any other judgement starts over', () => {
  const gate = new PromotionGate();
  const second = (s: number) => new Date(at.getTime() + s * 1000);
  assert.equal(gate.observe('k', true, second(0), 10_000), 1);
  assert.equal(gate.observe('k', true, second(5), 10_000), 1, 'too soon: does not count');
  assert.equal(gate.observe('k', true, second(10), 10_000), 2);
  assert.equal(gate.observe('k', false, second(20), 10_000), 0, 'a wrong or missing record resets the count');
  assert.equal(gate.observe('k', true, second(30), 10_000), 1);
  assert.equal(gate.observe('other', true, second(30), 10_000), 1, 'each key has its own count');
});

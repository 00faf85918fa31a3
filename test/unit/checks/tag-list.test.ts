// src/checks/tag-list.ts (the strict RFC 6376 §3.2 tag-list reading) and the ARC field check of
// src/checks/arc.ts built on it: what is well-formed, what is not, and the problem named.
// The golden ARC suite (test/golden/arc/) covers the same rules on signed chains.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseHeaders } from 'mailauth/lib/tools.js';
import { arcTagListProblem } from '../../../src/checks/arc.ts';
import { readTagList } from '../../../src/checks/tag-list.ts';

const problem = (value: string) => {
  const reading = readTagList(value);
  return reading.wellFormed ? undefined : reading.problem;
};

test('a well-formed tag-list reads into its tags, names as written', () => {
  const reading = readTagList(' a=rsa-sha256; d=example.org;\r\n\ts=dummy ; h = from : to;t=12345;');
  assert.ok(reading.wellFormed);
  assert.deepEqual([...reading.tags], [['a', 'rsa-sha256'], ['d', 'example.org'], ['s', 'dummy'], ['h', 'from : to'], ['t', '12345']]);
  const cased = readTagList('S=dummy; s=other');
  assert.ok(cased.wellFormed, 'S and s are two names (RFC 6376 §3.2: case-sensitive)');
  assert.deepEqual([...cased.tags.keys()], ['S', 's']);
});

test('an empty value is well-formed; h= empty is judged elsewhere', () => {
  const reading = readTagList('h=; d=example.org');
  assert.ok(reading.wellFormed);
  assert.equal(reading.tags.get('h'), '');
});

test('only the one ";" at the end may close no tag-spec', () => {
  assert.equal(problem('a=1;'), undefined);
  assert.equal(problem('a=1; \r\n '), undefined);
  assert.equal(problem('a=1;;'), 'empty tag-spec at position 2');
  assert.equal(problem('a=1;; b=2'), 'empty tag-spec at position 2');
  assert.equal(problem(';a=1'), 'empty tag-spec at position 1');
  assert.equal(problem(''), 'empty tag-spec at position 1');
  assert.equal(problem('   '), 'empty tag-spec at position 1');
});

test('duplicate names make the whole tag-list invalid', () => {
  assert.equal(problem('s=dummy; d=example.org; s=dummy'), 'duplicate tag s');
  assert.equal(problem('s=a;s =b'), 'duplicate tag s');
});

test('tag names are ALPHA *(ALPHA / DIGIT / "_")', () => {
  assert.equal(problem('_=x'), 'malformed tag name at position 1');
  assert.equal(problem('a=1; 1a=2'), 'malformed tag name at position 2');
  assert.equal(problem('a b=1'), 'malformed tag name at position 1');
  assert.equal(problem('=1'), 'malformed tag name at position 1');
  assert.equal(problem('a_1=x; B9=y'), undefined);
  assert.equal(problem('novalue'), 'tag-spec without "=" at position 1');
});

test('values are VALCHAR runs separated by whitespace, and folds are CRLF + WSP only', () => {
  assert.equal(problem('b=abc\r\n def'), undefined);
  assert.equal(problem('b=abc\r\ndef'), 'a line break that is not a fold');
  assert.equal(problem('b=abc\ndef'), 'a line break that is not a fold');
  assert.equal(problem('b=a\u0000c'), 'malformed value of tag b');
  assert.equal(problem('b=\u00e9t\u00e9'), 'malformed value of tag b');
});

const fields = (header: string) => parseHeaders(Buffer.from(header)).parsed;
const seal = 'ARC-Seal: i=1; a=rsa-sha256; cv=none; d=example.org; s=dummy; t=1; b=AAAA\r\n';
const signature = 'ARC-Message-Signature: i=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org; s=dummy; h=from; bh=AAAA; b=AAAA\r\n';

test('every ARC-Seal and ARC-Message-Signature must read strictly and carry its required tags', () => {
  assert.equal(arcTagListProblem(fields(`${seal}${signature}From: a@example.org\r\n`)), undefined);
  assert.equal(arcTagListProblem(fields('From: a@example.org\r\nDKIM-Signature: ;;\r\n')), undefined, 'other fields are not its business');
  assert.equal(arcTagListProblem(fields(`${seal.replace('s=dummy', 'S=dummy')}${signature}`)), 'i=1 as tag-list: missing s=');
  assert.equal(arcTagListProblem(fields(`${seal}${signature.replace('bh=AAAA; ', '')}`)), 'i=1 ams tag-list: missing bh=');
  assert.equal(arcTagListProblem(fields(`${seal.replace('t=1;', 't=1;;')}${signature}`)), 'as tag-list: empty tag-spec at position 7');
  assert.equal(arcTagListProblem(fields(`${seal}${signature.replace('i=1;', 'i=1; i=1;')}`)), 'ams tag-list: duplicate tag i');
  assert.equal(arcTagListProblem(fields(`${seal.replace('i=1; ', '')}${signature}`)), 'as tag-list: missing i=');
});

// Tests for src/message/header-edits.ts: fields found by name and 1-based index as the milter's
// change-header action counts them, folded fields kept whole, and edits applied to relayed bytes.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { applyHeaderEdits, fieldReferences, headerFields, splitFieldLines, splitMessage } from '../../../src/message/index.ts';

const message = Buffer.from(
  'Received: from a\r\n by b\r\nAuthentication-Results: x; none\r\nFrom: a@example.com\r\nauthentication-results: mx.example.org;\r\n\tdkim=pass\r\n\r\nbody\r\n',
  'latin1',
);

test('fields keep their folded lines; names are as written', () => {
  const fields = headerFields(splitMessage(message).header.toString('latin1'));
  assert.deepEqual(
    fields.map((field) => field.name),
    ['Received', 'Authentication-Results', 'From', 'authentication-results'],
  );
  assert.equal(fields[0]?.raw, 'Received: from a\r\n by b\r\n');
  assert.equal(fields[3]?.raw, 'authentication-results: mx.example.org;\r\n\tdkim=pass\r\n');
});

test('references count fields of the same name case-insensitively, from 1', () => {
  const fields = headerFields(splitMessage(message).header.toString('latin1'));
  assert.deepEqual(
    fieldReferences(fields, (field) => field.raw.includes('mx.example.org')),
    [{ name: 'authentication-results', index: 2 }],
  );
});

test('applied edits: added fields on top, the referenced field gone, every other byte as received', () => {
  const edits = { add: ['X-One: 1\r\n', 'X-Two: 2\r\n'], remove: [{ name: 'Authentication-Results', index: 2 }] };
  const relayed = Buffer.concat(applyHeaderEdits(message, splitMessage(message).header, edits)).toString('latin1');
  assert.equal(
    relayed,
    'X-One: 1\r\nX-Two: 2\r\nReceived: from a\r\n by b\r\nAuthentication-Results: x; none\r\nFrom: a@example.com\r\n\r\nbody\r\n',
  );
  const untouched = applyHeaderEdits(message, splitMessage(message).header, { add: [], remove: [] });
  assert.equal(untouched.length, 1);
  assert.equal(untouched[0], message, 'without edits the message itself is sent, not a copy');
});

test('a signer\'s block of lines splits into whole fields', () => {
  assert.deepEqual(splitFieldLines('DKIM-Signature: a=1;\r\n b=2\r\nDKIM-Signature: a=3\r\n'), ['DKIM-Signature: a=1;\r\n b=2\r\n', 'DKIM-Signature: a=3\r\n']);
});

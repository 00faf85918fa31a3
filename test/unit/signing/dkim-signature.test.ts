import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { test } from 'node:test';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { parseHeaders } from 'mailauth/lib/tools.js';
import { createSignatures, selectHeaderFields } from '../../../src/signing/dkim-signature.ts';
import { SigningError } from '../../../src/errors.ts';
import { dnsRecordValue } from '../../../src/signing/keys.ts';
import { recordsResolver } from '../../helpers/sello.ts';

test('h= lists each present field bottom-up and each oversigned field once more, also when absent', () => {
  const { parsed } = parseHeaders(Buffer.from('To: 1\r\nFrom: a\r\nTo: 2\r\nX-Other: z\r\n'));
  const { names, rows } = selectHeaderFields(parsed, ['From', 'To', 'Subject', 'Cc'], ['From', 'Reply-To', 'Cc']);
  assert.deepEqual(names, ['From', 'From', 'To', 'To', 'Cc', 'Reply-To']);
  assert.deepEqual(rows.map((row) => row.line.toString()), ['From: a', 'To: 2', 'To: 1']);
});

test('signatures verify; t= and x= come from the injected clock; no l=', async () => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const header = Buffer.from('From: a@example.com\r\nSubject: s\r\n');
  const lines = await createSignatures(header, Buffer.from('body\r\n'), [{ domain: 'example.com', selector: 's', algorithm: 'rsa', privateKey: rsa.privateKey }], {
    signedFields: ['From', 'Subject'],
    oversignedFields: ['From', 'Subject'],
    now: new Date('2026-11-23T00:00:00Z'),
    expiryMs: 3_600_000,
  });
  assert.match(lines, /t=1795392000;/);
  assert.match(lines, /x=1795395600;/);
  assert.doesNotMatch(lines, /[; ]l=/);
  assert.ok(lines.endsWith('\r\n'));
  const resolver = recordsResolver(new Map([['s._domainkey.example.com', dnsRecordValue(rsa.privateKey)]]));
  const message = Buffer.concat([Buffer.from(lines), header, Buffer.from('\r\nbody\r\n')]);
  const result = await dkimVerify(message, { resolver: resolver as never, curTime: new Date('2026-11-23T00:30:00Z') });
  assert.equal(result.results[0]?.status?.result, 'pass');
});

test('no From header → SigningError (RFC 6376 §5.4: From must be signed)', async () => {
  const ed = generateKeyPairSync('ed25519');
  await assert.rejects(
    () => createSignatures(Buffer.from('Subject: s\r\n'), Buffer.alloc(0), [{ domain: 'd.test', selector: 's', algorithm: 'ed25519', privateKey: ed.privateKey }], {
      signedFields: ['From', 'Subject'], oversignedFields: [], now: new Date(), expiryMs: false,
    }),
    SigningError,
  );
});

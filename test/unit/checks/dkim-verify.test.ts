// src/checks/dkim-verify.ts: the result words sello reports per signature, where it departs from
// mailauth's (RFC 6376 §6.1.2 and §6.1.3 PERMFAILs), over a zone resolver. Messages are signed by
// mailauth's own dkimSign, an independent signer, with keys made here.

import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { test } from 'node:test';
import { dkimSign } from 'mailauth/lib/dkim/sign.js';
import { verifyDkim } from '../../../src/checks/dkim-verify.ts';
import { dnsError, type DnsErrorCode, type DnsResolve } from '../../../src/dns/types.ts';

const message = Buffer.from('From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: verify\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nHello.\r\n');
const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const publicKeyValue = publicKey.export({ type: 'spki', format: 'der' }).toString('base64');

async function signed(): Promise<Buffer> {
  // dkimSign reads only signatureData[] (its typings also ask for the top-level fields).
  const options = {
    signatureData: [{ signingDomain: 'example.com', selector: 's1', privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, algorithm: 'rsa-sha256', canonicalization: 'relaxed/relaxed' }],
  };
  const result = await dkimSign(message, options as never);
  assert.deepEqual(result.errors, []);
  return Buffer.concat([Buffer.from(result.signatures), message]);
}

/** s1._domainkey.example.com answers `record`, or fails with a DNS error code. */
function zone(record: string | DnsErrorCode): DnsResolve {
  return async (name, rrtype) => {
    if (name.toLowerCase() !== 's1._domainkey.example.com' || rrtype !== 'TXT') throw dnsError('ENOTFOUND', name, rrtype);
    if (/^E[A-Z]+$/.test(record)) throw dnsError(record as DnsErrorCode, name, rrtype);
    return [[record]];
  };
}

async function only(data: Buffer, resolver: DnsResolve): Promise<{ result: string; info: string }> {
  const { signatures } = await verifyDkim(data, resolver);
  assert.equal(signatures.length, 1);
  return { result: signatures[0]!.result, info: signatures[0]!.info };
}

test('a published key: pass', async () => {
  assert.equal((await only(await signed(), zone(`v=DKIM1; k=rsa; p=${publicKeyValue}`))).result, 'pass');
});

test('body changed: fail (RFC 6376 §6.1.3), where mailauth says neutral', async () => {
  const tampered = Buffer.from((await signed()).toString('latin1').replace('Hello.', 'Hellp.'), 'latin1');
  const { result, info } = await only(tampered, zone(`v=DKIM1; k=rsa; p=${publicKeyValue}`));
  assert.equal(result, 'fail');
  assert.match(info, /^dkim=fail \(body hash did not verify\) /);
});

test('key record problems are permerror (RFC 6376 §6.1.2 PERMFAIL), where mailauth says neutral', async () => {
  const data = await signed();
  const cases: [string | DnsErrorCode, string][] = [
    ['ENOTFOUND', 'no key'],
    ['ENODATA', 'no key'],
    ['v=DKIM1; k=rsa; p=', 'invalid public key'],
    ['v=DKIM1; k=rsa; p=bm90IGEga2V5', 'unknown key type'],
    [`v=DKIM2; k=rsa; p=${publicKeyValue}`, 'unknown key version'],
    [`v=DKIM1; k=dsa; p=${publicKeyValue}`, 'unknown key type'],
    [`v=DKIM1; k=rsa; h=sha1; p=${publicKeyValue}`, 'inappropriate hash algorithm'],
    [`v=DKIM1; k=rsa; s=tlsrpt; p=${publicKeyValue}`, 'key not for email'],
  ];
  for (const [record, comment] of cases) {
    const { result, info } = await only(data, zone(record));
    assert.equal(result, 'permerror', `${record}: ${info}`);
    assert.ok(info.startsWith(`dkim=permerror (${comment}) `), `${record}: ${info}`);
  }
});

test('a DNS failure stays temperror: a later attempt may pass', async () => {
  for (const code of ['ETIMEOUT', 'ESERVFAIL'] as const) {
    const { result } = await only(await signed(), zone(code));
    assert.equal(result, 'temperror', code);
  }
});

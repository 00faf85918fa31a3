// src/checks/arc.ts: the strict tag-list reading runs before mailauth's chain validation and
// decides alone when a field is malformed (no key lookup), in the shape DMARC reads; a well-formed
// chain goes on to mailauth. Chains are sealed by mailauth's own sealMessage with keys made here.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sealMessage } from 'mailauth';
import { verifyArc } from '../../../src/checks/arc.ts';
import { verifyDkim } from '../../../src/checks/dkim-verify.ts';
import { dnsError, type DnsResolve } from '../../../src/dns/types.ts';
import { generateDkimKey } from '../../helpers/dkim-keys.ts';

const key = generateDkimKey('rsa-sha256');
const message = Buffer.from('From: Alice <alice@origin.example>\r\nTo: bob@example.net\r\nSubject: arc\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nHello.\r\n');

function countingResolver(): { resolve: DnsResolve; lookups: string[] } {
  const lookups: string[] = [];
  const resolve: DnsResolve = async (name, rrtype) => {
    lookups.push(name);
    if (name.toLowerCase() === 'hop1._domainkey.forwarder.example' && rrtype === 'TXT') return [[key.record]] as never;
    throw dnsError('ENOTFOUND', name, rrtype);
  };
  return { resolve, lookups };
}

async function sealed(): Promise<string> {
  const set = await sealMessage(message, {
    signingDomain: 'forwarder.example',
    selector: 'hop1',
    privateKey: key.privateKeyPem,
    authResults: 'forwarder.example; spf=pass smtp.mailfrom=alice@origin.example',
    cv: 'none',
  });
  return Buffer.concat([set, message]).toString('latin1');
}

/** verifyArc's result and the lookups it made itself (verifyDkim already fetched the AMS key). */
async function arcOf(text: string) {
  const dkim = await verifyDkim(Buffer.from(text, 'latin1'), countingResolver().resolve);
  const { resolve, lookups } = countingResolver();
  const arc = await verifyArc(dkim.arcChain, resolve, '192.0.2.1');
  return { arc, lookups };
}

test('a well-formed chain is validated by mailauth', async () => {
  const { arc, lookups } = await arcOf(await sealed());
  assert.equal(arc.result, 'pass', arc.info);
  assert.deepEqual(lookups, ['hop1._domainkey.forwarder.example'], 'the seal key');
});

test('a malformed ARC-Seal fails the chain before the seals are validated, as mailauth reports a failure', async () => {
  const chain = await sealed();
  // The seal's own signature still covers the field as written, so only the syntax is wrong.
  const malformed = chain.replace(/^(ARC-Seal: i=1;)/m, '$1;');
  assert.notEqual(malformed, chain);
  const { arc, lookups } = await arcOf(malformed);
  assert.equal(arc.result, 'fail');
  assert.equal(arc.info, 'arc=fail (as tag-list: empty tag-spec at position 2)');
  assert.deepEqual(arc.raw, { status: { result: 'fail', comment: 'as tag-list: empty tag-spec at position 2' }, info: arc.info });
  assert.deepEqual(lookups, [], 'no seal key looked up');
});

test('"D=" is not "d=": the ARC-Message-Signature then lacks d=', async () => {
  const chain = await sealed();
  const recased = chain.replace(/^(ARC-Message-Signature: [^]*?)\bd=/m, '$1D=');
  assert.notEqual(recased, chain);
  const { arc } = await arcOf(recased);
  assert.equal(arc.info, 'arc=fail (i=1 ams tag-list: missing d=)');
});

test('a message without ARC fields is none', async () => {
  const { arc } = await arcOf(message.toString('latin1'));
  assert.equal(arc.result, 'none');
});

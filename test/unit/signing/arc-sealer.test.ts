// Unit tests for src/signing/arc-sealer.ts and the ARC key loading of src/signing/key-store.ts:
// the set's instance and cv= for each chain a message can carry (RFC 8617 §5.1, §4.2.1), the
// sets it refuses to add, mailauth's errors surfacing as ArcSealError, and RSA-only keys.
// Independent check: every set made is verified by mailauth's own ARC validator over key records
// computed by test/helpers/dkim-keys.ts (the interop test adds dkimpy); earlier hops' sets are
// made by mailauth's sealMessage, not by the code under test.

import assert from 'node:assert/strict';
import { createPublicKey, generateKeyPairSync, verify } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { authenticate, sealMessage } from 'mailauth';
import { main } from '../../../src/cli/run.ts';
import { ArcSealError, ConfigError } from '../../../src/errors.ts';
import { splitMessage } from '../../../src/message/index.ts';
import { arcPosition, ArcSealer, type ArcSealResult, type ChainValidation } from '../../../src/signing/arc-sealer.ts';
import { loadArcSealKey } from '../../../src/signing/key-store.ts';
import { generateKey, writeKey } from '../../../src/signing/keys.ts';
import { runCommand } from '../../helpers/cli.ts';
import { generateDkimKey } from '../../helpers/dkim-keys.ts';
import { recordsResolver } from '../../helpers/sello.ts';

const ourKey = generateDkimKey('rsa-sha256');
const earlierHopKey = generateDkimKey('rsa-sha256');
const records = new Map([
  ['arc1._domainkey.sealer.example', ourKey.record],
  ['hop1._domainkey.forwarder.example', earlierHopKey.record],
]);
const resolver = recordsResolver(records);
const now = new Date('2026-11-23T10:00:00Z');
const sealer = new ArcSealer({ domain: 'sealer.example', selector: 'arc1', privateKey: ourKey.privateKey }, () => now);

/** Our Authentication-Results value, as pipeline/authentication-results.ts folds it. */
const ourResults = 'mx.sello.test;\r\n spf=pass smtp.mailfrom=alice@origin.example;\r\n dkim=none;\r\n arc=none';

const plain = Buffer.from(
  'Authentication-Results: mx.sello.test;\r\n spf=pass smtp.mailfrom=alice@origin.example;\r\n dkim=none;\r\n arc=none\r\n' +
    'From: Alice <alice@origin.example>\r\nTo: bob@example.net\r\nSubject: hello\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m1@origin.example>\r\n\r\nHello.\r\n',
);

/** `message` with the set of an earlier hop on top, made by mailauth's own sealMessage. */
async function sealedByEarlierHop(message: Buffer, cv: 'none' | 'pass' = 'none'): Promise<Buffer> {
  const set = await sealMessage(message, {
    signingDomain: 'forwarder.example',
    selector: 'hop1',
    privateKey: earlierHopKey.privateKeyPem,
    authResults: 'forwarder.example; spf=pass smtp.mailfrom=alice@origin.example',
    cv,
  });
  assert.ok(set.length > 0, 'the earlier hop sealed');
  return Buffer.concat([set, message]);
}

async function seal(message: Buffer, validation: ChainValidation): Promise<{ result: ArcSealResult; relayed: Buffer }> {
  const split = splitMessage(message);
  const result = await sealer.seal(split, validation, ourResults);
  return { result, relayed: result.sealed ? Buffer.concat([Buffer.from(result.headerLines, 'latin1'), message]) : message };
}

/** What mailauth's ARC validator (as the next hop) says about `message`. */
async function nextHopArc(message: Buffer): Promise<{ result: string; instance: number | false; comment?: string }> {
  const verdict = await authenticate(message, { resolver: resolver as never, ip: '192.0.2.1', helo: 'mx.sello.test', sender: 'alice@origin.example', mta: 'next.example', disableBimi: true, disableDmarc: true });
  const arc = verdict.arc as unknown as { status: { result: string; comment?: string }; i: number | false };
  return { result: arc.status.result, instance: arc.i, ...(arc.status.comment ? { comment: arc.status.comment } : {}) };
}

function fields(headerLines: string): string[] {
  return headerLines.split(/\r\n(?![ \t])/).filter(Boolean);
}

/** The ARC sets of a message's header, oldest first, each [ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results]. */
function arcSets(message: Buffer): string[][] {
  const sets: string[][] = [];
  for (const field of fields(message.toString('latin1').split('\r\n\r\n')[0] ?? '')) {
    const order = ['arc-seal', 'arc-message-signature', 'arc-authentication-results'].indexOf(field.slice(0, field.indexOf(':')).toLowerCase());
    if (order === -1) continue;
    const instance = Number(/\bi=(\d+)/.exec(field)?.[1]);
    (sets[instance - 1] ??= [])[order] = field;
  }
  return sets;
}

/** RFC 6376 §3.4.2 relaxed header canonicalization, written here independently of mailauth. */
function relaxed(field: string): string {
  const colon = field.indexOf(':');
  return `${field.slice(0, colon).trim().toLowerCase()}:${field.slice(colon + 1).replace(/\r\n/g, '').replace(/[ \t]+/g, ' ').trim()}`;
}

/**
 * Whether the newest ARC-Seal of `sets` is a valid signature over exactly those sets (RFC 8617
 * §5.1.1: each set's AAR, AMS and AS in instance order, the newest AS with an empty b=).
 */
function sealSigns(sets: string[][]): boolean {
  const newest = sets.at(-1)!;
  const lines = sets.flatMap(([seal, signature, results], index) => [
    `${relaxed(results!)}\r\n`,
    `${relaxed(signature!)}\r\n`,
    index < sets.length - 1 ? `${relaxed(seal!)}\r\n` : relaxed(seal!).replace(/(^|;\s*)b=[^;]*/, '$1b='),
  ]);
  const b = /(?:^|;\s*)b=([^;]*)/.exec(relaxed(newest[0]!))![1]!;
  return verify('sha256', Buffer.from(lines.join('')), createPublicKey(ourKey.privateKey), Buffer.from(b.replace(/\s+/g, ''), 'base64'));
}

function tag(field: string, name: string): string | undefined {
  return new RegExp(`(?:^|[;:]\\s*)${name}=([^;]*)`).exec(field.replace(/\r\n[ \t]+/g, ' '))?.[1]?.trim();
}

test('no chain: i=1 cv=none, three fields in RFC 8617 order, the AAR carries our Authentication-Results; the next hop gets arc=pass', async () => {
  const { result, relayed } = await seal(plain, 'none');
  assert.ok(result.sealed);
  assert.equal(result.instance, 1);
  assert.equal(result.cv, 'none');
  const set = fields(result.headerLines);
  assert.deepEqual(set.map((field) => field.slice(0, field.indexOf(':'))), ['ARC-Seal', 'ARC-Message-Signature', 'ARC-Authentication-Results']);
  assert.ok(result.headerLines.endsWith('\r\n'));
  assert.equal(set[2], `ARC-Authentication-Results: i=1; ${ourResults}`);
  assert.equal(tag(set[0]!, 'cv'), 'none');
  assert.equal(tag(set[0]!, 'a'), 'rsa-sha256');
  assert.equal(tag(set[0]!, 'd'), 'sealer.example');
  assert.equal(tag(set[0]!, 's'), 'arc1');
  assert.equal(tag(set[0]!, 't'), String(now.getTime() / 1000));
  const signed = (tag(set[1]!, 'h') ?? '').split(':').map((name) => name.trim().toLowerCase());
  assert.ok(signed.includes('from') && signed.includes('subject'), signed.join(','));
  assert.ok(!signed.includes('authentication-results'), 'RFC 8617 §4.1.2: never Authentication-Results');
  // The next hop reads its summary from our ARC-Authentication-Results.
  assert.deepEqual(await nextHopArc(relayed), { result: 'pass', instance: 1, comment: 'i=1 spf=pass dkim=none' });
});

test('the ARC-Message-Signature covers the body and the DKIM-Signature fields: changing either breaks the chain', async () => {
  const withSignature = Buffer.concat([Buffer.from('DKIM-Signature: v=1; a=rsa-sha256; d=origin.example; s=x; h=from; bh=x; b=x\r\n'), plain]);
  const { result, relayed } = await seal(withSignature, 'none');
  assert.ok(result.sealed);
  const signed = (tag(fields(result.headerLines)[1]!, 'h') ?? '').split(':').map((name) => name.trim().toLowerCase());
  assert.ok(signed.includes('dkim-signature'), `RFC 8617 §4.1.2: the AMS covers DKIM-Signature (h=${signed.join(':')})`);
  assert.equal((await nextHopArc(relayed)).result, 'pass');
  assert.equal((await nextHopArc(Buffer.from(relayed.toString('latin1').replace('Hello.', 'Hullo.'), 'latin1'))).result, 'fail');
  assert.equal((await nextHopArc(Buffer.from(relayed.toString('latin1').replace('d=origin.example; s=x', 'd=origin.example; s=y'), 'latin1'))).result, 'fail');
});

test('a valid chain from an earlier hop: i=2 cv=pass, and the next hop validates the whole chain', async () => {
  const received = await sealedByEarlierHop(plain);
  assert.equal((await nextHopArc(received)).result, 'pass', 'the earlier hop made a valid chain');
  const { result, relayed } = await seal(received, 'pass');
  assert.ok(result.sealed);
  assert.equal(result.instance, 2);
  assert.equal(result.cv, 'pass');
  assert.equal(tag(fields(result.headerLines)[0]!, 'cv'), 'pass');
  assert.equal(fields(result.headerLines)[2], `ARC-Authentication-Results: i=2; ${ourResults}`);
  assert.deepEqual(await nextHopArc(relayed), { result: 'pass', instance: 2, comment: 'i=2 spf=pass dkim=none' });
  // RFC 8617 §5.1.1: a cv=pass seal signs the whole chain, not only its own set.
  const sets = arcSets(relayed);
  assert.equal(sets.length, 2);
  assert.ok(sealSigns(sets));
  assert.ok(!sealSigns(sets.slice(1)));
});

test('a chain that failed validation here: i=N+1 cv=fail; the next hop sees the chain as failed', async () => {
  // The earlier set no longer validates: the body changed after it was sealed.
  const received = Buffer.from((await sealedByEarlierHop(plain)).toString('latin1').replace('Hello.', 'Changed.'), 'latin1');
  assert.equal((await nextHopArc(received)).result, 'fail');
  const { result, relayed } = await seal(received, 'fail');
  assert.ok(result.sealed);
  assert.equal(result.instance, 2);
  assert.equal(result.cv, 'fail');
  assert.equal(tag(fields(result.headerLines)[0]!, 'cv'), 'fail');
  assert.equal((await nextHopArc(relayed)).result, 'fail');
  // RFC 8617 §5.1.2: a cv=fail seal signs only its own set, as if it were the only one.
  const sets = arcSets(relayed);
  assert.equal(sets.length, 2);
  assert.ok(sealSigns(sets.slice(1)));
  assert.ok(!sealSigns(sets));
});

test('RFC 8617 §5.1: a chain whose newest seal says cv=fail is not sealed again', async () => {
  const failed = Buffer.from((await sealedByEarlierHop(plain)).toString('latin1').replace('Hello.', 'Changed.'), 'latin1');
  const { result: first, relayed: withFailSeal } = await seal(failed, 'fail');
  assert.ok(first.sealed && first.cv === 'fail');
  const { result } = await seal(withFailSeal, 'fail');
  assert.deepEqual(result, { sealed: false, reason: 'chain-already-failed', instance: 2 });
});

test('RFC 8617 §4.2.1: a chain that already has instance 50 gets no 51st set; 49 still gets the 50th', async () => {
  const setAt = (instance: number) =>
    `ARC-Seal: i=${instance}; a=rsa-sha256; t=1; cv=pass; d=forwarder.example; s=hop1; b=AAAA\r\n` +
    `ARC-Message-Signature: i=${instance}; a=rsa-sha256; c=relaxed/relaxed; d=forwarder.example; s=hop1; h=from; bh=AAAA; b=AAAA\r\n` +
    `ARC-Authentication-Results: i=${instance}; forwarder.example; spf=pass\r\n`;
  const full = Buffer.concat([Buffer.from(setAt(50)), plain]);
  assert.deepEqual((await seal(full, 'fail')).result, { sealed: false, reason: 'chain-full', instance: 50 });
  const almost = Buffer.concat([Buffer.from(setAt(49)), plain]);
  const { result } = await seal(almost, 'fail');
  assert.ok(result.sealed);
  assert.equal(result.instance, 50);
});

test('ARC fields the verifier could not read as a chain still take their instances: cv=fail, never a second i=1', async () => {
  const stray = Buffer.concat([Buffer.from('ARC-Authentication-Results: i=1; elsewhere.example; spf=pass\r\n'), plain]);
  assert.deepEqual(arcPosition(splitMessage(stray).header), { highest: 1, newestCv: undefined });
  const { result } = await seal(stray, 'none');
  assert.ok(result.sealed);
  assert.equal(result.instance, 2);
  assert.equal(result.cv, 'fail');
});

test("mailauth's refusal becomes an ArcSealError naming the key and mailauth's code (no From: nothing to sign)", async () => {
  const noFrom = Buffer.from('Subject: no from\r\nTo: bob@example.net\r\n\r\nHello.\r\n');
  await assert.rejects(sealer.seal(splitMessage(noFrom), 'none', ourResults), (error: unknown) => {
    assert.ok(error instanceof ArcSealError);
    assert.match(error.message, /^ARC sealing with arc1\._domainkey\.sealer\.example failed: ENOFROM: /);
    return true;
  });
});

test('a sealer is made with an RSA key only', () => {
  const { privateKey } = generateKeyPairSync('ed25519');
  assert.throws(() => new ArcSealer({ domain: 'sealer.example', selector: 'ed1', privateKey }), ArcSealError);
});

let keysDir: string;
before(async () => {
  keysDir = await mkdtemp(path.join(tmpdir(), 'sello-arc-keys-'));
  await writeKey(keysDir, 'sealer.example', 'arc1', generateKey('rsa'));
  await writeKey(keysDir, 'sealer.example', 'ed1', generateKey('ed25519'));
});
after(() => rm(keysDir, { recursive: true, force: true }));

test('loadArcSealKey: an RSA key loads; an Ed25519 or missing key is a ConfigError under inbound.arc.seal naming the file', async () => {
  const loaded = await loadArcSealKey(keysDir, 'sealer.example', 'arc1');
  assert.equal(loaded.key.privateKey.asymmetricKeyType, 'rsa');
  assert.deepEqual({ ...loaded.info, modified: undefined }, { domain: 'sealer.example', selector: 'arc1', algorithm: 'rsa-sha256', bits: 2048, path: path.join(keysDir, 'sealer.example/arc1.pem'), modified: undefined });
  await assert.rejects(loadArcSealKey(keysDir, 'sealer.example', 'ed1'), (error: unknown) => {
    assert.ok(error instanceof ConfigError);
    assert.equal(error.path, 'inbound.arc.seal');
    assert.equal(
      error.message,
      `inbound.arc.seal: ${path.join(keysDir, 'sealer.example/ed1.pem')}: an Ed25519 key cannot seal ARC: sello seals with rsa-sha256 only (one seal per hop, no fallback signature); use an RSA key (make one with: sello keygen sealer.example --selector ed1 --algorithm rsa --keys-dir ${keysDir})`,
    );
    return true;
  });
  await assert.rejects(loadArcSealKey(keysDir, 'sealer.example', 'nokey'), (error: unknown) => {
    assert.ok(error instanceof ConfigError);
    assert.match(error.message, new RegExp(`^inbound\\.arc\\.seal: selector "nokey": ${path.join(keysDir, 'sealer.example/nokey.pem').replace(/[.]/g, '\\.')}: no such key file`));
    return true;
  });
});

test('sello check-config loads the ARC key: OK names it; an Ed25519 key fails with exit 1 and the key path', async () => {
  const configFile = async (selector: string) => {
    const file = path.join(keysDir, `sello-${selector}.yaml`);
    await writeFile(
      file,
      `listeners: [{ name: mx, role: mx, listen: "127.0.0.1:2525" }]\ninbound: { localDomains: [example.net], arc: { seal: { domain: sealer.example, selector: ${selector} } } }\nsigning: { keysDir: ${keysDir} }\n`,
    );
    return file;
  };
  const good = await runCommand(main, ['check-config', '--config', await configFile('arc1')]);
  assert.equal(good.code, 0, good.err);
  assert.match(good.out, /: OK \(1 listener\(s\), 0 signing key\(s\), ARC sealing with arc1\._domainkey\.sealer\.example\)\n$/);
  const bad = await runCommand(main, ['check-config', '--config', await configFile('ed1')]);
  assert.equal(bad.code, 1);
  assert.ok(bad.err.includes(`inbound.arc.seal: ${path.join(keysDir, 'sealer.example/ed1.pem')}: an Ed25519 key cannot seal ARC`), bad.err);
});

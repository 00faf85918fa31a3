// Tests for `sello rotate` (src/cli/rotate.ts) and the rotation lines of `sello keycheck`,
// in-process with an injected clock, against the test DNS server on loopback.

import assert from 'node:assert/strict';
import { access, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { createKeycheckCommand } from '../../../src/cli/keycheck.ts';
import { createRotateCommand } from '../../../src/cli/rotate.ts';
import { main } from '../../../src/cli/run.ts';
import { dnsRecordValue, loadKey, keyPath } from '../../../src/signing/keys.ts';
import { readRotation } from '../../../src/signing/rotation.ts';
import { runCommand } from '../../helpers/cli.ts';
import { startDnsServer } from '../../helpers/dns-server.ts';
import { tempDir } from '../../helpers/tools.ts';

const december = new Date('2026-12-04T12:00:00Z');
const rotate = (args: string[], at = december) => runCommand(createRotateCommand(() => at), args);
/** Through main(), which turns errors into messages and exit codes. */
const rotateMain = (args: string[]) => runCommand(main, ['rotate', ...args]);

async function keysWithActive(t: TestContext, ...keygen: string[][]): Promise<string> {
  const keysDir = await tempDir(t);
  for (const args of keygen) {
    const run = await runCommand(main, ['keygen', 'example.com', '--keys-dir', keysDir, ...args]);
    assert.equal(run.code, 0, run.err);
  }
  return keysDir;
}

const exists = (path: string) => access(path).then(() => true, () => false);

test('rotate makes a pending key with a date selector, prints its record, and keeps the active key signing', async (t) => {
  const keysDir = await keysWithActive(t, ['--selector', 'first']);
  const run = await rotate(['example.com', '--keys-dir', keysDir, '--format', 'value']);
  assert.equal(run.code, 0, run.err);
  const key = await loadKey(keyPath(keysDir, 'example.com', '202612'));
  assert.equal(run.out, `${dnsRecordValue(key)}\n`);
  assert.match(run.err, /first keeps signing until the server has seen it in DNS/);
  const state = (await readRotation(keysDir, 'example.com'))?.state;
  assert.deepEqual(state?.keys.map((entry) => [entry.selector, entry.state, entry.algorithm]), [
    ['202612', 'pending', 'rsa'],
    ['first', 'active', 'rsa'],
  ]);

  const again = await rotateMain(['example.com', '--keys-dir', keysDir]);
  assert.equal(again.code, 1);
  assert.match(again.err, /202612 already pending: publish its record/);
});

test('rotate follows the active algorithms (dual RSA + Ed25519 → both), and takes a day selector when the month one is taken', async (t) => {
  const keysDir = await keysWithActive(t, ['--selector', '202612', '--algorithm', 'both']);
  const run = await rotate(['example.com', '--keys-dir', keysDir]);
  assert.equal(run.code, 0, run.err);
  assert.match(run.out, /^20261204-rsa\._domainkey\.example\.com\. IN TXT \( "v=DKIM1; k=rsa; " /m);
  assert.match(run.out, /^20261204-ed25519\._domainkey\.example\.com\. IN TXT \( "v=DKIM1; k=ed25519; p=/m);
  const state = (await readRotation(keysDir, 'example.com'))?.state;
  assert.deepEqual(state?.keys.filter((entry) => entry.state === 'pending').map((entry) => [entry.selector, entry.algorithm]), [
    ['20261204-rsa', 'rsa'],
    ['20261204-ed25519', 'ed25519'],
  ]);
});

test('rotate needs a key to replace, and reports usage errors with exit 2', async (t) => {
  const keysDir = await tempDir(t);
  const none = await rotateMain(['example.com', '--keys-dir', keysDir]);
  assert.equal(none.code, 2);
  assert.match(none.err, /example\.com has no key yet: make the first one with sello keygen example\.com/);
  assert.equal((await rotateMain(['example.com', '--keys-dir', keysDir, '--force'])).code, 2);
  assert.equal((await rotateMain(['example.com', '--keys-dir', keysDir, '--algorithm', 'dsa'])).code, 2);
  assert.equal((await rotateMain(['../etc', '--keys-dir', keysDir])).code, 2);
});

test('a hand-edited rotation.yaml with a mistake is refused with the file and entry named', async (t) => {
  const keysDir = await keysWithActive(t, ['--selector', 'first']);
  await writeFile(join(keysDir, 'example.com', 'rotation.yaml'), 'keys:\n  - selector: first\n    state: signing\n');
  const run = await rotateMain(['example.com', '--keys-dir', keysDir]);
  assert.equal(run.code, 1);
  assert.match(run.err, /^sello rotate: .*example\.com\/rotation\.yaml: keys\[0\]\.state: /);
});

test('retirement: keycheck says from when the old record may go (last signature + expiry + margin); --finish waits for it', async (t) => {
  const keysDir = await keysWithActive(t, ['--selector', 'old']);
  const oldRecord = dnsRecordValue(await loadKey(keyPath(keysDir, 'example.com', 'old')));
  assert.equal((await rotate(['example.com', '--keys-dir', keysDir, '--selector', 'new'])).code, 0);
  const newRecord = dnsRecordValue(await loadKey(keyPath(keysDir, 'example.com', 'new')));
  // The server's promotion, as it writes it (its own tests cover when): new active, old retiring.
  const promotedAt = '2026-12-05T00:00:00.000Z';
  await writeFile(
    join(keysDir, 'example.com', 'rotation.yaml'),
    `keys:\n  - selector: new\n    state: active\n    since: ${promotedAt}\n  - selector: old\n    state: retiring\n    since: ${promotedAt}\n`,
  );
  const configFile = join(keysDir, 'sello.yaml');
  const dns = await startDnsServer({ 'old._domainkey.example.com': { TXT: [oldRecord] }, 'new._domainkey.example.com': { TXT: [newRecord] } });
  t.after(() => dns.close());
  await writeFile(
    configFile,
    `listeners:\n  - {name: s, role: submission, listen: "127.0.0.1:0"}\nsigning:\n  keysDir: ${keysDir}\n  domains: {example.com: old}\n  expiry: 2d\n  rotation: {retireMargin: 12h}\ndns:\n  servers: ["${dns.address}"]\n`,
  );
  const keycheck = (at: Date) => runCommand(createKeycheckCommand(() => at), ['example.com', '--config', configFile, '--format', 'json']);
  const removable = '2026-12-07T12:00:00.000Z'; // promotion + 2d expiry + 12h margin

  const early = await keycheck(new Date('2026-12-06T00:00:00Z'));
  assert.equal(early.code, 0, early.out);
  const keys = (JSON.parse(early.out) as { keys: { selector: string; state: string; rotation?: { state: string; recordRemovableFrom?: string; advice: string } }[] }).keys;
  assert.deepEqual(
    keys.map((key) => [key.selector, key.state, key.rotation?.state, key.rotation?.recordRemovableFrom]),
    [
      ['new', 'ok', 'active', undefined],
      ['old', 'ok', 'retiring', removable],
    ],
  );
  assert.match(keys[1]?.rotation?.advice ?? '', /keep its record until 2026-12-07T12:00:00\.000Z/);

  // Removing the record before that time breaks mail still in transit: a problem.
  dns.remove('old._domainkey.example.com');
  const tooSoon = await runCommand(createKeycheckCommand(() => new Date('2026-12-06T00:00:00Z')), ['example.com', '--config', configFile]);
  assert.equal(tooSoon.code, 1);
  assert.match(tooSoon.out, /rotation: retiring: its record is missing before 2026-12-07T12:00:00\.000Z/);
  const later = await runCommand(createKeycheckCommand(() => new Date('2026-12-08T00:00:00Z')), ['example.com', '--config', configFile]);
  assert.equal(later.code, 0, later.out);
  assert.match(later.out, /rotation: retiring: its record is gone; run sello rotate example\.com --finish/);

  const notYet = await rotate(['example.com', '--config', configFile, '--finish'], new Date('2026-12-06T00:00:00Z'));
  assert.equal(notYet.code, 1);
  assert.match(notYet.err, /old: not yet; signatures made until 2026-12-05T00:00:00\.000Z may be verified until 2026-12-07T12:00:00\.000Z/);
  assert.equal(await exists(keyPath(keysDir, 'example.com', 'old')), true);

  const done = await rotate(['example.com', '--config', configFile, '--finish'], new Date('2026-12-08T00:00:00Z'));
  assert.equal(done.code, 0, done.err);
  assert.match(done.err, /remove its record old\._domainkey\.example\.com from DNS, or revoke it/);
  assert.equal(await exists(keyPath(keysDir, 'example.com', 'old')), false);
  assert.doesNotMatch(await readFile(join(keysDir, 'example.com', 'rotation.yaml'), 'utf8'), /old/);
  const afterwards = await keycheck(new Date('2026-12-08T00:00:00Z'));
  assert.equal(afterwards.code, 0, `signing.domains still names old, but rotation.yaml decides: ${afterwards.out}`);
  assert.deepEqual((JSON.parse(afterwards.out) as { keys: { selector: string }[] }).keys.map((key) => key.selector), ['new']);
});

test('--finish --force removes a retiring key before its time', async (t) => {
  const keysDir = await keysWithActive(t, ['--selector', 'old']);
  assert.equal((await rotate(['example.com', '--keys-dir', keysDir, '--selector', 'new'])).code, 0);
  await writeFile(join(keysDir, 'example.com', 'rotation.yaml'), `keys:\n  - {selector: new, state: active}\n  - {selector: old, state: retiring, since: "${december.toISOString()}"}\n`);
  assert.equal((await rotate(['example.com', '--keys-dir', keysDir, '--finish'])).code, 1);
  const forced = await rotate(['example.com', '--keys-dir', keysDir, '--finish', '--force']);
  assert.equal(forced.code, 0, forced.err);
  assert.equal(await exists(keyPath(keysDir, 'example.com', 'old')), false);
});

test('keycheck with --keys-dir passes rotation.yaml over quietly and marks a pending key whose record is absent as a problem', async (t) => {
  const keysDir = await keysWithActive(t, ['--selector', 'old']);
  const oldRecord = dnsRecordValue(await loadKey(keyPath(keysDir, 'example.com', 'old')));
  assert.equal((await rotate(['example.com', '--keys-dir', keysDir, '--selector', 'new'])).code, 0);
  const dns = await startDnsServer({ 'old._domainkey.example.com': { TXT: [oldRecord] } });
  t.after(() => dns.close());
  const run = await runCommand(main, ['keycheck', 'example.com', '--keys-dir', keysDir, '--dns', dns.address]);
  assert.equal(run.code, 1);
  assert.equal(run.err, '');
  assert.match(run.out, /^missing +new\._domainkey\.example\.com .*\n +rotation: pending: not used while its record is missing/m);
  assert.match(run.out, /^ok +old\._domainkey\.example\.com .*\n +rotation: active: signs/m);
});

test('--promoted records the switch in a copy the servers cannot write, only once keycheck judges the record ok', async (t) => {
  const keysDir = await keysWithActive(t, ['--selector', 'old']);
  const oldRecord = dnsRecordValue(await loadKey(keyPath(keysDir, 'example.com', 'old')));
  assert.equal((await rotate(['example.com', '--keys-dir', keysDir, '--selector', 'new'])).code, 0);
  const dns = await startDnsServer({ 'old._domainkey.example.com': { TXT: [oldRecord] }, 'new._domainkey.example.com': { TXT: ['v=DKIM1; k=rsa; p='] } });
  t.after(() => dns.close());
  const args = ['example.com', '--keys-dir', keysDir, '--promoted', '--dns', dns.address];

  const revoked = await rotate(args);
  assert.equal(revoked.code, 1);
  assert.match(revoked.err, /new: not recorded: its record is revoked .*; the servers do not switch to it either/);
  assert.equal((await readRotation(keysDir, 'example.com'))?.state.keys.find((key) => key.selector === 'new')?.state, 'pending');

  dns.set('new._domainkey.example.com', { TXT: [dnsRecordValue(await loadKey(keyPath(keysDir, 'example.com', 'new')))] });
  const recorded = await rotate(args);
  assert.equal(recorded.code, 0, recorded.err);
  assert.deepEqual(
    (await readRotation(keysDir, 'example.com'))?.state.keys.map((key) => [key.selector, key.state, key.since?.toISOString()]),
    [
      ['new', 'active', december.toISOString()],
      ['old', 'retiring', december.toISOString()],
    ],
  );
  assert.equal((await rotateMain(['example.com', '--keys-dir', keysDir, '--dns', dns.address])).code, 2, '--dns without --promoted');
});

test('check-config (and so serve and a reload) refuses a broken rotation.yaml, naming the entry', async (t) => {
  const keysDir = await keysWithActive(t, ['--selector', 'old']);
  const configFile = join(keysDir, 'sello.yaml');
  await writeFile(configFile, `listeners:\n  - {name: s, role: submission, listen: "127.0.0.1:0"}\nsigning:\n  keysDir: ${keysDir}\n  domains: {example.com: old}\n`);
  assert.equal((await runCommand(main, ['check-config', '--config', configFile])).code, 0);
  await writeFile(join(keysDir, 'example.com', 'rotation.yaml'), 'keys:\n  - {selector: old, state: active}\n  - {selector: older, state: retiring}\n');
  const run = await runCommand(main, ['check-config', '--config', configFile]);
  assert.equal(run.code, 1);
  assert.match(run.err, /example\.com\/rotation\.yaml: keys\[1\]\.since: a retiring key needs since:/);
});

// Tests for `sello dns-zone` (src/cli/dns-zone.ts): one zone snippet for the whole signing table,
// keys under keysDir and in signing.keyFiles, tags kept from a record file beside the key —
// sello keygen --record-file's, and the real opendkim-genkey's (Debian opendkim-tools) — a stale
// record file ignored with a warning, a missing key reported while the others still print.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { keygenCommand } from '../../../src/cli/keygen.ts';
import { judge } from '../../../src/cli/keycheck.ts';
import { main } from '../../../src/cli/run.ts';
import { dnsRecordValue, formatRecord, generateKey, loadKey, writeKey } from '../../../src/signing/keys.ts';
import { runCommand } from '../../helpers/cli.ts';
import { findExecutable, requireTool, type ToolCheck } from '../../helpers/tools.ts';

function checkOpendkimGenkey(): ToolCheck {
  const binary = findExecutable(['/usr/sbin/opendkim-genkey', '/usr/bin/opendkim-genkey']);
  return { name: 'opendkim-genkey', missing: binary ? undefined : 'opendkim-genkey not found', install: 'apt-get install opendkim-tools' };
}

async function directory(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'sello-dns-zone-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function zone(config: string, ...args: string[]) {
  return runCommand(main, ['dns-zone', '--config', config, ...args]);
}

test('every key of the signing table, one line each, in table order; a shared key once; --ttl', async (t) => {
  const dir = await directory(t);
  const keysDir = join(dir, 'keys');
  const rsa = await writeKey(keysDir, 'example.com', 'rsa2026', generateKey('rsa'));
  const ed = await writeKey(keysDir, 'example.com', 'ed2026', generateKey('ed25519'));
  const org = await writeKey(keysDir, 'example.org', '202611', generateKey('ed25519'));
  const config = join(dir, 'sello.yaml');
  await writeFile(
    config,
    `listeners:\n  - {name: filter, role: filter, listen: "127.0.0.1:10025"}\nsigning:\n  keysDir: ${keysDir}\n  domains:\n    example.com: [rsa2026, ed2026]\n    "*.example.com": rsa2026\n    example.org: 202611\n`,
  );
  const expected = [
    `; DKIM key records of the signing table of ${config} (sello dns-zone)`,
    formatRecord('example.com', 'rsa2026', dnsRecordValue(await loadKey(rsa)), 'bind'),
    formatRecord('example.com', 'ed2026', dnsRecordValue(await loadKey(ed)), 'bind'),
    formatRecord('example.org', '202611', dnsRecordValue(await loadKey(org)), 'bind'),
    '',
  ].join('\n');
  const run = await zone(config);
  assert.deepEqual([run.code, run.err], [0, '']);
  assert.equal(run.out, expected);
  assert.match(run.out.split('\n')[1] ?? '', /^rsa2026\._domainkey\.example\.com\. IN TXT \( "v=DKIM1; k=rsa; " "p=[A-Za-z0-9+/]{1,255}" "[A-Za-z0-9+/=]+" \)$/);

  const withTtl = await zone(config, '--ttl', '1h');
  assert.match(withTtl.out.split('\n')[3] ?? '', /^202611\._domainkey\.example\.org\. 3600 IN TXT \( "v=DKIM1; k=ed25519; p=/);
  assert.equal((await zone(config, '--ttl', '1.5s')).code, 2);
});

test('tags from keygen --record-file are kept; a record file of another key is ignored with a warning', async (t) => {
  const dir = await directory(t);
  const keysDir = join(dir, 'keys');
  const made = await runCommand(keygenCommand, ['example.com', '--selector', 'tagged', '--algorithm', 'ed25519', '--keys-dir', keysDir, '--record-file', '--testing', '--service', 'email', '--note', 'from sello']);
  assert.equal(made.code, 0, made.err);
  const stale = await writeKey(keysDir, 'example.net', 'stale', generateKey('ed25519'));
  const other = await loadKey(await writeKey(join(dir, 'other'), 'example.net', 'stale', generateKey('ed25519')));
  await writeFile(join(keysDir, 'example.net', 'stale.txt'), `${formatRecord('example.net', 'stale', dnsRecordValue(other, { testing: true }), 'bind')}\n`);
  const config = join(dir, 'sello.yaml');
  await writeFile(config, `listeners:\n  - {name: filter, role: filter, listen: "127.0.0.1:10025"}\nsigning:\n  keysDir: ${keysDir}\n  domains: {example.com: tagged, example.net: stale}\n`);

  const run = await zone(config);
  assert.equal(run.code, 0);
  const lines = run.out.split('\n');
  assert.equal(lines[1], made.out.trimEnd(), 'the record keygen printed, tags and all');
  assert.equal(lines[2], formatRecord('example.net', 'stale', dnsRecordValue(await loadKey(stale)), 'bind'));
  assert.equal(run.err, `warning: ${join(keysDir, 'example.net', 'stale.txt')} does not carry the key ${stale}; printing the key's own record instead\n`);
});

test("opendkim-genkey's key and .txt, referenced by signing.keyFiles: its tags are kept, keycheck judges the record ok", async (t) => {
  if (!requireTool(t, checkOpendkimGenkey())) return;
  const dir = await directory(t);
  const made = spawnSync('opendkim-genkey', [`--directory=${dir}`, '--domain=example.com', '--selector=og', '--restrict', '--testmode', '--note=hello', '--bits=2048'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(made.status, 0, made.stderr);
  const config = join(dir, 'sello.yaml');
  await writeFile(
    config,
    `listeners:\n  - {name: filter, role: filter, listen: "127.0.0.1:10025"}\nsigning:\n  keysDir: ${join(dir, 'keys')}\n  domains: {example.com: og}\n  keyFiles: {og._domainkey.example.com: ${join(dir, 'og.private')}}\n`,
  );
  const run = await zone(config);
  assert.deepEqual([run.code, run.err], [0, '']);
  const line = run.out.split('\n')[1] ?? '';
  const value = [...line.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((match) => (match[1] ?? '').replace(/\\(.)/g, '$1')).join('');
  const key = await loadKey(join(dir, 'og.private'));
  assert.equal(value, `v=DKIM1; n="hello"; h=sha256; k=rsa; t=y; s=email; p=${/p=(\S+)$/.exec(dnsRecordValue(key))?.[1]}`);
  assert.ok(line.startsWith('og._domainkey.example.com. IN TXT ( '));
  assert.deepEqual(judge([value], key), { state: 'ok', detail: '', notes: ['t=y: the domain is testing DKIM', 'n="hello"'] });
});

test('a key that cannot be read: one line naming it on stderr, exit 1, the other records still printed', async (t) => {
  const dir = await directory(t);
  const keysDir = join(dir, 'keys');
  await writeKey(keysDir, 'example.com', 'here', generateKey('ed25519'));
  const config = join(dir, 'sello.yaml');
  await writeFile(config, `listeners:\n  - {name: filter, role: filter, listen: "127.0.0.1:10025"}\nsigning:\n  keysDir: ${keysDir}\n  domains: {example.org: gone, example.com: here}\n`);
  const run = await zone(config);
  assert.equal(run.code, 1);
  assert.equal(run.err, `sello dns-zone: gone._domainkey.example.org: ${join(keysDir, 'example.org', 'gone.pem')}: no such key file\n`);
  assert.match(run.out, /\nhere\._domainkey\.example\.com\. IN TXT /);
  assert.equal((await runCommand(main, ['dns-zone', 'extra'])).code, 2);
});

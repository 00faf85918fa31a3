// Tests for src/signing/key-store.ts: keys open to group or others are refused with the chmod to
// run unless signing.allowUnsafeKeys; signing.keyFiles points at keys kept where they are; the
// check-config path (the same loader) reports the refusal under the signing-table entry.

import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { main } from '../../../src/cli/run.ts';
import { ConfigError } from '../../../src/errors.ts';
import { loadArcSealKey, loadKeyStore, signingKeyPath } from '../../../src/signing/key-store.ts';
import { generateKey, writeKey } from '../../../src/signing/keys.ts';
import { SigningTable } from '../../../src/signing/table.ts';
import { runCommand } from '../../helpers/cli.ts';

async function keysDirWith(t: TestContext, mode: number): Promise<{ keysDir: string; path: string }> {
  const keysDir = await mkdtemp(join(tmpdir(), 'sello-key-store-'));
  t.after(() => rm(keysDir, { recursive: true, force: true }));
  const path = await writeKey(keysDir, 'example.com', 'sel', generateKey('ed25519'));
  await chmod(path, mode);
  return { keysDir, path };
}

const table = new SigningTable({ 'example.com': 'sel' });

for (const mode of [0o644, 0o640, 0o604, 0o660]) {
  test(`a key file of mode ${mode.toString(8).padStart(4, '0')} is refused with the chmod to run`, async (t) => {
    const { keysDir, path } = await keysDirWith(t, mode);
    await assert.rejects(loadKeyStore(keysDir, table), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(
        error.message,
        `signing.domains["example.com"]: selector "sel": ${path}: key file mode is ${mode.toString(8).padStart(4, '0')}, open to group or others; run: chmod 600 ${path} (or set signing.allowUnsafeKeys: true)`,
      );
      return true;
    });
  });
}

test('signing.allowUnsafeKeys: true loads a 0644 key, with the warning', async (t) => {
  const { keysDir } = await keysDirWith(t, 0o644);
  const store = await loadKeyStore(keysDir, table, { allowUnsafeKeys: true });
  assert.equal(store.size, 1);
  assert.match(store.warnings[0] ?? '', /mode is 0644/);
});

test('0600 and 0400 keys load without a warning', async (t) => {
  for (const mode of [0o600, 0o400]) {
    const { keysDir } = await keysDirWith(t, mode);
    const store = await loadKeyStore(keysDir, table);
    assert.equal(store.size, 1);
    assert.deepEqual(store.warnings, []);
  }
});

test('the ARC sealing key follows the same rule', async (t) => {
  const keysDir = await mkdtemp(join(tmpdir(), 'sello-key-store-'));
  t.after(() => rm(keysDir, { recursive: true, force: true }));
  const path = await writeKey(keysDir, 'example.com', 'arc', generateKey('rsa'));
  await chmod(path, 0o640);
  await assert.rejects(loadArcSealKey(keysDir, 'example.com', 'arc'), /inbound\.arc\.seal: selector "arc": .*mode is 0640.*run: chmod 600 /);
  const loaded = await loadArcSealKey(keysDir, 'example.com', 'arc', { allowUnsafeKeys: true });
  assert.equal(loaded.info.path, path);
});

test('signing.keyFiles: a key is read where it is, by record name; other keys stay under keysDir', async (t) => {
  const elsewhere = await mkdtemp(join(tmpdir(), 'sello-key-store-'));
  t.after(() => rm(elsewhere, { recursive: true, force: true }));
  const file = join(elsewhere, 'mail.private');
  await writeFile(file, generateKey('rsa'), { mode: 0o600 });
  const keyFiles = { 'mail._domainkey.Example.COM.': file };
  assert.equal(signingKeyPath('keys', 'example.com', 'mail', { keyFiles }), file);
  assert.equal(signingKeyPath('keys', 'example.com', 'other', { keyFiles }), join('keys', 'example.com', 'other.pem'));
  const store = await loadKeyStore('/nonexistent', new SigningTable({ 'example.com': 'mail' }), { keyFiles });
  assert.equal(store.loaded[0]?.path, file);
  assert.ok(store.get('example.com', 'mail'));
});

test('check-config exits 1 on a 0644 key and names the chmod; allowUnsafeKeys makes it a warning', async (t) => {
  const { keysDir, path } = await keysDirWith(t, 0o644);
  const config = join(keysDir, 'sello.yaml');
  const base = `listeners:\n  - {name: filter, role: filter, listen: "127.0.0.1:10025"}\nsigning:\n  keysDir: ${keysDir}\n  domains: {example.com: sel}\n`;
  await writeFile(config, base);
  let run = await runCommand(main, ['check-config', '--config', config]);
  assert.equal(run.code, 1);
  assert.ok(run.err.includes(`run: chmod 600 ${path}`), run.err);
  await writeFile(config, `${base}  allowUnsafeKeys: true\n`);
  run = await runCommand(main, ['check-config', '--config', config]);
  assert.equal(run.code, 0, run.err);
  assert.match(run.err, /^warning: .*mode is 0644/m);
});

// Tests for `sello dns-record` (src/cli/dns-record.ts): the record printed again from a key file
// (PKCS#8 from keygen, PKCS#1 from openssl), in-process and as a real process for the exit code.

import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { dnsRecordCommand } from '../../../src/cli/dns-record.ts';
import { keygenCommand } from '../../../src/cli/keygen.ts';
import { KeyError, UsageError } from '../../../src/errors.ts';
import { type CommandRun, runCommand } from '../../helpers/cli.ts';

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const execFileAsync = promisify(execFile);

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sello-dns-record-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function invoke(command: typeof dnsRecordCommand, args: string[]): Promise<CommandRun> {
  return runCommand(command, args);
}

test('prints the same record keygen printed, in every format', async () => {
  const keysDir = join(dir, 'same');
  for (const algorithm of ['rsa', 'ed25519']) {
    for (const format of ['bind', 'value', 'json']) {
      const selector = `${algorithm}-${format}`;
      const made = await invoke(keygenCommand, ['example.com', '--selector', selector, '--algorithm', algorithm, '--format', format, '--keys-dir', keysDir]);
      const again = await invoke(dnsRecordCommand, ['example.com', selector, '--format', format, '--keys-dir', keysDir]);
      assert.equal(again.code, 0);
      assert.equal(again.out, made.out);
      assert.equal(again.err, '');
    }
  }
});

test('bind is the default format; domain and selector are normalised like keygen does', async () => {
  const keysDir = join(dir, 'default');
  const made = await invoke(keygenCommand, ['bücher.de', '--selector', 'demo', '--keys-dir', keysDir]);
  const again = await invoke(dnsRecordCommand, ['BÜCHER.de', 'Demo', '--keys-dir', keysDir]);
  assert.equal(again.out, made.out);
  assert.match(again.out, /^demo\._domainkey\.xn--bcher-kva\.de\. IN TXT \( "v=DKIM1; k=rsa; " "p=/);
});

test('reads a PKCS#1 key (openssl genrsa -traditional) and prints its SubjectPublicKeyInfo', async () => {
  const keysDir = join(dir, 'pkcs1');
  const pkcs1 = execFileSync('openssl', ['genrsa', '-traditional', '2048'], { stdio: ['pipe', 'pipe', 'pipe'] });
  assert.match(pkcs1.toString(), /^-----BEGIN RSA PRIVATE KEY-----/);
  const spki = execFileSync('openssl', ['rsa', '-pubout', '-outform', 'DER'], { input: pkcs1, stdio: ['pipe', 'pipe', 'pipe'] });
  await mkdir(join(keysDir, 'example.com'), { recursive: true });
  await writeFile(join(keysDir, 'example.com', 'legacy.pem'), pkcs1, { mode: 0o600 });
  const { code, out } = await invoke(dnsRecordCommand, ['example.com', 'legacy', '--format', 'value', '--keys-dir', keysDir]);
  assert.equal(code, 0);
  assert.equal(out, `v=DKIM1; k=rsa; p=${spki.toString('base64')}\n`);
});

test('warns on stderr about a key file readable by others, still prints the record', async () => {
  const keysDir = join(dir, 'loose');
  await invoke(keygenCommand, ['example.com', '--selector', 'demo', '--algorithm', 'ed25519', '--keys-dir', keysDir]);
  await chmod(join(keysDir, 'example.com', 'demo.pem'), 0o644);
  const { code, out, err } = await invoke(dnsRecordCommand, ['example.com', 'demo', '--keys-dir', keysDir]);
  assert.equal(code, 0);
  assert.match(out, /k=ed25519/);
  assert.match(err, /^warning: .*demo\.pem.*0644/);
});

test('a missing key is a KeyError naming the path', async () => {
  const keysDir = join(dir, 'missing');
  const path = join(keysDir, 'example.com', 'nope.pem');
  await assert.rejects(
    invoke(dnsRecordCommand, ['example.com', 'nope', '--keys-dir', keysDir]),
    (error: unknown) => error instanceof KeyError && error.path === path,
  );
});

test('a missing key exits 1 naming the path (real process)', async () => {
  const keysDir = join(dir, 'missing-process');
  const path = join(keysDir, 'example.com', 'nope.pem');
  const failed = await execFileAsync(process.execPath, ['bin/sello.js', 'dns-record', 'example.com', 'nope', '--keys-dir', keysDir], { cwd: repoRoot }).then(
    () => assert.fail('dns-record succeeded on a missing key'),
    (error: unknown) => error as { code: number; stdout: string; stderr: string },
  );
  assert.equal(failed.code, 1);
  assert.equal(failed.stdout, '');
  assert.equal(failed.stderr, `sello dns-record: ${path}: no such key file\n`);
});

test('--help prints usage', async () => {
  const { code, out } = await invoke(dnsRecordCommand, ['--help']);
  assert.equal(code, 0);
  assert.match(out, /^usage: sello dns-record <domain> <selector>/);
});

const usageErrors: [string, string[], RegExp][] = [
  ['no arguments', [], /domain and a selector/],
  ['one argument', ['example.com'], /domain and a selector/],
  ['three arguments', ['example.com', 'a', 'b'], /domain and a selector/],
  ['unknown flag', ['example.com', 'a', '--bits', '2048'], /--bits/],
  ['bad format', ['example.com', 'a', '--format', 'xml'], /--format/],
  ['domain traversal', ['../x', 'a'], /invalid domain "\.\.\/x"/],
  ['selector traversal', ['example.com', '../../etc/passwd'], /invalid selector/],
];
for (const [name, args, message] of usageErrors) {
  test(`usage error: ${name}`, async () => {
    await assert.rejects(invoke(dnsRecordCommand, args), (error: unknown) => error instanceof UsageError && error.exitCode === 2 && message.test(error.message));
  });
}

// Tests for `sello keygen` (src/cli/keygen.ts): in-process (test/helpers/cli.ts), and once as a real
// process through bin/sello.js so main.ts's dispatch and exit codes are covered too.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createPrivateKey } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { createKeygenCommand, defaultSelector, keygenCommand } from '../../../src/cli/keygen.ts';
import { KeyError, UsageError } from '../../../src/errors.ts';
import { dnsRecordValue, formatRecord, generateKey, loadKey, splitTxtStrings, writeKey } from '../../../src/signing/keys.ts';
import { type CommandRun, runCommand } from '../../helpers/cli.ts';

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const execFileAsync = promisify(execFile);

/** Runs bin/sello.js with the Node running the tests (the pinned Node 24). */
async function runSello(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileAsync(process.execPath, ['bin/sello.js', ...args], { cwd: repoRoot });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code?: unknown; stdout?: string; stderr?: string };
    if (typeof failed.code !== 'number') throw error;
    return { code: failed.code, stdout: failed.stdout ?? '', stderr: failed.stderr ?? '' };
  }
}

let dir: string;
let counter = 0;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sello-keygen-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A fresh, not yet existing keys directory. */
function keysDir(): string {
  counter += 1;
  return join(dir, `keys-${String(counter)}`);
}

function keygen(args: string[]): Promise<CommandRun> {
  return runCommand(keygenCommand, args);
}

function parseBind(text: string): { name: string; strings: string[] } {
  const match = /^(\S+)\s+IN\s+TXT\s+\(\s*((?:"(?:[^"\\]|\\.)*"\s*)+)\)$/.exec(text);
  assert.ok(match, `not a BIND TXT record: ${text}`);
  const strings = [...(match[2] ?? '').matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => (m[1] ?? '').replace(/\\(.)/g, '$1'));
  return { name: match[1] ?? '', strings };
}

describe('defaultSelector', () => {
  test('is YYYYMM of the date in UTC', () => {
    assert.equal(defaultSelector(new Date(Date.UTC(2026, 10, 30, 23, 59, 59))), '202611');
    assert.equal(defaultSelector(new Date('2026-12-31T23:30:00-05:00')), '202701');
    assert.equal(defaultSelector(new Date('2027-01-01T00:30:00+02:00')), '202612');
  });

  test('keygen without --selector uses it (injected clock)', async () => {
    const directory = keysDir();
    const command = createKeygenCommand(() => new Date(Date.UTC(2026, 10, 5)));
    const run = await runCommand(command, ['example.com', '--keys-dir', directory]);
    assert.equal(run.code, 0);
    assert.deepEqual(await readdir(join(directory, 'example.com')), ['202611.pem']);
    assert.match(run.out, /^202611\._domainkey\.example\.com\. IN TXT /);
  });

  test('keygen without --selector uses the current month (real clock)', async () => {
    const directory = keysDir();
    const before = defaultSelector(new Date());
    const { code } = await keygen(['example.com', '--keys-dir', directory, '--algorithm', 'ed25519']);
    const after = defaultSelector(new Date());
    assert.equal(code, 0);
    const [file] = await readdir(join(directory, 'example.com'));
    assert.match(file ?? '', /^\d{6}\.pem$/);
    assert.ok([`${before}.pem`, `${after}.pem`].includes(file ?? ''));
  });
});

describe('keygen', () => {
  test('RSA by default: 2048 bits, PKCS#8, mode 0600; BIND record on stdout, where and what next on stderr', async () => {
    const directory = keysDir();
    const { code, out, err } = await keygen(['Example.COM', '--selector', 'demo', '--keys-dir', directory]);
    assert.equal(code, 0);
    const path = join(directory, 'example.com', 'demo.pem');
    const key = await loadKey(path);
    assert.equal(key.algorithm, 'rsa');
    assert.equal(key.bits, 2048);
    assert.match(key.pem, /^-----BEGIN PRIVATE KEY-----\n/);
    assert.equal((await stat(path)).mode & 0o777, 0o600);

    assert.ok(out.endsWith('\n'));
    const lines = out.trimEnd().split('\n');
    assert.equal(lines.length, 1);
    const record = parseBind(lines[0] ?? '');
    assert.equal(record.name, 'demo._domainkey.example.com.');
    assert.equal(record.strings.join(''), dnsRecordValue(key));
    assert.ok(record.strings.length >= 2);
    for (const s of record.strings) assert.ok(s.length <= 255);

    assert.equal(err.trimEnd().split('\n').length, 1);
    assert.ok(err.includes(path));
    assert.match(err, /publish .* before signing/);
  });

  test('--algorithm ed25519 --format value prints one line: the value', async () => {
    const directory = keysDir();
    const { code, out } = await keygen(['example.com', '--selector', 'ed', '--algorithm', 'ed25519', '--format', 'value', '--keys-dir', directory]);
    assert.equal(code, 0);
    const key = await loadKey(join(directory, 'example.com', 'ed.pem'));
    assert.equal(key.algorithm, 'ed25519');
    assert.equal(out, `${dnsRecordValue(key)}\n`);
  });

  test('--format json', async () => {
    const directory = keysDir();
    const { out } = await keygen(['example.com', '--selector', 'j', '--format', 'json', '--keys-dir', directory]);
    const key = await loadKey(join(directory, 'example.com', 'j.pem'));
    const value = dnsRecordValue(key);
    assert.deepEqual(JSON.parse(out), { name: 'j._domainkey.example.com', type: 'TXT', value, strings: splitTxtStrings(value) });
  });

  test('--bits 3072 and --bits 1024 (with a warning)', async () => {
    const directory = keysDir();
    const big = await keygen(['example.com', '--selector', 'big', '--bits', '3072', '--keys-dir', directory]);
    assert.equal(big.err.includes('warning'), false);
    assert.equal((await loadKey(join(directory, 'example.com', 'big.pem'))).bits, 3072);

    const small = await keygen(['example.com', '--selector', 'small', '--bits', '1024', '--keys-dir', directory]);
    assert.equal(small.code, 0);
    assert.match(small.err, /^warning: .*1024.*RFC 8301/);
    assert.equal((await loadKey(join(directory, 'example.com', 'small.pem'))).bits, 1024);
    // 1024 bits exists for providers that cannot take split records: one string.
    assert.equal(parseBind(small.out.trimEnd()).strings.length, 1);
  });

  test('--algorithm both writes <S>-rsa and <S>-ed25519 and prints both records', async () => {
    const directory = keysDir();
    const { code, out, err } = await keygen(['example.com', '--selector', 's', '--algorithm', 'both', '--keys-dir', directory]);
    assert.equal(code, 0);
    assert.deepEqual((await readdir(join(directory, 'example.com'))).sort(), ['s-ed25519.pem', 's-rsa.pem']);
    const rsa = await loadKey(join(directory, 'example.com', 's-rsa.pem'));
    const ed = await loadKey(join(directory, 'example.com', 's-ed25519.pem'));
    assert.equal(rsa.algorithm, 'rsa');
    assert.equal(ed.algorithm, 'ed25519');
    assert.equal(
      out,
      `${formatRecord('example.com', 's-rsa', dnsRecordValue(rsa), 'bind')}\n${formatRecord('example.com', 's-ed25519', dnsRecordValue(ed), 'bind')}\n`,
    );
    assert.equal(err.trimEnd().split('\n').length, 2);
  });

  test('--algorithm both --bits 4096 sizes the RSA key', async () => {
    const directory = keysDir();
    await keygen(['example.com', '--selector', 's', '--algorithm', 'both', '--bits', '4096', '--keys-dir', directory]);
    assert.equal((await loadKey(join(directory, 'example.com', 's-rsa.pem'))).bits, 4096);
  });

  test('refuses to overwrite: KeyError naming the file and suggesting a new selector; key unchanged', async () => {
    const directory = keysDir();
    await keygen(['example.com', '--selector', 'demo', '--keys-dir', directory]);
    const path = join(directory, 'example.com', 'demo.pem');
    const before = await readFile(path);
    await assert.rejects(
      keygen(['example.com', '--selector', 'demo', '--keys-dir', directory]),
      (error: unknown) => error instanceof KeyError && error.path === path && error.message.includes(path) && /selector/.test(error.message),
    );
    assert.deepEqual(await readFile(path), before);
  });

  test('--algorithm both with one key present writes neither', async () => {
    const directory = keysDir();
    await writeKey(directory, 'example.com', 's-ed25519', generateKey('ed25519'));
    await assert.rejects(keygen(['example.com', '--selector', 's', '--algorithm', 'both', '--keys-dir', directory]), KeyError);
    assert.deepEqual(await readdir(join(directory, 'example.com')), ['s-ed25519.pem']);
  });

  test('--if-missing leaves an existing key byte-identical and prints its record', async () => {
    const directory = keysDir();
    const pem = generateKey('rsa');
    const path = await writeKey(directory, 'example.com', 'demo', pem);
    const { code, out, err } = await keygen(['example.com', '--selector', 'demo', '--keys-dir', directory, '--if-missing']);
    assert.equal(code, 0);
    assert.equal(await readFile(path, 'utf8'), pem);
    assert.equal(out, `${formatRecord('example.com', 'demo', dnsRecordValue(createPrivateKey(pem)), 'bind')}\n`);
    assert.ok(err.includes(path));
  });

  test('--if-missing creates the key when there is none, then keeps it', async () => {
    const directory = keysDir();
    const first = await keygen(['example.com', '--selector', 'demo', '--keys-dir', directory, '--if-missing']);
    const path = join(directory, 'example.com', 'demo.pem');
    const pem = await readFile(path, 'utf8');
    const second = await keygen(['example.com', '--selector', 'demo', '--keys-dir', directory, '--if-missing']);
    assert.equal(first.code, 0);
    assert.equal(second.code, 0);
    assert.equal(second.out, first.out);
    assert.equal(await readFile(path, 'utf8'), pem);
  });

  test('--if-missing with --algorithm both applies per key', async () => {
    const directory = keysDir();
    const pem = generateKey('ed25519');
    await writeKey(directory, 'example.com', 's-ed25519', pem);
    const { code, out } = await keygen(['example.com', '--selector', 's', '--algorithm', 'both', '--keys-dir', directory, '--if-missing']);
    assert.equal(code, 0);
    assert.equal(await readFile(join(directory, 'example.com', 's-ed25519.pem'), 'utf8'), pem);
    assert.equal((await loadKey(join(directory, 'example.com', 's-rsa.pem'))).algorithm, 'rsa');
    const lines = out.trimEnd().split('\n');
    assert.equal(lines.length, 2);
    assert.equal(lines[1], formatRecord('example.com', 's-ed25519', dnsRecordValue(createPrivateKey(pem)), 'bind'));
  });

  test('--if-missing reports an unusable existing key', async () => {
    const directory = keysDir();
    await mkdir(join(directory, 'example.com'), { recursive: true });
    await writeFile(join(directory, 'example.com', 'demo.pem'), 'not a key\n', { mode: 0o600 });
    await assert.rejects(keygen(['example.com', '--selector', 'demo', '--keys-dir', directory, '--if-missing']), KeyError);
  });

  test('--help prints usage and exits 0', async () => {
    const { code, out } = await keygen(['--help']);
    assert.equal(code, 0);
    assert.match(out, /^usage: sello keygen <domain>/);
    for (const flag of ['--selector', '--algorithm', '--bits', '--format', '--keys-dir', '--if-missing']) assert.ok(out.includes(flag), flag);
  });

  const usageErrors: [string, string[], RegExp][] = [
    ['no domain', [], /domain/],
    ['two domains', ['a.com', 'b.com'], /domain/],
    ['unknown flag', ['example.com', '--force'], /--force/],
    ['flag without value', ['example.com', '--selector'], /--selector/],
    ['domain traversal', ['../x', '--selector', 'demo'], /"\.\.\/x"/],
    ['domain with slash', ['example.com/../../etc'], /invalid domain/],
    ['selector traversal', ['example.com', '--selector', '../x'], /"\.\.\/x"/],
    ['selector with slash', ['example.com', '--selector', 'a/b'], /"a\/b"/],
    ['bad algorithm', ['example.com', '--algorithm', 'dsa'], /--algorithm/],
    ['bad bits', ['example.com', '--bits', '512'], /--bits/],
    ['bits not a number', ['example.com', '--bits', 'lots'], /--bits/],
    ['bits with ed25519', ['example.com', '--algorithm', 'ed25519', '--bits', '2048'], /--bits.*RSA/],
    ['bad format', ['example.com', '--format', 'xml'], /--format/],
    ['empty keys dir', ['example.com', '--keys-dir', ''], /--keys-dir/],
  ];
  for (const [name, args, message] of usageErrors) {
    test(`usage error (exit 2), nothing written: ${name}`, async () => {
      const directory = keysDir();
      await assert.rejects(
        keygen(args.includes('--keys-dir') ? args : [...args, '--keys-dir', directory]),
        (error: unknown) => error instanceof UsageError && error.exitCode === 2 && message.test(error.message),
      );
      await assert.rejects(stat(directory), { code: 'ENOENT' });
    });
  }
});

describe('keygen as a real process (bin/sello.js → main.ts)', () => {
  test('writes the keys, prints the records, exits 0', async () => {
    const directory = keysDir();
    const { code, stdout, stderr } = await runSello(['keygen', 'example.org', '--selector', 'proc', '--algorithm', 'both', '--format', 'json', '--keys-dir', directory]);
    assert.equal(code, 0, stderr);
    const records = stdout
      .trimEnd()
      .split('\n')
      .map((line) => JSON.parse(line) as { name: string; value: string });
    assert.deepEqual(
      records.map((r) => r.name),
      ['proc-rsa._domainkey.example.org', 'proc-ed25519._domainkey.example.org'],
    );
    const rsaPath = join(directory, 'example.org', 'proc-rsa.pem');
    assert.equal(records[0]?.value, dnsRecordValue(await loadKey(rsaPath)));
    assert.equal((await stat(rsaPath)).mode & 0o777, 0o600);
    assert.ok(stderr.includes(rsaPath));
  });

  test('exit 2 on a usage error, exit 1 on an existing key', async () => {
    const directory = keysDir();
    const usage = await runSello(['keygen', '../x', '--keys-dir', directory]);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /^sello keygen: invalid domain "\.\.\/x"/);
    assert.equal(usage.stdout, '');

    const args = ['keygen', 'example.org', '--selector', 'x', '--algorithm', 'ed25519', '--keys-dir', directory];
    assert.equal((await runSello(args)).code, 0);
    const exists = await runSello(args);
    assert.equal(exists.code, 1);
    assert.ok(exists.stderr.includes(join(directory, 'example.org', 'x.pem')));
    assert.equal(exists.stdout, '');
  });
});

describe('record tags and the record file (opendkim-genkey / rspamadm parity)', () => {
  test('--testing --strict-subdomains --service email --note: t=y:s; s=email; n=… before p=, in every format', async () => {
    const directory = keysDir();
    const args = ['example.com', '--selector', 'tags', '--algorithm', 'ed25519', '--keys-dir', directory];
    const { code, out } = await keygen([...args, '--testing', '--strict-subdomains', '--service', 'email', '--note', 'rotated 2026; ask=bob', '--format', 'value']);
    assert.equal(code, 0);
    const key = await loadKey(join(directory, 'example.com', 'tags.pem'));
    const p = /p=(\S+)$/.exec(dnsRecordValue(key))?.[1];
    assert.equal(out, `v=DKIM1; k=ed25519; t=y:s; s=email; n=rotated 2026=3B ask=3Dbob; p=${p}\n`);
    const testingOnly = await keygen([...args, '--if-missing', '--testing', '--format', 'value']);
    assert.equal(testingOnly.out, `v=DKIM1; k=ed25519; t=y; p=${p}\n`);
    const serviceAll = await keygen([...args, '--if-missing', '--service', '*', '--format', 'value']);
    assert.equal(serviceAll.out, `v=DKIM1; k=ed25519; s=*; p=${p}\n`);
  });

  test('--record-file writes the bind record beside the key as <selector>.txt (0644); without it nothing is written', async () => {
    const directory = keysDir();
    const { code, out, err } = await keygen(['example.com', '--selector', 'rec', '--keys-dir', directory, '--record-file', '--testing']);
    assert.equal(code, 0, err);
    const txt = join(directory, 'example.com', 'rec.txt');
    assert.equal(await readFile(txt, 'utf8'), out, 'the file holds exactly the printed bind record');
    assert.match(out, /^rec\._domainkey\.example\.com\. IN TXT \( "v=DKIM1; k=rsa; t=y; " "p=/);
    assert.equal((await stat(txt)).mode & 0o777, 0o644);
    assert.ok(err.includes(`wrote the record to ${txt}`));
    await keygen(['example.com', '--selector', 'plain', '--keys-dir', directory]);
    assert.deepEqual((await readdir(join(directory, 'example.com'))).sort(), ['plain.pem', 'rec.pem', 'rec.txt']);
  });

  test('bad --service and --note are usage errors (exit 2), nothing written', async () => {
    const directory = keysDir();
    await assert.rejects(keygen(['example.com', '--keys-dir', directory, '--service', 'web']), (error: unknown) => error instanceof UsageError && /--service must be email or \*/.test(error.message));
    await assert.rejects(keygen(['example.com', '--keys-dir', directory, '--note', 'two\nlines']), (error: unknown) => error instanceof UsageError && /--note must be one line/.test(error.message));
    await assert.rejects(readdir(directory), { code: 'ENOENT' });
  });
});

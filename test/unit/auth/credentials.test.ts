// The local credentials file: scrypt hashes in PHC form, checked against node:crypto's scrypt
// directly (an independent derivation, not the module's own), and the file's errors by line.

import assert from 'node:assert/strict';
import { scryptSync } from 'node:crypto';
import { chmod, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { CredentialStore, hashPassword, NEW_HASH_PARAMETERS, parseScryptHash } from '../../../src/auth/credentials.ts';
import { tempDir } from '../../helpers/tools.ts';

// Cheap parameters keep the tests fast; the format and the checks are the same.
const FAST = { logN: 10, r: 8, p: 1 };

test('hashPassword writes $scrypt$ln,r,p$salt$hash that node:crypto reproduces; new hashes use ln=15,r=8,p=1', async () => {
  const line = await hashPassword('correct horse', FAST);
  const match = /^\$scrypt\$ln=10,r=8,p=1\$([A-Za-z0-9+/]{22})\$([A-Za-z0-9+/]{43})$/.exec(line);
  assert.ok(match, line);
  const salt = Buffer.from(match[1]!, 'base64');
  const expected = scryptSync('correct horse', salt, 32, { N: 1024, r: 8, p: 1 });
  assert.equal(Buffer.from(match[2]!, 'base64').toString('hex'), expected.toString('hex'));
  assert.notEqual(await hashPassword('correct horse', FAST), line, 'a fresh salt each time');
  assert.match(await hashPassword('x'), /^\$scrypt\$ln=15,r=8,p=1\$/);
  assert.deepEqual(NEW_HASH_PARAMETERS, { logN: 15, r: 8, p: 1 });
});

test('a hash made elsewhere (passlib form, N=2^14) is accepted; out-of-bounds or malformed ones are refused with a reason', () => {
  const salt = Buffer.from('0123456789abcdef');
  const hash = scryptSync('pw', salt, 32, { N: 2 ** 14, r: 8, p: 1 });
  const text = `$scrypt$ln=14,r=8,p=1$${salt.toString('base64').replace(/=+$/, '')}$${hash.toString('base64').replace(/=+$/, '')}`;
  const parsed = parseScryptHash(text);
  assert.ok(typeof parsed !== 'string', String(parsed));
  assert.equal(parsed.logN, 14);
  assert.equal(parsed.hash.toString('hex'), hash.toString('hex'));
  const cases: [string, RegExp][] = [
    ['$6$salt$hash', /^not a "\$scrypt\$/],
    ['$scrypt$ln=9,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA', /ln=9 is outside 10–20/],
    ['$scrypt$ln=21,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA', /ln=21 is outside 10–20/],
    ['$scrypt$ln=20,r=32,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA', /need more than 256 MiB per check/],
    ['$scrypt$ln=15,r=8,p=17$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA', /p=17 is outside 1–16/],
    ['$scrypt$ln=15,r=8,p=1$c2FsdA$aGFzaGhhc2hoYXNoaGFzaA', /salt is shorter than 8 bytes/],
    ['$scrypt$ln=15,r=8,p=1$c2FsdHNhbHQ$aGFzaA', /hash is shorter than 16 bytes/],
  ];
  for (const [input, reason] of cases) {
    const result = parseScryptHash(input);
    assert.equal(typeof result, 'string', input);
    assert.match(result as string, reason, input);
  }
});

async function storeWith(t: import('node:test').TestContext, text: string, mode = 0o600): Promise<string> {
  const dir = await tempDir(t, 'sello-credentials-');
  const file = path.join(dir, 'credentials');
  await writeFile(file, text);
  await chmod(file, mode);
  return file;
}

test('the store checks passwords exactly: right one, wrong one, unknown user, case of the user name', async (t) => {
  const [alice, bob] = await Promise.all([hashPassword('s3cret ünïcode', FAST), hashPassword('hunter2', FAST)]);
  const file = await storeWith(t, `# local users\r\n\r\nalice@example.com:${alice}\r\n  bob:${bob}  \n`);
  const store = await CredentialStore.load(file, 'listeners[0].auth.credentials');
  assert.equal(store.size, 2);
  assert.deepEqual(store.warnings, []);
  assert.equal(await store.verify('alice@example.com', 's3cret ünïcode'), true);
  // NFC on both sides: the same password typed with a combining diaeresis still matches.
  assert.equal(await store.verify('alice@example.com', 's3cret u\u0308ni\u0308code'), true);
  assert.equal(await store.verify('alice@example.com', 's3cret unicode'), false);
  assert.equal(await store.verify('Alice@example.com', 's3cret ünïcode'), false);
  assert.equal(await store.verify('bob', 'hunter2'), true);
  assert.equal(await store.verify('bob', ''), false);
  assert.equal(await store.verify('carol', 'hunter2'), false);
  assert.equal(await store.verify('', ''), false);
});

test('a file readable by others loads with a warning; it never repeats a hash', async (t) => {
  const hash = await hashPassword('pw', FAST);
  const file = await storeWith(t, `alice:${hash}\n`, 0o644);
  const store = await CredentialStore.load(file, 'listeners[0].auth.credentials');
  assert.deepEqual(store.warnings, [`${file}: credentials file mode is 0644, readable by others than its owner; it should be 0600`]);
});

test('a bad file is an error naming the config key, the file and the line, never the hash', async (t) => {
  const good = await hashPassword('pw', FAST);
  const cases: [string, string][] = [
    [`alice:${good}\nno-separator\n`, 'line 2: expected "user:hash"'],
    [`:${good}\n`, 'line 1: expected "user:hash"'],
    [`al ice:${good}\n`, 'line 1: the user name must be 1–255 bytes, without ":", white space or control characters'],
    [`alice:${good}\n# again\nalice:${good}\n`, 'line 3: user "alice" is listed twice'],
    ['alice:$6$rounds=5000$saltsalt$c2VjcmV0aGFzaA\n', 'line 1: not a "$scrypt$ln=…,r=…,p=…$salt$hash" password hash (make one with sello passwd)'],
    ['# nobody yet\n\n', 'no users (one "user:hash" per line; make the hash with sello passwd)'],
  ];
  for (const [text, reason] of cases) {
    const file = await storeWith(t, text);
    await assert.rejects(CredentialStore.load(file, 'listeners[2].auth.credentials'), (error: Error) => {
      assert.equal(error.message, `listeners[2].auth.credentials: ${file}: ${reason}`);
      assert.ok(!error.message.includes(good.slice(20)), 'no hash in the message');
      return true;
    });
  }
  await assert.rejects(CredentialStore.load('/nonexistent/credentials', 'listeners[0].auth.credentials'), {
    message: 'listeners[0].auth.credentials: /nonexistent/credentials: cannot read the credentials file (ENOENT)',
  });
});

// Unit tests for src/signing/keys.ts: generation, naming, file modes, loading (PKCS#8 and the
// PKCS#1 files openssl writes), the DNS record value and its BIND/JSON forms.
// Independent checks: openssl computes public keys; records are parsed back and used to verify.

import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative, isAbsolute } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { KeyError } from '../../../src/errors.ts';
import {
  dnsRecordValue,
  formatRecord,
  generateKey,
  keyPath,
  loadKey,
  recordName,
  splitTxtStrings,
  validateDomain,
  validateSelector,
  writeKey,
} from '../../../src/signing/keys.ts';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sello-keys-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function openssl(args: string[], input?: string | Buffer): Buffer {
  return execFileSync('openssl', args, { input, stdio: ['pipe', 'pipe', 'pipe'] });
}

async function writeFileAt(name: string, content: string | Buffer, mode = 0o600): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, content, { mode });
  await chmod(path, mode);
  return path;
}

/** Parses `name. IN TXT ( "…" "…" )` (one line or several) back into its name and strings. */
function parseBind(text: string): { name: string; strings: string[] } {
  const match = /^(\S+)\s+IN\s+TXT\s+\(\s*((?:"(?:[^"\\]|\\.)*"\s*)+)\)\s*$/.exec(text.trim());
  assert.ok(match, `not a BIND TXT record: ${text}`);
  const strings = [...(match[2] ?? '').matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => (m[1] ?? '').replace(/\\(.)/g, '$1'));
  return { name: match[1] ?? '', strings };
}

function tagValue(value: string, tag: string): string {
  const found = value
    .split(';')
    .map((part) => part.trim())
    .find((part) => part.startsWith(`${tag}=`));
  assert.ok(found !== undefined, `no ${tag}= in ${value}`);
  return found.slice(tag.length + 1);
}

/** The public key a verifier would build from the record (RFC 6376 §3.6.1, RFC 8463 §4.2). */
function publicKeyFromRecord(value: string): KeyObject {
  const p = Buffer.from(tagValue(value, 'p'), 'base64');
  if (tagValue(value, 'k') === 'ed25519') {
    assert.equal(p.length, 32);
    return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: p.toString('base64url') }, format: 'jwk' });
  }
  return createPublicKey({ key: p, format: 'der', type: 'spki' });
}

describe('generateKey', () => {
  test('RSA defaults to 2048 bits, PKCS#8 PEM', () => {
    const pem = generateKey('rsa');
    assert.match(pem, /^-----BEGIN PRIVATE KEY-----\n/);
    const key = createPrivateKey(pem);
    assert.equal(key.asymmetricKeyType, 'rsa');
    assert.equal(key.asymmetricKeyDetails?.modulusLength, 2048);
    assert.equal(key.asymmetricKeyDetails?.publicExponent, 65537n);
  });

  test('RSA with an explicit size', () => {
    assert.equal(createPrivateKey(generateKey('rsa', 3072)).asymmetricKeyDetails?.modulusLength, 3072);
    assert.equal(createPrivateKey(generateKey('rsa', 1024)).asymmetricKeyDetails?.modulusLength, 1024);
  });

  test('Ed25519, PKCS#8 PEM', () => {
    const pem = generateKey('ed25519');
    assert.match(pem, /^-----BEGIN PRIVATE KEY-----\n/);
    assert.equal(createPrivateKey(pem).asymmetricKeyType, 'ed25519');
  });

  test('refuses a size for Ed25519 and sizes outside 1024/2048/3072/4096', () => {
    assert.throws(() => generateKey('ed25519', 2048), KeyError);
    assert.throws(() => generateKey('rsa', 512 as 1024), KeyError);
  });

  test('two calls give two different keys', () => {
    assert.notEqual(generateKey('ed25519'), generateKey('ed25519'));
  });
});

describe('domain and selector validation', () => {
  test('domains are lowercased, IDN U-labels become A-labels, one final dot is dropped', () => {
    assert.equal(validateDomain('Example.COM'), 'example.com');
    assert.equal(validateDomain('example.com.'), 'example.com');
    assert.equal(validateDomain('bücher.de'), 'xn--bcher-kva.de');
    assert.equal(validateDomain('xn--bcher-kva.de'), 'xn--bcher-kva.de');
    assert.equal(validateDomain('mail-1.sub.example.co.uk'), 'mail-1.sub.example.co.uk');
    assert.equal(validateDomain(`${'a'.repeat(63)}.com`), `${'a'.repeat(63)}.com`);
    assert.equal(validateDomain(`${'abcdefghi.'.repeat(25)}com`).length, 253);
  });

  const badDomains = [
    '../x',
    '..',
    '.',
    '',
    'a/b',
    'a\\b',
    '/etc',
    'a..b',
    '.example.com',
    'example.com..',
    '-a.com',
    'a-.com',
    'a_b.com',
    'a b.com',
    'a:b',
    'a%2fb',
    'a\nb',
    '1.2.3.4',
    `${'a'.repeat(64)}.com`,
    `${'abcdefghi.'.repeat(25)}abcd`, // 254 octets
  ];
  for (const domain of badDomains) {
    test(`refuses domain ${JSON.stringify(domain)} with a KeyError naming it`, () => {
      assert.throws(
        () => validateDomain(domain),
        (error: unknown) => error instanceof KeyError && error.message.includes(JSON.stringify(domain)),
      );
    });
  }

  test('selectors: sub-domain *("." sub-domain), lowercased', () => {
    assert.equal(validateSelector('demo'), 'demo');
    assert.equal(validateSelector('202611-rsa'), '202611-rsa');
    assert.equal(validateSelector('eu.2026'), 'eu.2026');
    assert.equal(validateSelector('Mail'), 'mail');
  });

  const badSelectors = ['../x', '..', '.', '', 'a..b', '.a', 'a.', '-a', 'a-', 'a/b', 'a\\b', 'a_b', 'ä', 's 1', `${'a'.repeat(64)}`];
  for (const selector of badSelectors) {
    test(`refuses selector ${JSON.stringify(selector)} with a KeyError naming it`, () => {
      assert.throws(
        () => validateSelector(selector),
        (error: unknown) => error instanceof KeyError && error.message.includes(JSON.stringify(selector)),
      );
    });
  }

  test('keyPath is <keysDir>/<domain>/<selector>.pem and never leaves keysDir', () => {
    assert.equal(keyPath('keys', 'Example.com', 'demo'), join('keys', 'example.com', 'demo.pem'));
    const root = join(dir, 'keys');
    for (const domain of [...badDomains, 'example.com']) {
      for (const selector of [...badSelectors, 'demo']) {
        let path: string;
        try {
          path = keyPath(root, domain, selector);
        } catch (error) {
          assert.ok(error instanceof KeyError);
          continue;
        }
        const inside = relative(root, path);
        assert.ok(!inside.startsWith('..') && !isAbsolute(inside), `${path} escapes ${root}`);
        assert.equal(inside, join('example.com', 'demo.pem'));
      }
    }
  });

  test('recordName', () => {
    assert.equal(recordName('Bücher.de', 'S1'), 's1._domainkey.xn--bcher-kva.de');
  });
});

describe('writeKey', () => {
  test('creates the directories 0700 and the file 0600 with the PEM', async () => {
    const keysDir = join(dir, 'write-mode');
    const pem = generateKey('ed25519');
    const path = await writeKey(keysDir, 'example.com', 'demo', pem);
    assert.equal(path, join(keysDir, 'example.com', 'demo.pem'));
    assert.equal(await readFile(path, 'utf8'), pem);
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    assert.equal((await stat(join(keysDir, 'example.com'))).mode & 0o777, 0o700);
  });

  test('refuses to overwrite (O_EXCL) and leaves the existing key byte-identical', async () => {
    const keysDir = join(dir, 'write-excl');
    const first = generateKey('ed25519');
    const path = await writeKey(keysDir, 'example.com', 'demo', first);
    await assert.rejects(
      writeKey(keysDir, 'example.com', 'demo', generateKey('ed25519')),
      (error: unknown) => error instanceof KeyError && error.path === path && /already exists/.test(error.message),
    );
    assert.equal(await readFile(path, 'utf8'), first);
  });

  test('refuses path traversal before touching the file system', async () => {
    const keysDir = join(dir, 'write-traversal');
    await assert.rejects(writeKey(keysDir, '../x', 'demo', 'x'), KeyError);
    await assert.rejects(writeKey(keysDir, 'example.com', '../../x', 'x'), KeyError);
    await assert.rejects(stat(keysDir), { code: 'ENOENT' });
  });
});

describe('loadKey', () => {
  test('loads a PKCS#8 RSA key written by writeKey, without warnings', async () => {
    const path = await writeKey(join(dir, 'load'), 'example.com', 'rsa', generateKey('rsa'));
    const key = await loadKey(path);
    assert.equal(key.path, path);
    assert.equal(key.algorithm, 'rsa');
    assert.equal(key.bits, 2048);
    assert.equal(key.privateKey.type, 'private');
    assert.equal(key.pem, await readFile(path, 'utf8'));
    assert.deepEqual(key.warnings, []);
  });

  test('loads a PKCS#8 Ed25519 key', async () => {
    const path = await writeKey(join(dir, 'load'), 'example.com', 'ed', generateKey('ed25519'));
    const key = await loadKey(path);
    assert.equal(key.algorithm, 'ed25519');
    assert.equal(key.bits, undefined);
    assert.deepEqual(key.warnings, []);
  });

  test('loads a PKCS#1 key from openssl genrsa -traditional; same record as its PKCS#8 form and as openssl computes', async () => {
    const pkcs1 = openssl(['genrsa', '-traditional', '2048']).toString();
    assert.match(pkcs1, /^-----BEGIN RSA PRIVATE KEY-----\n/);
    const pkcs8 = openssl(['pkcs8', '-topk8', '-nocrypt'], pkcs1).toString();
    assert.match(pkcs8, /^-----BEGIN PRIVATE KEY-----\n/);
    const fromPkcs1 = await loadKey(await writeFileAt('pkcs1.pem', pkcs1));
    const fromPkcs8 = await loadKey(await writeFileAt('pkcs8.pem', pkcs8));
    assert.equal(fromPkcs1.algorithm, 'rsa');
    assert.equal(fromPkcs1.bits, 2048);
    assert.equal(fromPkcs1.pem, pkcs1);
    assert.equal(dnsRecordValue(fromPkcs1), dnsRecordValue(fromPkcs8));
    const spki = openssl(['rsa', '-pubout', '-outform', 'DER'], pkcs1);
    assert.equal(dnsRecordValue(fromPkcs1), `v=DKIM1; k=rsa; p=${spki.toString('base64')}`);
  });

  test('refuses a missing file, naming the path', async () => {
    const path = join(dir, 'nope', 'missing.pem');
    await assert.rejects(loadKey(path), (error: unknown) => error instanceof KeyError && error.path === path && error.message.startsWith(path));
  });

  test('refuses a directory and an unreadable file', async () => {
    await assert.rejects(loadKey(dir), (error: unknown) => error instanceof KeyError && error.path === dir);
    if (process.getuid?.() !== 0) {
      const path = await writeFileAt('unreadable.pem', generateKey('ed25519'), 0o000);
      await assert.rejects(loadKey(path), (error: unknown) => error instanceof KeyError && /permission denied/.test(error.message));
    }
  });

  test('refuses encrypted keys (PKCS#8 and PKCS#1)', async () => {
    const encrypted8 = openssl(['genpkey', '-algorithm', 'ed25519', '-aes-256-cbc', '-pass', 'pass:secret']).toString();
    assert.match(encrypted8, /BEGIN ENCRYPTED PRIVATE KEY/);
    const encrypted1 = openssl(['genrsa', '-traditional', '-aes256', '-passout', 'pass:secret', '1024']).toString();
    assert.match(encrypted1, /Proc-Type: 4,ENCRYPTED/);
    for (const [name, pem] of [['enc8.pem', encrypted8], ['enc1.pem', encrypted1]] as const) {
      const path = await writeFileAt(name, pem);
      await assert.rejects(loadKey(path), (error: unknown) => error instanceof KeyError && error.path === path && /encrypted/.test(error.message));
    }
  });

  test('refuses key types other than RSA and Ed25519', async () => {
    const cases: [string, string][] = [
      ['ec-pkcs8.pem', generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()],
      ['ec-sec1.pem', generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'sec1', format: 'pem' }).toString()],
      ['ed448.pem', generateKeyPairSync('ed448').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()],
      ['rsa-pss.pem', generateKeyPairSync('rsa-pss', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()],
    ];
    for (const [name, pem] of cases) {
      const path = await writeFileAt(name, pem);
      await assert.rejects(loadKey(path), (error: unknown) => error instanceof KeyError && error.path === path && /unsupported/.test(error.message), name);
    }
  });

  test('refuses what is not a private key', async () => {
    const { publicKey } = generateKeyPairSync('ed25519');
    const cases: [string, string][] = [
      ['public.pem', publicKey.export({ type: 'spki', format: 'pem' }).toString()],
      ['garbage.pem', 'hello\n'],
      ['empty.pem', ''],
      ['broken.pem', '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n'],
    ];
    for (const [name, pem] of cases) {
      const path = await writeFileAt(name, pem);
      await assert.rejects(loadKey(path), (error: unknown) => error instanceof KeyError && error.path === path, name);
    }
  });

  test('refuses RSA under 1024 bits (RFC 8301 §3.2)', async () => {
    const pem = generateKeyPairSync('rsa', { modulusLength: 768 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const path = await writeFileAt('rsa768.pem', pem);
    await assert.rejects(loadKey(path), (error: unknown) => error instanceof KeyError && error.path === path && /768 bits/.test(error.message));
  });

  test('warns on 1024-bit RSA and on a group/world readable file', async () => {
    const weak = await loadKey(await writeFileAt('rsa1024.pem', generateKey('rsa', 1024)));
    assert.equal(weak.bits, 1024);
    assert.equal(weak.warnings.length, 1);
    assert.match(weak.warnings[0] ?? '', /1024 bits/);

    const loose = await loadKey(await writeFileAt('loose.pem', generateKey('ed25519'), 0o644));
    assert.equal(loose.warnings.length, 1);
    assert.match(loose.warnings[0] ?? '', /mode is 0644.*0600/);

    const group = await loadKey(await writeFileAt('group.pem', generateKey('ed25519'), 0o640));
    assert.match(group.warnings[0] ?? '', /0640/);
  });
});

describe('dnsRecordValue', () => {
  test('RSA: p= is the base64 DER SubjectPublicKeyInfo', () => {
    const privateKey = createPrivateKey(generateKey('rsa'));
    const value = dnsRecordValue(privateKey);
    const spki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
    assert.equal(value, `v=DKIM1; k=rsa; p=${spki.toString('base64')}`);
    assert.equal(dnsRecordValue(createPublicKey(privateKey)), value);
  });

  test('Ed25519: p= is exactly the raw 32-byte public key (RFC 8463 §4.2), not SPKI', () => {
    const pem = generateKey('ed25519');
    const value = dnsRecordValue(createPrivateKey(pem));
    assert.match(value, /^v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=$/);
    const p = Buffer.from(tagValue(value, 'p'), 'base64');
    assert.equal(p.length, 32);
    // openssl's SPKI DER for Ed25519 is a fixed 12-byte prefix followed by the raw key.
    const spki = openssl(['pkey', '-pubout', '-outform', 'DER'], pem);
    assert.equal(spki.length, 44);
    assert.deepEqual(p, spki.subarray(12));
  });

  for (const algorithm of ['rsa', 'ed25519'] as const) {
    test(`${algorithm}: the key published in the record verifies a signature made with the private key`, async () => {
      const path = await writeKey(join(dir, 'verify'), 'example.com', algorithm, generateKey(algorithm));
      const key = await loadKey(path);
      const publicKey = publicKeyFromRecord(dnsRecordValue(key));
      const data = Buffer.from('DKIM-Signature: v=1; a=…\r\n');
      const digest = algorithm === 'rsa' ? 'sha256' : null;
      const signature = sign(digest, data, key.privateKey);
      assert.equal(verify(digest, data, publicKey, signature), true);
      assert.equal(verify(digest, Buffer.from('tampered'), publicKey, signature), false);
      const other = publicKeyFromRecord(dnsRecordValue(createPrivateKey(generateKey(algorithm))));
      assert.equal(verify(digest, data, other, signature), false);
    });
  }
});

describe('splitTxtStrings and formatRecord', () => {
  const values = {
    rsa1024: dnsRecordValue(createPrivateKey(generateKey('rsa', 1024))),
    rsa2048: dnsRecordValue(createPrivateKey(generateKey('rsa', 2048))),
    rsa4096: dnsRecordValue(createPrivateKey(generateKey('rsa', 4096))),
    ed25519: dnsRecordValue(createPrivateKey(generateKey('ed25519'))),
  };

  for (const [name, value] of Object.entries(values)) {
    test(`${name}: BIND strings are each <= 255 octets, join to the value, and parse back`, () => {
      const bind = formatRecord('Example.com', 'Sel', value, 'bind');
      assert.ok(!bind.includes('\n'));
      const parsed = parseBind(bind);
      assert.equal(parsed.name, 'sel._domainkey.example.com.');
      for (const s of parsed.strings) assert.ok(Buffer.byteLength(s) <= 255 && s.length > 0, `${s.length} octets`);
      assert.equal(parsed.strings.join(''), value);
      assert.deepEqual(parsed.strings, splitTxtStrings(value));
    });
  }

  test('RSA-2048 needs several strings; the tags before p= stay whole', () => {
    const strings = splitTxtStrings(values.rsa2048);
    assert.ok(strings.length >= 2);
    assert.equal(strings[0], 'v=DKIM1; k=rsa; ');
    assert.match(strings[1] ?? '', /^p=/);
    assert.equal(strings[1]?.length, 255);
  });

  test('Ed25519 and RSA-1024 fit in one string', () => {
    assert.deepEqual(splitTxtStrings(values.ed25519), [values.ed25519]);
    assert.deepEqual(splitTxtStrings(values.rsa1024), [values.rsa1024]);
  });

  test('boundaries: 255 octets is one string, 256 is two', () => {
    assert.deepEqual(splitTxtStrings('a'.repeat(255)), ['a'.repeat(255)]);
    assert.deepEqual(splitTxtStrings('a'.repeat(256)), ['a'.repeat(255), 'a']);
    assert.deepEqual(splitTxtStrings(''), ['']);
  });

  test('BIND escapes quote and backslash', () => {
    const value = 'v=DKIM1; n="a\\b"; p=';
    const bind = formatRecord('example.com', 's', value, 'bind');
    assert.equal(bind, 's._domainkey.example.com. IN TXT ( "v=DKIM1; n=\\"a\\\\b\\"; p=" )');
    assert.equal(parseBind(bind).strings.join(''), value);
  });

  test('value format is the value alone; json has name, type, value and strings', () => {
    assert.equal(formatRecord('example.com', 'sel', values.rsa2048, 'value'), values.rsa2048);
    const json: unknown = JSON.parse(formatRecord('bücher.de', 'sel', values.rsa2048, 'json'));
    assert.deepEqual(json, {
      name: 'sel._domainkey.xn--bcher-kva.de',
      type: 'TXT',
      value: values.rsa2048,
      strings: splitTxtStrings(values.rsa2048),
    });
  });

  test('refuses a bad domain or selector, and non-ASCII values', () => {
    assert.throws(() => formatRecord('../x', 'sel', values.ed25519, 'bind'), KeyError);
    assert.throws(() => formatRecord('example.com', 'a/b', values.ed25519, 'bind'), KeyError);
    assert.throws(() => splitTxtStrings('p=ä'), KeyError);
  });
});

test('mkdir under an existing keys directory leaves its mode alone', async () => {
  const keysDir = join(dir, 'existing');
  await mkdir(keysDir, { mode: 0o755 });
  await chmod(keysDir, 0o755);
  await writeKey(keysDir, 'example.com', 'demo', generateKey('ed25519'));
  assert.equal((await stat(keysDir)).mode & 0o777, 0o755);
});

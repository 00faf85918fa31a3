// Tests for `sello keycheck` (src/cli/keycheck.ts), in-process through main() against the real
// test DNS server on loopback (test/helpers/dns-server.ts), with keys made by `sello keygen` and
// src/signing/keys.ts and records published as keygen prints them (BIND strings of ≤ 255 octets).

import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { judge, parseKeyRecord, type KeyCheck } from '../../../src/cli/keycheck.ts';
import { main } from '../../../src/cli/run.ts';
import { dnsRecordValue, generateKey, loadKey, splitTxtStrings, writeKey } from '../../../src/signing/keys.ts';
import { startDnsServer, type DnsServer } from '../../helpers/dns-server.ts';
import { runCommand } from '../../helpers/cli.ts';

type Run = { code: number; out: string; err: string };

function sello(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return runCommand(main, args, { env });
}

/** The character-strings of keygen's BIND line: `name. IN TXT ( "…" "…" )`. */
function bindStrings(line: string): string[] {
  assert.match(line, /^\S+\._domainkey\.\S+\. IN TXT \( (?:"[^"]*" )+\)$/);
  return [...line.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((match) => (match[1] ?? '').replace(/\\(.)/g, '$1'));
}

/** Makes a key with `sello keygen` and returns the strings it told us to publish. */
async function keygen(keysDir: string, domain: string, selector: string, algorithm: 'rsa' | 'ed25519'): Promise<string[]> {
  const run = await sello(['keygen', domain, '--selector', selector, '--algorithm', algorithm, '--keys-dir', keysDir]);
  assert.equal(run.code, 0, run.err);
  return bindStrings(run.out.trim());
}

/** A key of its own (not the local one) for the mismatch cases. */
function otherRecord(algorithm: 'rsa' | 'ed25519'): string {
  return dnsRecordValue(createPublicKey(generateKey(algorithm)));
}

let keysDir: string;
let dns: DnsServer;
let rsaStrings: string[];
let edStrings: string[];

before(async () => {
  keysDir = await mkdtemp(join(tmpdir(), 'sello-keycheck-'));
  rsaStrings = await keygen(keysDir, 'example.com', 'rsa2026', 'rsa');
  edStrings = await keygen(keysDir, 'example.com', 'ed2026', 'ed25519');
  const local = async (domain: string, selector: string, algorithm: 'rsa' | 'ed25519'): Promise<string> =>
    dnsRecordValue(await loadKey(await writeKey(keysDir, domain, selector, generateKey(algorithm))));
  const spacedValue = await local('example.org', 'spaced', 'rsa');
  const twiceValue = await local('example.org', 'twice', 'rsa');
  const sharedValue = await local('example.org', 'shared', 'ed25519');
  await local('example.org', 'gone', 'rsa');
  await local('example.org', 'nodata', 'rsa');
  await local('example.org', 'spfonly', 'rsa');
  await local('example.org', 'old', 'rsa');
  const kdiffValue = await local('example.org', 'kdiff', 'rsa');
  await local('example.org', 'revoked', 'ed25519');
  await local('example.org', 'flaky', 'rsa');

  // FWS inside p= (RFC 6376 §3.6.1 base64string): a space every 60 characters and a tab.
  const [head, key] = spacedValue.split('p=') as [string, string];
  const spaced = `${head}p=${key.replace(/(.{60})/g, '$1 ').replace(/^(.{10})/, '$1\t')}`;

  dns = await startDnsServer({
    'rsa2026._domainkey.example.com': { TXT: [rsaStrings] },
    'ed2026._domainkey.example.com': { TXT: [edStrings] },
    // One long string: the test server cuts it into 255-octet character-strings.
    'spaced._domainkey.example.org': { TXT: [spaced] },
    'twice._domainkey.example.org': { TXT: [splitTxtStrings(twiceValue), splitTxtStrings(otherRecord('rsa'))] },
    'shared._domainkey.example.org': { TXT: ['v=spf1 -all', sharedValue] },
    'nodata._domainkey.example.org': { A: ['192.0.2.1'] },
    'spfonly._domainkey.example.org': { TXT: ['v=spf1 -all'] },
    'old._domainkey.example.org': { TXT: [splitTxtStrings(otherRecord('rsa'))] },
    // The RSA key's own p=, but announced as Ed25519.
    'kdiff._domainkey.example.org': { TXT: [splitTxtStrings(kdiffValue.replace('k=rsa', 'k=ed25519'))] },
    'revoked._domainkey.example.org': { TXT: ['v=DKIM1; k=ed25519; p='] },
    'flaky._domainkey.example.org': { fault: 'servfail' },
  });
});

after(async () => {
  await dns?.close();
  await rm(keysDir, { recursive: true, force: true });
});

function states(run: Run): Record<string, string> {
  const report = JSON.parse(run.out) as { ok: boolean; keys: KeyCheck[] };
  return Object.fromEntries(report.keys.map((check) => [check.name, check.state]));
}

describe('sello keycheck against DNS', () => {
  test('RSA key published as keygen split it: ok, exit 0, one line and a summary', async () => {
    assert.ok(rsaStrings.length >= 2, 'a 2048-bit RSA record needs several strings');
    assert.ok(rsaStrings.every((string) => Buffer.byteLength(string) <= 255));
    const run = await sello(['keycheck', 'example.com', 'rsa2026', '--keys-dir', keysDir, '--dns', dns.address]);
    assert.equal(run.code, 0, run.out + run.err);
    assert.equal(run.out, 'ok       rsa2026._domainkey.example.com  rsa-2048\n1 key(s): 1 ok\n');
    assert.equal(run.err, '');
  });

  test('Ed25519 key (raw 32-byte p=, RFC 8463) published as keygen printed it: ok', async () => {
    const run = await sello(['keycheck', 'example.com', 'ed2026', '--keys-dir', keysDir, '--dns', dns.address]);
    assert.equal(run.code, 0, run.out);
    assert.equal(run.out, 'ok       ed2026._domainkey.example.com  ed25519\n1 key(s): 1 ok\n');
  });

  test('a domain alone checks each of its keys', async () => {
    const run = await sello(['keycheck', 'example.com', '--keys-dir', keysDir, '--dns', dns.address, '--format', 'json']);
    assert.equal(run.code, 0, run.out);
    assert.deepEqual(states(run), { 'ed2026._domainkey.example.com': 'ok', 'rsa2026._domainkey.example.com': 'ok' });
  });

  test('every state, in JSON; exit 1 when any key is not ok', async () => {
    const run = await sello(['keycheck', '--keys-dir', keysDir, '--dns', dns.address, '--format', 'json']);
    assert.equal(run.code, 1);
    const report = JSON.parse(run.out) as { ok: boolean; keys: KeyCheck[] };
    assert.equal(report.ok, false);
    assert.deepEqual(states(run), {
      'ed2026._domainkey.example.com': 'ok',
      'rsa2026._domainkey.example.com': 'ok',
      'flaky._domainkey.example.org': 'error',
      'gone._domainkey.example.org': 'missing',
      'kdiff._domainkey.example.org': 'mismatch',
      'nodata._domainkey.example.org': 'missing',
      'old._domainkey.example.org': 'mismatch',
      'revoked._domainkey.example.org': 'revoked',
      'shared._domainkey.example.org': 'ok',
      'spaced._domainkey.example.org': 'ok',
      'spfonly._domainkey.example.org': 'missing',
      'twice._domainkey.example.org': 'mismatch',
    });
    const byName = new Map(report.keys.map((check) => [check.name, check]));
    const get = (name: string): KeyCheck => {
      const check = byName.get(`${name}._domainkey.example.org`);
      assert.ok(check, name);
      return check;
    };
    assert.deepEqual(
      { ...get('gone'), path: '' },
      { domain: 'example.org', selector: 'gone', name: 'gone._domainkey.example.org', path: '', algorithm: 'rsa', bits: 2048, state: 'missing', detail: 'no such name (NXDOMAIN)', notes: [], published: [] },
    );
    assert.equal(get('gone').path, join(keysDir, 'example.org', 'gone.pem'));
    assert.equal(get('nodata').detail, 'no TXT record at the name (NODATA)');
    assert.equal(get('spfonly').detail, '1 TXT record(s) at the name, none a DKIM key record');
    assert.deepEqual(get('spfonly').published, ['v=spf1 -all']);
    assert.equal(get('old').detail, 'p= is a different public key');
    assert.equal(get('kdiff').detail, 'k=ed25519 is published, the local key is rsa');
    assert.equal(get('revoked').detail, 'p= is empty: the key is revoked (RFC 6376 §3.6.1)');
    assert.match(get('flaky').detail, /^DNS lookup failed \(ESERVFAIL\)/);
    assert.match(get('twice').detail, /^2 DKIM key records at the name \(RFC 6376 §3\.6\.2\.2: .*\): (ok; mismatch \(p= is a different public key\)|mismatch \(p= is a different public key\); ok)$/);
    assert.deepEqual(get('shared').notes, ['1 other TXT record(s) at the name (not DKIM key records, ignored)']);
    assert.equal(get('shared').detail, '');
    // The multi-string record is reported joined (RFC 6376 §3.6.2.2), FWS and all.
    assert.equal(get('spaced').published.length, 1);
    assert.match(get('spaced').published[0] ?? '', /^v=DKIM1; k=rsa; p=\S{10}\t\S{50} \S{60} /);
  });

  test('text output: one line per key, hints for what to publish, a summary', async () => {
    const run = await sello(['keycheck', 'example.org', '--keys-dir', keysDir, '--dns', dns.address]);
    assert.equal(run.code, 1);
    const lines = run.out.split('\n');
    assert.ok(lines.includes('missing  gone._domainkey.example.org     rsa-2048   no such name (NXDOMAIN)'), run.out);
    assert.ok(lines.includes('revoked  revoked._domainkey.example.org  ed25519    p= is empty: the key is revoked (RFC 6376 §3.6.1)'), run.out);
    assert.ok(lines.includes(`         publish the record printed by: sello dns-record example.org old --keys-dir ${keysDir}`), run.out);
    assert.ok(lines.includes('         note: 1 other TXT record(s) at the name (not DKIM key records, ignored)'), run.out);
    assert.equal(lines.at(-2), '10 key(s): 2 ok, 3 missing, 3 mismatch, 1 revoked, 1 error');
    assert.equal(lines.at(-1), '');
  });

  test('DNS down: every key is an error, exit 1 (SERVFAIL from every server)', async () => {
    dns.setMode('servfail');
    try {
      const run = await sello(['keycheck', 'example.com', '--keys-dir', keysDir, '--dns', dns.address, '--format', 'json']);
      assert.equal(run.code, 1);
      assert.deepEqual(states(run), { 'ed2026._domainkey.example.com': 'error', 'rsa2026._domainkey.example.com': 'error' });
    } finally {
      dns.setMode('normal');
    }
  });

  test('DNS silent: ETIMEOUT after --timeout per attempt', async () => {
    dns.setMode('drop');
    try {
      const started = Date.now();
      const run = await sello(['keycheck', 'example.com', 'rsa2026', '--keys-dir', keysDir, '--dns', dns.address, '--timeout', '100ms']);
      assert.equal(run.code, 1);
      assert.match(run.out, /^error    rsa2026\._domainkey\.example\.com  rsa-2048   DNS lookup failed \(ETIMEOUT\); try again or check --dns\n/);
      assert.ok(Date.now() - started < 3000);
    } finally {
      dns.setMode('normal');
    }
  });
});

describe('sello keycheck with a config', () => {
  async function writeConfig(domains: Record<string, string | string[]>): Promise<string> {
    const file = join(keysDir, `config-${String(Math.random()).slice(2)}.yaml`);
    const yaml = [
      'listeners:',
      '  - { name: submission, role: submission, listen: "127.0.0.1:0" }',
      'signing:',
      `  keysDir: ${JSON.stringify(keysDir)}`,
      '  domains:',
      ...Object.entries(domains).map(([domain, selectors]) => `    ${JSON.stringify(domain)}: ${JSON.stringify(selectors)}`),
      'dns:',
      `  servers: [${JSON.stringify(dns.address)}]`,
      '',
    ].join('\n');
    await writeFile(file, yaml);
    return file;
  }

  test("the signing table's keys, a wildcard entry looked up under its parent once, the config's DNS servers", async () => {
    const config = await writeConfig({ 'example.com': ['rsa2026', 'ed2026'], '*.example.com': 'rsa2026' });
    const run = await sello(['keycheck', '--config', config, '--format', 'json']);
    assert.equal(run.code, 0, run.out + run.err);
    assert.deepEqual(states(run), { 'ed2026._domainkey.example.com': 'ok', 'rsa2026._domainkey.example.com': 'ok' });
    const viaEnvironment = await sello(['keycheck', 'example.com', 'ed2026'], { SELLO_CONFIG: config });
    assert.equal(viaEnvironment.code, 0, viaEnvironment.out + viaEnvironment.err);
    assert.equal(viaEnvironment.out, 'ok       ed2026._domainkey.example.com  ed25519\n1 key(s): 1 ok\n');
  });

  test('a key the table names but the keys directory lacks is an error naming its path', async () => {
    const config = await writeConfig({ 'example.com': ['rsa2026', 'nokey'] });
    const run = await sello(['keycheck', '--config', config, '--format', 'json']);
    assert.equal(run.code, 1);
    const report = JSON.parse(run.out) as { keys: KeyCheck[] };
    const missing = report.keys.find((check) => check.selector === 'nokey');
    assert.equal(missing?.state, 'error');
    assert.equal(missing?.detail, `local key: ${join(keysDir, 'example.com', 'nokey.pem')}: no such key file`);
  });

  test('a domain not in the table: nothing to check, exit 1', async () => {
    const config = await writeConfig({ 'example.com': 'rsa2026' });
    const run = await sello(['keycheck', 'example.net', '--config', config]);
    assert.equal(run.code, 1);
    assert.equal(run.out, '');
    assert.equal(run.err, `sello keycheck: no key for example.net in the signing table of ${config}\n`);
  });
});

describe('sello keycheck usage', () => {
  for (const [why, args] of [
    ['three positionals', ['a.example', 'sel', 'extra']],
    ['an unknown format', ['--format', 'xml']],
    ['an invalid domain', ['exa mple.com']],
    ['an invalid selector', ['example.com', 'bad/selector']],
    ['a bad --dns', ['--dns', 'nowhere']],
    ['a bad --timeout', ['--timeout', 'soon']],
    ['an unknown option', ['--verbose']],
  ] as const) {
    test(`${why}: exit 2`, async () => {
      const run = await sello(['keycheck', ...args, '--keys-dir', keysDir]);
      assert.equal(run.code, 2, run.out + run.err);
      assert.match(run.err, /^sello keycheck: /);
      assert.equal(run.out, '');
    });
  }

  test('--help: exit 0, the usage', async () => {
    const run = await sello(['keycheck', '--help']);
    assert.equal(run.code, 0);
    assert.match(run.out, /^usage: sello keycheck \[<domain> \[<selector>\]\]/);
  });

  test('an unreadable keys directory: exit 1', async () => {
    const run = await sello(['keycheck', '--keys-dir', join(keysDir, 'does-not-exist')]);
    assert.equal(run.code, 1);
    assert.match(run.err, /does-not-exist: cannot read the key directory: ENOENT/);
  });
});

describe('reading key records', () => {
  const rsa = { algorithm: 'rsa' as const, privateKey: createPrivateKey(generateKey('rsa')) };
  const ed = { algorithm: 'ed25519' as const, privateKey: createPrivateKey(generateKey('ed25519')) };

  test('tag-list syntax (RFC 6376 §3.2, §3.6.1)', () => {
    assert.equal(parseKeyRecord('v=spf1 -all').kind, 'other');
    assert.equal(parseKeyRecord('google-site-verification=abc').kind, 'other');
    assert.equal(parseKeyRecord('k=rsa; p=AAAA').kind, 'key', 'v= is only recommended');
    assert.deepEqual(parseKeyRecord('v=DKIM1; p=AAAA; p=BBBB'), { kind: 'invalid', reason: 'the p= tag occurs twice' });
    assert.deepEqual(parseKeyRecord('k=rsa; v=DKIM1; p=AAAA'), { kind: 'invalid', reason: 'v=DKIM1 must be the first tag (RFC 6376 §3.6.1)' });
    assert.deepEqual(parseKeyRecord('v=DKIM1; k=rsa'), { kind: 'invalid', reason: 'no p= tag (it is required, RFC 6376 §3.6.1)' });
    const parsed = parseKeyRecord(' v = DKIM1 ;\tk=ed25519;p= AB CD ;');
    assert.equal(parsed.kind, 'key');
    assert.equal(parsed.kind === 'key' && parsed.tags.get('p'), 'AB CD');
  });

  test('an invalid DKIM record is a mismatch; k= defaults to rsa', () => {
    assert.deepEqual(judge(['v=DKIM1; p=AAAA; p=BBBB'], rsa), { state: 'mismatch', detail: 'invalid key record: the p= tag occurs twice', notes: [] });
    const withoutK = dnsRecordValue(rsa.privateKey).replace('k=rsa; ', '');
    assert.deepEqual(judge([withoutK], rsa), { state: 'ok', detail: '', notes: [] });
    assert.equal(judge([withoutK], ed).detail, 'k=rsa is published, the local key is ed25519');
    assert.equal(judge(['v=DKIM1; p=not*base64'], rsa).detail, 'p= is not valid base64');
  });

  test('RSA as PKCS#1 RSAPublicKey: ok with a note', () => {
    const pkcs1 = createPublicKey(rsa.privateKey).export({ type: 'pkcs1', format: 'der' }).toString('base64');
    assert.deepEqual(judge([`v=DKIM1; k=rsa; p=${pkcs1}`], rsa), {
      state: 'ok',
      detail: '',
      notes: ['p= is a PKCS#1 RSAPublicKey; most records use SubjectPublicKeyInfo (what sello dns-record prints)'],
    });
  });

  test('Ed25519 published as SubjectPublicKeyInfo: a mismatch that says why (RFC 8463 §4.2)', () => {
    const spki = createPublicKey(ed.privateKey).export({ type: 'spki', format: 'der' }).toString('base64');
    assert.deepEqual(judge([`v=DKIM1; k=ed25519; p=${spki}`], ed), {
      state: 'mismatch',
      detail: 'p= holds this key as SubjectPublicKeyInfo; RFC 8463 §4.2 needs the raw 32-byte key',
      notes: [],
    });
  });

  test('several records: ok only if all carry the key; all revoked is revoked; t=y is a note', () => {
    const ours = dnsRecordValue(ed.privateKey);
    const spacedOurs = ours.replace('; p=', ';p=');
    const both = judge([ours, spacedOurs], ed);
    assert.equal(both.state, 'ok');
    assert.match(both.notes[0] ?? '', /^2 DKIM key records at the name .*; all carry this key$/);
    assert.equal(judge(['v=DKIM1; p=', 'v=DKIM1; k=rsa; p='], ed).state, 'revoked');
    assert.deepEqual(judge([`${ours}; t=y`], ed), { state: 'ok', detail: '', notes: ['t=y: the domain is testing DKIM'] });
  });

  test('every tag keygen writes is understood: t=y:s, s=email and n= are ok with notes', () => {
    const tagged = dnsRecordValue(ed.privateKey, { testing: true, strictSubdomains: true, service: 'email', note: 'rotated; bob' });
    assert.deepEqual(judge([tagged], ed), {
      state: 'ok',
      detail: '',
      notes: ['t=y: the domain is testing DKIM', 't=s: strict subdomains (i= must be in d= itself; sello sets no i=, so its signatures comply)', 'n=rotated=3B bob'],
    });
    assert.equal(judge([dnsRecordValue(ed.privateKey, { service: '*' })], ed).state, 'ok');
    assert.equal(judge([`v=DKIM1; k=ed25519; t=x:s; s=email:other; h=sha1:sha256; p=${/p=(\S+)$/.exec(dnsRecordValue(ed.privateKey))?.[1]}`], ed).state, 'ok', 'unknown flags and services are ignored');
  });

  test('s= without email or *, and h= without sha256, are mismatches that say why', () => {
    const p = /p=(\S+)$/.exec(dnsRecordValue(ed.privateKey))?.[1];
    assert.deepEqual(judge([`v=DKIM1; k=ed25519; s=web; p=${p}`], ed), {
      state: 'mismatch',
      detail: 's=web does not include email or *: verifiers will not use this key for mail (RFC 6376 §3.6.1)',
      notes: [],
    });
    assert.deepEqual(judge([`v=DKIM1; k=ed25519; h=sha1; p=${p}`], ed), {
      state: 'mismatch',
      detail: 'h=sha1 does not allow sha256, the only hash sello signs with (RFC 8301 §3.1)',
      notes: [],
    });
    assert.equal(judge([`v=DKIM1; k=ed25519; s=web; p=`], ed).state, 'revoked', 'an empty p= is revoked whatever else the record says');
  });
});

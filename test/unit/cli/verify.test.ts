// Tests for `sello verify` (src/cli/verify.ts), in-process through main() against the real test
// DNS server on loopback (test/helpers/dns-server.ts): keys made by `sello keygen` and published
// as it prints them, messages signed by `sello sign` with an RSA and an Ed25519 key together, and
// an ARC set sealed by mailauth as a forwarder would; and how the reason is read from a resinfo.

import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { sealMessage } from 'mailauth';
import { main } from '../../../src/cli/run.ts';
import { resinfoComments, verifyUsage } from '../../../src/cli/verify.ts';
import { startDnsServer, type DnsServer } from '../../helpers/dns-server.ts';
import { runCommand, type CommandRun } from '../../helpers/cli.ts';

const MESSAGE =
  'From: Alice <alice@example.com>\r\n' +
  'To: bob@example.net\r\n' +
  'Subject: hello\r\n' +
  'Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n' +
  'Message-ID: <1@example.com>\r\n' +
  '\r\n' +
  'Hello Bob.\r\n';

const INTACT = 'pass d=example.com s=rsa1 a=rsa-sha256\npass d=example.com s=ed1 a=ed25519-sha256\n';

let keysDir: string;
let dns: DnsServer;
/** MESSAGE signed with rsa1 and ed1, both published. */
let signed: string;
/** The RSA record as keygen split it into character-strings. */
let rsaStrings: string[];

function stdin(text: string): Readable {
  return Readable.from([Buffer.from(text, 'latin1')]);
}

/** Makes a key with `sello keygen` and returns the character-strings of the BIND line it printed. */
async function keygen(domain: string, selector: string, algorithm: 'rsa' | 'ed25519'): Promise<string[]> {
  const run = await runCommand(main, ['keygen', domain, '--selector', selector, '--algorithm', algorithm, '--keys-dir', keysDir]);
  assert.equal(run.code, 0, run.err);
  return [...run.out.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((match) => (match[1] ?? '').replace(/\\(.)/g, '$1'));
}

async function sign(message: string, selectors: string[]): Promise<string> {
  const run = await runCommand(main, ['sign', '--keys-dir', keysDir, '--domain', 'example.com', ...selectors.flatMap((selector) => ['--selector', selector])], {
    stdin: stdin(message),
  });
  assert.equal(run.code, 0, run.err);
  return run.out;
}

function verify(message: string, args: string[] = ['--dns', dns.address]): Promise<CommandRun> {
  return runCommand(main, ['verify', ...args], { stdin: stdin(message) });
}

before(async () => {
  keysDir = await mkdtemp(join(tmpdir(), 'sello-verify-'));
  rsaStrings = await keygen('example.com', 'rsa1', 'rsa');
  const edStrings = await keygen('example.com', 'ed1', 'ed25519');
  const arcStrings = await keygen('forwarder.example', 'arc1', 'rsa');
  // Never published: its signatures find no key record.
  await keygen('example.com', 'unpublished', 'rsa');
  // Its record's name is one the DNS server never answers for.
  await keygen('example.com', 'silent', 'ed25519');
  dns = await startDnsServer({
    'rsa1._domainkey.example.com': { TXT: [rsaStrings] },
    'ed1._domainkey.example.com': { TXT: [edStrings] },
    'arc1._domainkey.forwarder.example': { TXT: [arcStrings] },
    'silent._domainkey.example.com': { fault: 'drop' },
  });
  signed = await sign(MESSAGE, ['rsa1', 'ed1']);
});

after(async () => {
  await dns?.close();
  await rm(keysDir, { recursive: true, force: true });
});

describe('sello verify', () => {
  test('intact message: a pass line per signature (RSA, Ed25519), arc=none, exit 0', async () => {
    assert.equal(signed.match(/^DKIM-Signature:/gm)?.length, 2);
    assert.ok(rsaStrings.length >= 2, 'the 2048-bit RSA record is published as several strings');
    const run = await verify(signed);
    assert.equal(run.out, `${INTACT}arc=none\n`);
    assert.equal(run.code, 0);
    assert.equal(run.err, '');
  });

  test('body altered: both fail with the body hash reason, exit 1', async () => {
    const altered = signed.replace('Hello Bob.', 'Hello Eve.');
    assert.notEqual(altered, signed);
    const run = await verify(altered);
    assert.equal(
      run.out,
      'fail d=example.com s=rsa1 a=rsa-sha256 (body hash did not verify)\n' +
        'fail d=example.com s=ed1 a=ed25519-sha256 (body hash did not verify)\n' +
        'arc=none\n',
    );
    assert.equal(run.code, 1);
  });

  test('signed header field altered (Subject): both fail, exit 1', async () => {
    const altered = signed.replace('Subject: hello', 'Subject: HELLO');
    assert.notEqual(altered, signed);
    const run = await verify(altered);
    assert.equal(
      run.out,
      'fail d=example.com s=rsa1 a=rsa-sha256 (bad signature)\n' +
        'fail d=example.com s=ed1 a=ed25519-sha256 (bad signature)\n' +
        'arc=none\n',
    );
    assert.equal(run.code, 1);
  });

  test('no DKIM-Signature: none, exit 1', async () => {
    const run = await verify(MESSAGE);
    assert.equal(run.out, 'none\narc=none\n');
    assert.equal(run.code, 1);
  });

  test('one key record missing from DNS: that signature is permerror (no key), exit 1', async () => {
    const run = await verify(await sign(MESSAGE, ['unpublished', 'ed1']));
    assert.equal(
      run.out,
      'permerror d=example.com s=unpublished a=rsa-sha256 (no key)\n' +
        'pass d=example.com s=ed1 a=ed25519-sha256\n' +
        'arc=none\n',
    );
    assert.equal(run.code, 1);
  });

  test('DNS server stopped: temperror for every signature, exit 1', async () => {
    const stopped = await startDnsServer();
    await stopped.close();
    const run = await verify(signed, ['--dns', stopped.address, '--timeout', '2s']);
    assert.equal(
      run.out,
      'temperror d=example.com s=rsa1 a=rsa-sha256 (DNS failure: ETIMEOUT)\n' +
        'temperror d=example.com s=ed1 a=ed25519-sha256 (DNS failure: ETIMEOUT)\n' +
        'arc=none\n',
    );
    assert.equal(run.code, 1);
  });

  test('servers that never answer: temperror when --timeout has run out, however many are asked', async () => {
    // Without the one deadline, six silent servers cost 6 × 2 rounds × 300 ms per query (3.6 s).
    const silentServers = Array.from({ length: 6 }, () => ['--dns', dns.address]).flat();
    const started = performance.now();
    const run = await verify(await sign(MESSAGE, ['silent']), [...silentServers, '--timeout', '300ms']);
    const elapsedMs = performance.now() - started;
    assert.equal(run.out, 'temperror d=example.com s=silent a=ed25519-sha256 (DNS failure: ETIMEOUT)\narc=none\n');
    assert.equal(run.code, 1);
    assert.ok(elapsedMs >= 300 && elapsedMs < 2000, `took ${Math.round(elapsedMs)} ms`);
  });

  test('bare LF line endings as editors and mail(1) save messages, or bare CR: made CRLF, both pass', async () => {
    for (const ending of ['\n', '\r']) {
      const saved = signed.replace(/\r\n/g, ending);
      assert.equal(saved.match(/\r\n/g), null);
      const run = await verify(saved);
      assert.equal(run.out, `${INTACT}arc=none\n`, JSON.stringify(ending));
      assert.equal(run.code, 0);
    }
  });

  test('ARC set sealed by a forwarder: arc=pass; body altered or seal broken: arc=fail', async () => {
    const seal = await sealMessage(Buffer.from(signed, 'latin1'), {
      signingDomain: 'forwarder.example',
      selector: 'arc1',
      privateKey: await readFile(join(keysDir, 'forwarder.example', 'arc1.pem')),
      authResults: 'mx.forwarder.example; dkim=pass header.d=example.com',
      cv: 'none',
    });
    const sealed = seal.toString('latin1') + signed;
    const run = await verify(sealed);
    assert.equal(run.out, `${INTACT}arc=pass (i=1 dkim=pass)\n`);
    assert.equal(run.code, 0);

    const altered = await verify(sealed.replace('Hello Bob.', 'Hello Eve.'));
    assert.equal(altered.out.split('\n')[2], 'arc=fail (i=1 no valid signature)');
    assert.equal(altered.code, 1);

    // A broken seal over intact DKIM signatures: the exit status follows the signatures alone.
    const resealed = await verify(sealed.replace('cv=none', 'cv=pass'));
    assert.equal(resealed.out, `${INTACT}arc=fail (i=1 cv= pass)\n`);
    assert.equal(resealed.code, 0);
  });

  test('--json: one object with the signatures and the ARC result; the exit status is the same', async () => {
    const intact = await verify(signed, ['--dns', dns.address, '--json']);
    assert.equal(intact.code, 0);
    const report = JSON.parse(intact.out) as { signatures: Record<string, string>[]; arc: Record<string, string> };
    assert.deepEqual(
      report.signatures.map(({ info, ...rest }) => rest),
      [
        { result: 'pass', domain: 'example.com', selector: 'rsa1', algorithm: 'rsa-sha256' },
        { result: 'pass', domain: 'example.com', selector: 'ed1', algorithm: 'ed25519-sha256' },
      ],
    );
    assert.match(report.signatures[0]?.info ?? '', /^dkim=pass header\.i=@example\.com header\.s=rsa1 /);
    assert.deepEqual(report.arc, { result: 'none', info: 'arc=none' });

    const altered = await verify(signed.replace('Hello Bob.', 'Hello Eve.'), ['--dns', dns.address, '--json']);
    assert.equal(altered.code, 1);
    const failed = JSON.parse(altered.out) as { signatures: Record<string, string>[] };
    assert.deepEqual(
      failed.signatures.map(({ result, reason }) => ({ result, reason })),
      [
        { result: 'fail', reason: 'body hash did not verify' },
        { result: 'fail', reason: 'body hash did not verify' },
      ],
    );
  });

  test('a message over the server\'s default 25 MiB limit is verified too: a file is not an SMTP client', async () => {
    const body = `${'x'.repeat(76)}\r\n`.repeat(Math.ceil((26 * 1024 * 1024) / 78));
    const run = await verify(signed.replace(/\r\n\r\n[\s\S]*$/, `\r\n\r\n${body}`));
    assert.equal(run.err, '');
    // The signatures were made over another body: both fail, and nothing refused the message.
    assert.deepEqual(
      run.out.split('\n').filter(Boolean).map((line) => line.split(' ')[0]),
      ['fail', 'fail', 'arc=none'],
    );
    assert.equal(run.code, 1);
  });

  test('--help prints the usage: output, what is normalised, what is not evaluated, exit codes', async () => {
    const run = await runCommand(main, ['verify', '--help']);
    assert.equal(run.code, 0);
    assert.equal(run.out, verifyUsage);
    assert.match(run.out, /Bare LF/);
    assert.match(run.out, /SPF and DMARC are not evaluated/);
    assert.match(run.out, /^exit status \(the arc= result does not change it\):$/m);
  });

  test('sello --help lists the command', async () => {
    const run = await runCommand(main, ['--help']);
    assert.match(run.out, /^ {2}verify {9}verify the DKIM signatures/m);
  });

  const usageErrors: [string, string[], RegExp][] = [
    ['bad --timeout', ['--timeout', 'soon'], /^sello verify: --timeout must be a duration such as 20s or 500ms, not "soon"\n$/],
    ['zero --timeout', ['--timeout', '0s'], /^sello verify: --timeout must be a duration/],
    ['bad --dns', ['--dns', 'resolver'], /^sello verify: --dns must be HOST:PORT/],
    ['unknown option', ['--format', 'json'], /^sello verify: Unknown option '--format' \(see sello verify --help\)\n$/],
    ['positional', ['message.eml'], /^sello verify: Unexpected argument 'message\.eml'/],
  ];
  for (const [name, args, message] of usageErrors) {
    test(`usage error: ${name} → exit 2, the reason on stderr`, async () => {
      const run = await verify(signed, args);
      assert.equal(run.code, 2);
      assert.match(run.err, message);
      assert.equal(run.out, '');
    });
  }
});

describe('resinfoComments', () => {
  test('the comments right after the result word, unescaped; none from property values', () => {
    assert.equal(resinfoComments('dkim=fail (body hash did not verify) header.i=@example.com header.s=rsa1'), 'body hash did not verify');
    assert.equal(
      resinfoComments('dkim=pass (undersized signature: 5 bytes unsigned) (see \\(this\\) and \\\\) header.i=@example.com'),
      'undersized signature: 5 bytes unsigned; see (this) and \\',
    );
    assert.equal(resinfoComments('dkim=pass header.i=@example.com header.s=rsa1 (not a reason)'), undefined);
    assert.equal(resinfoComments('arc=none'), undefined);
  });
});

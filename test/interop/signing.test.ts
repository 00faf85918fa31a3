// sello's signatures checked by independent verifiers, end to end: keys made by `sello keygen`,
// its BIND output published verbatim by a DNS server on loopback, mail submitted to sello over
// SMTP, relayed in step to a real Exim (Debian exim4-daemon-heavy) that verifies DKIM itself,
// and the delivered copy verified again by dkimpy (Debian python3-dkim).
// Also: in-step relay against real Exim (its RCPT refusals, Exim down → 451 4.4.1).

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startSello, type RunningSello } from '../../src/app.ts';
import { main } from '../../src/cli/run.ts';
import { parseConfig } from '../../src/config/load.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { verifyWithDkimpy } from '../helpers/dkimpy.ts';
import type { Zone } from '../helpers/dns-server.ts';
import { eximDkimResults, startExim, withoutEximFields, type Exim } from '../helpers/exim.ts';
import { sendMail, SmtpDialog } from '../helpers/smtp-dialog.ts';
import { checkDkimpy, checkExim, suiteOptions, tempDir } from '../helpers/tools.ts';
import { runCommand } from '../helpers/cli.ts';

/** Runs `sello keygen` in-process and turns its BIND output into the TXT strings to publish. */
async function keygen(keysDir: string, domain: string, selector: string, algorithm: 'rsa' | 'ed25519'): Promise<{ name: string; strings: string[] }> {
  const { code, out: stdout, err } = await runCommand(main, ['keygen', domain, '--selector', selector, '--algorithm', algorithm, '--keys-dir', keysDir, '--format', 'bind']);
  assert.equal(code, 0, err);
  const match = /^(\S+)\. IN TXT \( (.*) \)$/m.exec(stdout);
  assert.ok(match, `unexpected keygen output: ${stdout}`);
  const strings = [...(match[2] as string).matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => (m[1] as string).replace(/\\(.)/g, '$1'));
  assert.ok(strings.every((s) => Buffer.byteLength(s) <= 255));
  return { name: match[1] as string, strings };
}

const SETUPS = {
  rsa: { domain: 'rsa.example', selectors: ['r2048'] },
  ed25519: { domain: 'ed.example', selectors: ['ed1'] },
  dual: { domain: 'dual.example', selectors: ['r2048', 'ed1'] },
} as const;

const date = 'Mon, 23 Nov 2026 10:00:00 +0000';
const MESSAGES: Record<string, (from: string) => Buffer> = {
  plain: (from) => Buffer.from(`From: ${from}\r\nTo: bob@example.net\r\nSubject: plain\r\nDate: ${date}\r\nMessage-ID: <p@x>\r\n\r\nHello.\r\n`),
  '8-bit body': (from) =>
    Buffer.from(
      `From: ${from}\r\nTo: bob@example.net\r\nSubject: 8bit\r\nDate: ${date}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln — ½ € ✓\r\n\xff\xfe raw bytes\r\n`,
      'utf8',
    ),
  'long and folded header lines': (from) =>
    Buffer.from(
      `From: ${from}\r\nTo: bob@example.net,\r\n\tcarol@example.net,\r\n   dave@example.net\r\nSubject: ${'a very long subject '.repeat(20)}\r\n  continued   with\t odd   spacing  \r\nDate: ${date}\r\nX-Long: ${'x'.repeat(900)}\r\n\r\nBody.\r\n`,
    ),
  'body without final CRLF': (from) => Buffer.from(`From: ${from}\r\nTo: bob@example.net\r\nSubject: no final crlf\r\nDate: ${date}\r\n\r\nlast line has no CRLF`),
  'empty body': (from) => Buffer.from(`From: ${from}\r\nTo: bob@example.net\r\nSubject: empty\r\nDate: ${date}\r\n\r\n`),
  'bare-LF input': (from) => Buffer.from(`From: ${from}\nTo: bob@example.net\nSubject: bare lf\nDate: ${date}\n\nline one\n.\nline three  \n\n\n`),
  // Past the suite's data.spillThreshold (8KiB): relayed from its spill file.
  'spilled body: dots, bare LFs, tabs, trailing whitespace': (from) =>
    Buffer.from(
      `From: ${from}\r\nTo: bob@example.net\r\nSubject: spilled\r\nDate: ${date}\r\n\r\n${Array.from({ length: 600 }, (_, index) => (index % 5 === 0 ? `.dot line ${index}\t \n` : `line ${index}  with \t  spaces  \r\n`)).join('')}\r\n\r\n`,
    ),
  'trailing whitespace and empty lines': (from) => Buffer.from(`From: ${from}\r\nTo: bob@example.net\r\nSubject: ws \t \r\nDate: ${date}\r\n\r\nspaces   \t\r\n\r\n\r\n`),
};

describe('signatures made by sello verify with Exim and dkimpy', suiteOptions(checkExim(), checkDkimpy()), () => {
  let exim: Exim;
  let sello: RunningSello;
  let port: number;

  let spillDirectory: string;

  before(async () => {
    const keysDir = await tempDir({ after });
    spillDirectory = await mkdtemp(path.join(os.tmpdir(), 'sello-spill-'));
    const zone: Zone = {};
    for (const { domain, selectors } of Object.values(SETUPS)) {
      for (const selector of selectors) {
        const key = await keygen(keysDir, domain, selector, selector.startsWith('ed') ? 'ed25519' : 'rsa');
        zone[key.name] = { TXT: [key.strings] };
      }
    }
    exim = await startExim({ zone, localDomains: ['example.net'], refuse: { nobody: '550 5.1.1 nobody: no such user here' } });
    const config = parseConfig({
      hostname: 'sello.test',
      listeners: [{ name: 'submission', role: 'submission', listen: '127.0.0.1:0', trustedNetworks: ['127.0.0.0/8'] }],
      relay: { target: `smtp://127.0.0.1:${exim.port}`, starttls: 'never' },
      signing: { keysDir, domains: Object.fromEntries(Object.values(SETUPS).map((setup) => [setup.domain, [...setup.selectors]])) },
      data: { spillThreshold: '8KiB', spillDirectory: spillDirectory },
    });
    sello = await startSello(config, silentLogger());
    port = sello.addresses.get('submission')!.port;
  });
  after(async () => {
    await sello?.close();
    await exim?.close();
    if (spillDirectory) await rm(spillDirectory, { recursive: true, force: true });
  });

  for (const [setupName, setup] of Object.entries(SETUPS)) {
    for (const [messageName, make] of Object.entries(MESSAGES)) {
      test(`${setupName}: ${messageName}`, async () => {
        await exim.clearMessages();
        // Sent as-is (bare LFs stay bare), dot-stuffed after any LF.
        const sent = await sendMail(port, { from: `alice@${setup.domain}`, to: ['bob@example.net'], data: make(`Alice <alice@${setup.domain}>`) });
        assert.match(sent.data ?? '', /^250 2\.0\.0 OK: queued as \S+/, JSON.stringify(sent));
        const [delivered] = await exim.waitForMessages(1);
        assert.ok(delivered);
        const expected = setup.selectors.map((selector) => ({ domain: setup.domain, selector, status: 'pass', reason: '' }));
        const byExim = eximDkimResults(delivered).map(({ domain, selector, status, reason }) => ({ domain, selector, status, reason }));
        assert.deepEqual(byExim.sort((a, b) => a.selector.localeCompare(b.selector)), expected.sort((a, b) => a.selector.localeCompare(b.selector)));
        const byDkimpy = await verifyWithDkimpy(withoutEximFields(delivered), exim.dns);
        assert.deepEqual(
          byDkimpy.signatures.map(({ domain, selector, ok, error }) => ({ domain, selector, ok, error })).sort((a, b) => a.selector.localeCompare(b.selector)),
          setup.selectors.map((selector) => ({ domain: setup.domain, selector, ok: true, error: undefined })).sort((a, b) => a.selector.localeCompare(b.selector)),
        );
      });
    }
  }

  test('oversigning: a second Subject or From added to a signed message fails at Exim and dkimpy', async () => {
    await exim.clearMessages();
    await sendMail(port, { from: 'alice@dual.example', to: ['bob@example.net'], data: MESSAGES.plain!('alice@dual.example') });
    const [delivered] = await exim.waitForMessages(1);
    const signed = withoutEximFields(delivered!).toString('latin1');
    for (const added of ['Subject: second subject', 'From: mallory@dual.example']) {
      const tampered = Buffer.from(signed.replace('\r\n\r\n', `\r\n${added}\r\n\r\n`), 'latin1');
      const byDkimpy = await verifyWithDkimpy(tampered, exim.dns);
      assert.deepEqual(byDkimpy.signatures.map((s) => s.ok), [false, false], `dkimpy after adding "${added}"`);
      await exim.clearMessages();
      // Straight to Exim (not through sello, which would sign again).
      const sent = await sendMail(exim.port, { from: 'alice@dual.example', to: ['bob@example.net'], data: tampered });
      assert.match(sent.data ?? '', /^250/);
      const [received] = await exim.waitForMessages(1);
      assert.deepEqual(eximDkimResults(received!).map((r) => r.status), ['fail', 'fail'], `Exim after adding "${added}"`);
    }
  });

  test('in step with Exim: a recipient Exim refuses is refused at RCPT TO with Exim\'s own reply', async () => {
    await exim.clearMessages();
    const sent = await sendMail(port, { from: 'alice@rsa.example', to: ['nobody@example.net', 'bob@example.net'], data: MESSAGES.plain!('alice@rsa.example') });
    assert.deepEqual(sent.rcpt, ['550 5.1.1 nobody: no such user here', '250 Accepted']);
    assert.match(sent.data ?? '', /^250 2\.0\.0 OK: queued as [\w-]+$/);
    await exim.waitForMessages(1);
    const deliveries = await exim.deliveries();
    assert.deepEqual(deliveries.map((d) => d.recipient), ['bob@example.net']);
  });

  test('in step with Exim: relaying to a foreign domain is refused by Exim at RCPT TO', async () => {
    const sent = await sendMail(port, { from: 'alice@rsa.example', to: ['someone@elsewhere.example'], data: MESSAGES.plain!('alice@rsa.example') });
    assert.match(sent.rcpt[0] ?? '', /^550 /);
    assert.equal(sent.dataCommand, undefined, 'no DATA without an accepted recipient');
  });

  test('Exim stopped: 451 4.4.1, the client never sees 250; Exim back: mail flows again', async () => {
    await exim.stop();
    try {
      const sent = await sendMail(port, { from: 'alice@rsa.example', to: ['bob@example.net'], data: MESSAGES.plain!('alice@rsa.example') });
      assert.equal(sent.mail, '451 4.4.1 Downstream mail server unreachable, try again later');
      const afterEhlo = [sent.mail, ...sent.rcpt, sent.dataCommand, sent.data];
      assert.ok(!afterEhlo.some((reply) => reply?.startsWith('250')), JSON.stringify(sent));
    } finally {
      await exim.start();
    }
    await exim.clearMessages();
    const sent = await sendMail(port, { from: 'alice@rsa.example', to: ['bob@example.net'], data: MESSAGES.plain!('alice@rsa.example') });
    assert.match(sent.data ?? '', /^250 /);
    assert.equal((await exim.waitForMessages(1)).length, 1);
  });

  test('Exim dies mid-transaction (after RCPT): the DATA reply is 4xx, never 250', async () => {
    const dialog = await SmtpDialog.connect(port);
    await dialog.command('EHLO client.test');
    assert.equal(await dialog.command('MAIL FROM:<alice@rsa.example>'), '250 Accepted');
    assert.equal(await dialog.command('RCPT TO:<bob@example.net>'), '250 Accepted');
    await exim.stop();
    try {
      const reply = await dialog.sendData(MESSAGES.plain!('alice@rsa.example'));
      assert.match(reply, /^4\d\d 4\.4\.\d /);
    } finally {
      await dialog.close();
      await exim.start();
    }
  });
});

// sello as a milter for a real Postfix 3.x (Debian's package, run by test/helpers/postfix.ts),
// with the shipped config/postfix/main-milter.cf used as it is (only the port replaced by a free
// one). Outbound: mail submitted with SASL AUTH and mail from sendmail(1) (non_smtpd_milters)
// leaves through Postfix to a real Exim, whose DKIM verifier and dkimpy both accept sello's
// signature. Inbound: an SPF fail is refused at RCPT with the engine's 550 5.7.23; accepted mail
// carries Received-SPF and sello's Authentication-Results, and a forged A-R in sello's name is gone.
// Clients connect from 127.0.0.2 (not in any trusted network).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startSello, type RunningSello } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { verifyWithDkimpy } from '../helpers/dkimpy.ts';
import { eximDkimResults, startExim, withoutEximFields, type Exim } from '../helpers/exim.ts';
import { parseAuthenticationResults, parseReceivedSpf } from '../helpers/header-parsers.ts';
import { startPort53DnsServer } from '../helpers/mta-harness.ts';
import { checkCyrusSasl, setUpSite, SITE_MAIN_CF } from '../helpers/postfix-site.ts';
import { startPostfix, type Postfix } from '../helpers/postfix.ts';
import { makeKeys } from '../helpers/sello.ts';
import { SmtpDialog, sendMail } from '../helpers/smtp-dialog.ts';
import { checkDkimpy, checkExim, checkPostfix, freePort, postfixPaths, removeTempDir, suiteOptions } from '../helpers/tools.ts';
import type { DnsServer } from '../helpers/dns-server.ts';

const ROOT = path.join(import.meta.dirname, '../..');
const CLIENT = '127.0.0.2';
const AUTHSERV_ID = 'sello.test';
const DATE = 'Fri, 04 Dec 2026 10:00:00 +0000';

/** The shipped snippet's lines with sello's port; each replacement must apply. */
export async function shippedMainMilter(port: number): Promise<string[]> {
  const text = await readFile(path.join(ROOT, 'config/postfix/main-milter.cf'), 'utf8');
  assert.equal(text.match(/inet:127\.0\.0\.1:8891/g)?.length, 2, 'main-milter.cf names sello twice');
  return text.replaceAll('inet:127.0.0.1:8891', `inet:127.0.0.1:${port}`).split('\n');
}

function message(from: string, to: string, subject: string, extra = ''): Buffer {
  return Buffer.from(`${extra}From: ${from}\r\nTo: ${to}\r\nSubject: ${subject}\r\nDate: ${DATE}\r\nMessage-ID: <${subject.replace(/\W+/g, '-')}@client.test>\r\n\r\nHello through the milter.\r\n`);
}

function headerFields(data: Buffer, name: string): string[] {
  const header = data.toString('latin1').split('\r\n\r\n')[0] ?? '';
  return header.split(/\r\n(?![ \t])/).filter((line) => line.toLowerCase().startsWith(`${name.toLowerCase()}:`));
}

async function waitFor<T>(probe: () => Promise<T | undefined>, what: string, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

describe('sello as Postfix milter (smtpd_milters, non_smtpd_milters)', suiteOptions(checkPostfix(), checkExim(), checkDkimpy(), checkCyrusSasl()), () => {
  let dns: DnsServer;
  let exim: Exim;
  let postfix: Postfix;
  let sello: RunningSello;
  let keysDir: string;

  before(async () => {
    const keys = await makeKeys([{ domain: 'example.org', selector: 'mil', algorithm: 'rsa' }]);
    keysDir = keys.keysDir;
    dns = await startPort53DnsServer({
      ...Object.fromEntries([...keys.records].map(([name, value]) => [name, { TXT: [value] }])),
      'pass.example': { TXT: ['v=spf1 ip4:127.0.0.2 -all'] },
      'fail.example': { TXT: ['v=spf1 ip4:192.0.2.1 -all'] },
    });
    exim = await startExim({ dnsServer: dns, localDomains: ['remote.example'] });
    const milterPort = await freePort('127.0.0.1');
    sello = await startSello(
      parseConfig({
        hostname: AUTHSERV_ID,
        listeners: [{ name: 'milter', role: 'milter', listen: `inet:127.0.0.1:${milterPort}` }],
        signing: { keysDir, domains: { 'example.org': 'mil' } },
        dns: { servers: [dns.address], timeout: '2s' },
      }),
      silentLogger(),
    );
    postfix = await startPostfix({
      dnsServer: dns,
      localDomains: ['example.net'],
      mainConfig: [
        ...SITE_MAIN_CF.filter((line) => !line.startsWith('transport_maps')),
        // "The Internet" is the Exim that verifies DKIM.
        `transport_maps = inline:{remote.example=smtp:[127.0.0.1]:${exim.port}}`,
        ...(await shippedMainMilter(milterPort)),
        // sendmail(1) runs postdrop with export_environment only; the unpacked tree's libraries
        // are not where postdrop's RUNPATH looks.
        'export_environment = TZ MAIL_CONFIG LANG LD_LIBRARY_PATH',
      ],
      services: { submission: { options: ['smtpd_sasl_auth_enable=yes', 'smtpd_relay_restrictions=permit_sasl_authenticated,reject'] } },
    });
    await setUpSite(postfix, { alice: 'wonderland' });
  });
  after(async () => {
    await postfix?.close();
    await sello?.close();
    await exim?.close();
    await dns?.close();
    if (keysDir) await removeTempDir(keysDir);
  });

  /** The copy Exim got with this Subject, checked by Exim's own verifier and by dkimpy. */
  async function verifiedAtExim(subject: string): Promise<{ exim: string[]; dkimpy: string[]; data: Buffer }> {
    const delivered = await waitFor(async () => (await exim.messages()).find((data) => data.toString('latin1').includes(`Subject: ${subject}\r\n`)), `Exim delivery of "${subject}"`);
    const byExim = eximDkimResults(delivered).map((result) => `${result.domain}/${result.selector}: ${result.status}`);
    const byDkimpy = (await verifyWithDkimpy(withoutEximFields(delivered), dns)).signatures.map((signature) => `${signature.domain}/${signature.selector}: ${signature.ok ? 'ok' : signature.error}`);
    return { exim: byExim, dkimpy: byDkimpy, data: withoutEximFields(delivered) };
  }

  test('SASL-authenticated submission leaves signed; Exim and dkimpy verify the signature', async () => {
    const dialog = await SmtpDialog.connect(postfix.ports['submission']!, { localAddress: CLIENT });
    try {
      assert.match(await dialog.command('EHLO client.test'), /^250/);
      assert.match(await dialog.command(`AUTH PLAIN ${Buffer.from('\0alice\0wonderland').toString('base64')}`), /^235/);
      assert.match(await dialog.command('MAIL FROM:<alice@example.org>'), /^250/);
      assert.match(await dialog.command('RCPT TO:<bob@remote.example>'), /^250/);
      assert.match(await dialog.sendData(message('Alice <alice@example.org>', 'bob@remote.example', 'milter auth submission')), /^250 2\.0\.0 Ok: queued as /);
    } finally {
      await dialog.close();
    }
    const verified = await verifiedAtExim('milter auth submission');
    assert.deepEqual(verified.exim, ['example.org/mil: pass']);
    assert.deepEqual(verified.dkimpy, ['example.org/mil: ok']);
    assert.deepEqual(headerFields(verified.data, 'Authentication-Results'), [], 'an authenticated submission is not checked');
  });

  test('sendmail -t (non_smtpd_milters, local submission) leaves signed; Exim and dkimpy verify', async () => {
    const paths = postfixPaths();
    const sent = spawnSync(path.join(paths.commandDirectory, 'sendmail'), ['-C', path.join(postfix.dir, 'etc'), '-t', '-f', 'root@example.org'], {
      input: message('Root <root@example.org>', 'carol@remote.example', 'milter sendmail t'),
      env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', LD_LIBRARY_PATH: paths.shlibDirectory },
      timeout: 20_000,
      encoding: 'utf8',
    });
    assert.equal(sent.status, 0, `sendmail -t: ${sent.stderr}`);
    const verified = await verifiedAtExim('milter sendmail t');
    assert.deepEqual(verified.exim, ['example.org/mil: pass']);
    assert.deepEqual(verified.dkimpy, ['example.org/mil: ok']);
  });

  test('SPF fail from the client is refused at RCPT with the engine\'s 550 5.7.23 reply', async () => {
    const sent = await sendMail(postfix.port, { from: 'mallory@fail.example', to: ['bob@example.net'], data: message('mallory@fail.example', 'bob@example.net', 'milter spf fail') }, { localAddress: CLIENT });
    assert.match(sent.mail, /^250/);
    assert.deepEqual(sent.rcpt, ['550 5.7.23 [SPF] 127.0.0.2 is not allowed to send mail from fail.example']);
    assert.equal(sent.dataCommand, undefined);
  });

  test('inbound: Received-SPF and Authentication-Results added, a forged A-R in sello\'s name removed', async () => {
    const forged = `Authentication-Results: ${AUTHSERV_ID}; spf=pass smtp.mailfrom=forged@pass.example; dkim=pass header.d=bank.example\r\n`;
    const foreign = 'Authentication-Results: other.example; spf=none\r\n';
    const sent = await sendMail(
      postfix.port,
      { from: 'carol@pass.example', to: ['bob@example.net'], data: message('Carol <carol@pass.example>', 'bob@example.net', 'milter inbound', forged + foreign) },
      { localAddress: CLIENT, helo: 'client.test' },
    );
    assert.deepEqual(sent.rcpt, ['250 2.1.5 Ok']);
    const queueId = /queued as (\w+)/.exec(sent.data ?? '')?.[1];
    assert.ok(queueId, `queued: ${sent.data}`);
    const delivery = await waitFor(async () => (await postfix.deliveries()).find((candidate) => candidate.queueId === queueId), `delivery of ${queueId}`);
    const [receivedSpf] = headerFields(delivery.data, 'Received-SPF');
    assert.ok(receivedSpf, 'Received-SPF');
    const spf = parseReceivedSpf(receivedSpf);
    assert.deepEqual([spf.result, spf.pairs['client-ip'], spf.pairs['envelope-from']], ['pass', CLIENT, 'carol@pass.example']);
    const results = headerFields(delivery.data, 'Authentication-Results').map((field) => parseAuthenticationResults(field));
    assert.deepEqual(results.map((result) => result.authservId), [AUTHSERV_ID, 'other.example'], 'ours on top, the foreign one kept, the forged one gone');
    assert.deepEqual(results[0]!.resinfos.map((resinfo) => `${resinfo.method}=${resinfo.result}`), ['spf=pass', 'dkim=none', 'dmarc=none', 'arc=none']);
    assert.doesNotMatch(delivery.data.toString('latin1'), /bank\.example/);
  });
});

// sello as a milter for a real Sendmail 8.17 (Debian's sendmail-bin, run by
// test/helpers/sendmail.ts), with the shipped config/sendmail/sello.mc included in the test
// sendmail.mc as it is (only the port replaced), built into sendmail.cf with m4. Sendmail relays
// everything to a real Exim, whose DKIM verifier and dkimpy check what arrives.
// Outbound: mail from a client in sello's trustedNetworks (127.0.0.1, as Sendmail's own MSP
// submits) leaves signed. Inbound (client 127.0.0.2): an SPF fail is refused at RCPT with the
// engine's 550 5.7.23; accepted mail carries Received-SPF and sello's Authentication-Results.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startSello, type RunningSello } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { verifyWithDkimpy } from '../helpers/dkimpy.ts';
import type { DnsServer } from '../helpers/dns-server.ts';
import { eximDkimResults, startExim, withoutEximFields, type Exim } from '../helpers/exim.ts';
import { parseAuthenticationResults, parseReceivedSpf } from '../helpers/header-parsers.ts';
import { startPort53DnsServer } from '../helpers/mta-harness.ts';
import { checkSendmail, startSendmail, type Sendmail } from '../helpers/sendmail.ts';
import { makeKeys } from '../helpers/sello.ts';
import { sendMail } from '../helpers/smtp-dialog.ts';
import { checkDkimpy, checkExim, freePort, removeTempDir, suiteOptions } from '../helpers/tools.ts';

const ROOT = path.join(import.meta.dirname, '../..');
const CLIENT = '127.0.0.2';
const AUTHSERV_ID = 'sello.test';
const DATE = 'Fri, 04 Dec 2026 10:00:00 +0000';

/** The shipped snippet with sello's port. */
async function shippedSelloMc(port: number): Promise<string> {
  const text = await readFile(path.join(ROOT, 'config/sendmail/sello.mc'), 'utf8');
  assert.ok(text.includes("INPUT_MAIL_FILTER(`sello', `S=inet:8891@127.0.0.1, F=T')"), 'sello.mc has the INPUT_MAIL_FILTER line of the issue');
  return text.replace('inet:8891@127.0.0.1', `inet:${port}@127.0.0.1`);
}

function message(from: string, to: string, subject: string): Buffer {
  return Buffer.from(`From: ${from}\r\nTo: ${to}\r\nSubject: ${subject}\r\nDate: ${DATE}\r\nMessage-ID: <${subject.replace(/\W+/g, '-')}@client.test>\r\n\r\nHello through Sendmail.\r\n`);
}

function headerFields(data: Buffer, name: string): string[] {
  const header = data.toString('latin1').split('\r\n\r\n')[0] ?? '';
  return header.split(/\r\n(?![ \t])/).filter((line) => line.toLowerCase().startsWith(`${name.toLowerCase()}:`));
}

describe('sello as Sendmail milter (INPUT_MAIL_FILTER)', suiteOptions(checkSendmail(), checkExim(), checkDkimpy()), () => {
  let dns: DnsServer;
  let exim: Exim;
  let sendmail: Sendmail;
  let sello: RunningSello;
  let keysDir: string;

  before(async () => {
    const keys = await makeKeys([{ domain: 'example.org', selector: 'sm', algorithm: 'rsa' }]);
    keysDir = keys.keysDir;
    dns = await startPort53DnsServer({
      ...Object.fromEntries([...keys.records].map(([name, value]) => [name, { TXT: [value] }])),
      'pass.example': { TXT: ['v=spf1 ip4:127.0.0.2 -all'] },
      'fail.example': { TXT: ['v=spf1 ip4:192.0.2.1 -all'] },
    });
    exim = await startExim({ dnsServer: dns, localDomains: ['example.net', 'remote.example'] });
    const milterPort = await freePort('127.0.0.1');
    sello = await startSello(
      parseConfig({
        hostname: AUTHSERV_ID,
        listeners: [{ name: 'milter', role: 'milter', listen: `inet:127.0.0.1:${milterPort}`, trustedNetworks: ['127.0.0.1/32'] }],
        signing: { keysDir, domains: { 'example.org': 'sm' } },
        dns: { servers: [dns.address], timeout: '2s' },
      }),
      silentLogger(),
    );
    sendmail = await startSendmail({ dnsServer: dns, smartHostPort: exim.port, relayDomains: ['example.net'], mc: await shippedSelloMc(milterPort) });
  });
  after(async () => {
    await sendmail?.close();
    await sello?.close();
    await exim?.close();
    await dns?.close();
    if (keysDir) await removeTempDir(keysDir);
  });

  async function deliveredAtExim(subject: string): Promise<Buffer> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const found = (await exim.messages()).find((data) => data.toString('latin1').includes(`Subject: ${subject}\r\n`));
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`no Exim delivery of "${subject}"`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }

  test('outbound from a trusted client leaves Sendmail signed; Exim and dkimpy verify', async () => {
    const sent = await sendMail(sendmail.port, { from: 'alice@example.org', to: ['bob@remote.example'], data: message('Alice <alice@example.org>', 'bob@remote.example', 'sendmail outbound') }, { localAddress: '127.0.0.1' });
    assert.match(sent.data ?? '', /^250 2\.0\.0 /, JSON.stringify(sent));
    const delivered = await deliveredAtExim('sendmail outbound');
    assert.deepEqual(eximDkimResults(delivered).map((result) => `${result.domain}/${result.selector}: ${result.status}`), ['example.org/sm: pass']);
    const byDkimpy = await verifyWithDkimpy(withoutEximFields(delivered), dns);
    assert.deepEqual(byDkimpy.signatures.map((signature) => `${signature.domain}/${signature.selector}: ${signature.ok ? 'ok' : signature.error}`), ['example.org/sm: ok']);
  });

  test('SPF fail from the client is refused at RCPT with the engine\'s 550 5.7.23 reply', async () => {
    const sent = await sendMail(sendmail.port, { from: 'mallory@fail.example', to: ['bob@example.net'], data: message('mallory@fail.example', 'bob@example.net', 'sendmail spf fail') }, { localAddress: CLIENT });
    assert.match(sent.mail, /^250/);
    // Sendmail puts the recipient ("<address>... ") in front of the text of every RCPT reply, a
    // milter's too; code, enhanced code and text are the engine's.
    assert.deepEqual(sent.rcpt, ['550 5.7.23 <bob@example.net>... [SPF] 127.0.0.2 is not allowed to send mail from fail.example']);
  });

  test('inbound: Received-SPF and Authentication-Results added', async () => {
    const sent = await sendMail(sendmail.port, { from: 'carol@pass.example', to: ['bob@example.net'], data: message('Carol <carol@pass.example>', 'bob@example.net', 'sendmail inbound') }, { localAddress: CLIENT, helo: 'client.test' });
    assert.match(sent.data ?? '', /^250 2\.0\.0 /, JSON.stringify(sent));
    const delivered = withoutEximFields(await deliveredAtExim('sendmail inbound'));
    const [receivedSpf] = headerFields(delivered, 'Received-SPF');
    assert.ok(receivedSpf, 'Received-SPF');
    const spf = parseReceivedSpf(receivedSpf);
    assert.deepEqual([spf.result, spf.pairs['client-ip'], spf.pairs['envelope-from']], ['pass', CLIENT, 'carol@pass.example']);
    const results = headerFields(delivered, 'Authentication-Results').map((field) => parseAuthenticationResults(field));
    assert.deepEqual(results.map((result) => result.authservId), [AUTHSERV_ID]);
    assert.deepEqual(results[0]!.resinfos.map((resinfo) => `${resinfo.method}=${resinfo.result}`), ['spf=pass', 'dkim=none', 'dmarc=none', 'arc=none']);
  });
});

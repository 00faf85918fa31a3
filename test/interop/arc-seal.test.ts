// sello's ARC sets (inbound.arc.seal) checked by an independent validator: dkimpy's arc_verify
// (Debian python3-dkim) on the message the sink received, looking keys up in a real DNS server on
// loopback. sello runs in-process with an mx listener and a filter that verifies and signs; an
// earlier hop's set is made by mailauth's sealMessage (dkimpy's arc_sign needs python3-authres).
// Gated on dkimpy like the other dkimpy tests: skipped loudly on a workstation, failing under CI.

import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { sealMessage } from 'mailauth';
import { startSello, type RunningSello } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { generateDkimKey } from '../helpers/dkim-keys.ts';
import { arcVerifyWithDkimpy, verifyWithDkimpy } from '../helpers/dkimpy.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { makeKeys } from '../helpers/sello.ts';
import { SmtpDialog, sendMail } from '../helpers/smtp-dialog.ts';
import { startSink, type Sink } from '../helpers/smtp-sink.ts';
import { checkDkimpy, suiteOptions } from '../helpers/tools.ts';

const earlierHop = generateDkimKey('rsa-sha256');

const message = (subject: string) =>
  Buffer.from(`From: Alice <alice@pass.example>\r\nTo: bob@example.net\r\nSubject: ${subject}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <${subject}@pass.example>\r\n\r\nHello,\r\nforwarded along.\r\n`);

async function sealedByEarlierHop(data: Buffer): Promise<Buffer> {
  const set = await sealMessage(data, {
    signingDomain: 'forwarder.example',
    selector: 'hop1',
    privateKey: earlierHop.privateKeyPem,
    authResults: 'forwarder.example; spf=pass smtp.mailfrom=alice@pass.example',
    cv: 'none',
  });
  assert.ok(set.length > 0);
  return Buffer.concat([set, data]);
}

const sets = (verdict: Awaited<ReturnType<typeof arcVerifyWithDkimpy>>) =>
  verdict.sets.map(({ instance, cv, asValid, amsValid, domain, selector }) => `${instance} cv=${cv} as=${asValid} ams=${amsValid} ${selector}._domainkey.${domain}`);

describe('ARC sets sealed by sello validate with dkimpy', suiteOptions(checkDkimpy()), () => {
  let dns: DnsServer;
  let sink: Sink;
  let sello: RunningSello;
  let keysDir: string;

  before(async () => {
    const keys = await makeKeys([
      { domain: 'sello.example', selector: 'arc1', algorithm: 'rsa' },
      { domain: 'pass.example', selector: 'k1', algorithm: 'rsa' },
    ]);
    keysDir = keys.keysDir;
    const zone: Record<string, unknown> = {
      'pass.example': { TXT: ['v=spf1 ip4:127.0.0.2 -all'] },
      'hop1._domainkey.forwarder.example': { TXT: [earlierHop.record] },
    };
    for (const [name, value] of keys.records) zone[name] = { TXT: [value] };
    dns = await startDnsServer(zone as never);
    sink = await startSink();
    sello = await startSello(
      parseConfig({
        hostname: 'mx.sello.test',
        listeners: [
          { name: 'mx', role: 'mx', listen: '127.0.0.1:0', greetingDelay: 0 },
          { name: 'filter', role: 'filter', listen: '127.0.0.1:0', verify: true, sign: true, xforwardPeers: ['127.0.0.1'] },
        ],
        relay: { target: sink.url, starttls: 'never' },
        inbound: { localDomains: ['example.net'], arc: { seal: { domain: 'sello.example', selector: 'arc1' } } },
        dns: { servers: [dns.address], timeout: '500ms' },
        signing: { keysDir, domains: { 'pass.example': 'k1' } },
      }),
      silentLogger(),
    );
  });

  after(async () => {
    await sello?.close();
    await sink?.close();
    await dns?.close();
    if (keysDir) await rm(keysDir, { recursive: true, force: true });
  });

  async function throughMx(data: Buffer): Promise<Buffer> {
    const before = sink.messages.length;
    const sent = await sendMail(sello.addresses.get('mx')!.port, { from: 'alice@pass.example', to: ['bob@example.net'], data }, { localAddress: '127.0.0.2' });
    assert.match(sent.data ?? '', /^250 /);
    assert.equal(sink.messages.length, before + 1);
    return sink.messages.at(-1)!.data;
  }

  test('mx, no chain: sello\'s i=1 set passes dkimpy; a changed body makes it fail (the validator can say no)', async () => {
    const delivered = await throughMx(message('first-hop'));
    const verdict = await arcVerifyWithDkimpy(delivered, dns);
    assert.deepEqual({ cv: verdict.cv, reason: verdict.reason, sets: sets(verdict) }, { cv: 'pass', reason: 'success', sets: ['1 cv=none as=true ams=true arc1._domainkey.sello.example'] });
    const altered = Buffer.from(delivered.toString('latin1').replace('forwarded along', 'forwarded elsewhere'), 'latin1');
    const refused = await arcVerifyWithDkimpy(altered, dns);
    assert.equal(refused.cv, 'fail');
    assert.match(refused.reason, /ARC-Message-Signature did not validate/);
  });

  test('mx, a valid chain from an earlier hop: sello adds i=2 cv=pass and dkimpy validates both sets', async () => {
    const received = await sealedByEarlierHop(message('second-hop'));
    assert.equal((await arcVerifyWithDkimpy(received, dns)).cv, 'pass', 'the earlier hop\'s chain is valid on its own');
    const verdict = await arcVerifyWithDkimpy(await throughMx(received), dns);
    assert.deepEqual(
      { cv: verdict.cv, sets: sets(verdict) },
      { cv: 'pass', sets: ['2 cv=pass as=true ams=true arc1._domainkey.sello.example', '1 cv=none as=true ams=true hop1._domainkey.forwarder.example'] },
    );
  });

  test('a filter that verifies and signs: dkimpy validates the ARC chain and the DKIM signature under it', async () => {
    const dialog = await SmtpDialog.connect(sello.addresses.get('filter')!.port);
    await dialog.command('EHLO postfix.test');
    assert.equal(await dialog.command('XFORWARD ADDR=127.0.0.2 HELO=client.test PROTO=ESMTP'), '250 OK');
    await dialog.command('MAIL FROM:<alice@pass.example>');
    await dialog.command('RCPT TO:<bob@example.net>');
    assert.match(await dialog.sendData(message('filtered')), /^250 /);
    await dialog.close();
    const delivered = sink.messages.at(-1)!.data;
    assert.match(delivered.toString('latin1'), /^ARC-Seal: /);
    const verdict = await arcVerifyWithDkimpy(delivered, dns);
    assert.deepEqual({ cv: verdict.cv, sets: sets(verdict) }, { cv: 'pass', sets: ['1 cv=none as=true ams=true arc1._domainkey.sello.example'] });
    const dkim = await verifyWithDkimpy(delivered, dns);
    assert.deepEqual(dkim.signatures.map(({ domain, selector, ok, error }) => ({ domain, selector, ok, error })), [{ domain: 'pass.example', selector: 'k1', ok: true, error: undefined }]);
  });
});

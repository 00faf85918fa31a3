// Topology 2 (PRODUCT.md §1): sello as Exim's signing content filter, with the shipped snippets
// config/exim/*-content-filter.conf included verbatim into a real Exim's configuration.
// A client submits to Exim; Exim's sello_filter router hands remote mail to sello's filter
// listener; sello signs and re-injects on Exim's second port; Exim delivers ("to the Internet":
// the harness keeps it in its maildir). The delivered copy must verify at Exim and dkimpy.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startSello, type RunningSello } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { verifyWithDkimpy } from '../helpers/dkimpy.ts';
import { eximDkimResults, startExim, withoutEximFields, type Exim } from '../helpers/exim.ts';
import { makeKeys } from '../helpers/sello.ts';
import { SmtpDialog, sendMail } from '../helpers/smtp-dialog.ts';
import { checkDkimpy, checkExim, freePort, suiteOptions } from '../helpers/tools.ts';

const snippets = path.join(import.meta.dirname, '../../config/exim');
const message = (from: string, to: string) =>
  Buffer.from(`From: ${from}\r\nTo: ${to}\r\nSubject: through the filter\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <cf@example.com>\r\n\r\nSigned by sello on the way out.\r\n`);

describe('topology 2: sello as Exim content filter', suiteOptions(checkExim(), checkDkimpy()), () => {
  let exim: Exim;
  let sello: RunningSello;
  let filterPort: number;

  before(async () => {
    const { keysDir, records } = await makeKeys([{ domain: 'example.com', selector: 's1', algorithm: 'rsa' }]);
    filterPort = await freePort();
    const reinjectPort = await freePort();
    exim = await startExim({
      zone: Object.fromEntries([...records].map(([name, value]) => [name, { TXT: [value] }])),
      localDomains: ['example.net'],
      extraPorts: [reinjectPort],
      mainConfig: [`SELLO_FILTER_PORT = ${filterPort}`, `SELLO_REINJECT_PORT = ${reinjectPort}`, `.include ${snippets}/main-content-filter.conf`],
      routers: [`.include ${snippets}/router-content-filter.conf`],
      transports: [`.include ${snippets}/transport-content-filter.conf`],
      users: { alice: 'wonderland' },
      // Debian's default relay_from_hosts: the local host, which is where sello re-injects from.
      relayFromHosts: ['127.0.0.1'],
      captureRemote: true,
    });
    sello = await startSello(
      parseConfig({
        hostname: 'sello.test',
        listeners: [{ name: 'filter', role: 'filter', listen: `127.0.0.1:${filterPort}` }],
        relay: { target: `smtp://127.0.0.1:${reinjectPort}`, starttls: 'never' },
        signing: { keysDir, domains: { 'example.com': 's1' } },
      }),
      silentLogger(),
    );
  });
  after(async () => {
    await sello?.close();
    await exim?.close();
  });

  test('an authenticated client\'s mail to a remote domain leaves Exim DKIM-signed by sello', async () => {
    await exim.clearMessages();
    const dialog = await SmtpDialog.connect(exim.port, { localAddress: '127.0.0.2' });
    await dialog.command('EHLO client.test');
    assert.match(await dialog.command(`AUTH PLAIN ${Buffer.from('\0alice\0wonderland').toString('base64')}`), /^235 /);
    assert.match(await dialog.command('MAIL FROM:<alice@example.com>'), /^250 /);
    assert.match(await dialog.command('RCPT TO:<bob@remote.example>'), /^250 /);
    assert.match(await dialog.sendData(message('Alice <alice@example.com>', 'bob@remote.example')), /^250 /);
    await dialog.close();
    const [delivered] = await exim.waitForMessages(1, 15_000);
    const deliveries = await exim.deliveries();
    assert.equal(deliveries[0]?.recipient, 'bob@remote.example');
    assert.equal(deliveries[0]?.clientAddress, '127.0.0.1', 'the copy delivered came back through sello');
    assert.deepEqual(eximDkimResults(delivered!).map((r) => [r.domain, r.selector, r.status]), [['example.com', 's1', 'pass']]);
    const byDkimpy = await verifyWithDkimpy(withoutEximFields(delivered!), exim.dns);
    assert.deepEqual(byDkimpy.signatures.map((s) => s.ok), [true]);
    assert.match(await exim.mainlog(), /R=sello_filter T=sello_filter_smtp/, 'Exim routed it through the snippet\'s router and transport');
  });

  test('local mail is not filtered (only remote domains go through sello)', async () => {
    await exim.clearMessages();
    const sent = await sendMail(exim.port, { from: 'carol@example.net', to: ['dave@example.net'], data: message('carol@example.net', 'dave@example.net') }, { localAddress: '127.0.0.2' });
    assert.match(sent.data ?? '', /^250 /);
    const [delivered] = await exim.waitForMessages(1);
    assert.equal(eximDkimResults(delivered!).length, 0);
    assert.doesNotMatch(delivered!.toString('latin1'), /DKIM-Signature:/);
  });

  test('no open relay: unauthenticated mail to a remote domain is refused by Exim, and sello\'s filter refuses other loopback clients', async () => {
    const viaExim = await sendMail(exim.port, { from: 'mallory@example.com', to: ['victim@remote.example'], data: message('mallory@example.com', 'victim@remote.example') }, { localAddress: '127.0.0.2' });
    assert.equal(viaExim.rcpt[0], '550 5.7.1 relay not permitted');
    const viaFilter = await sendMail(filterPort, { from: 'mallory@example.com', to: ['victim@remote.example'], data: message('mallory@example.com', 'victim@remote.example') }, { localAddress: '127.0.0.2' });
    assert.equal(viaFilter.mail, '550 5.7.1 Relaying denied');
  });
});

// The real client, end to end in-process (PRODUCT.md §2, §3): a filter listener believes
// XFORWARD/XCLIENT only from its configured peers, and the relay passes the client on to a real
// downstream SMTP server (smtp-server trusting XFORWARD/XCLIENT, recording what it was told).
// Peers connect from 127.0.0.1 (listed) or 127.0.0.2 (not listed).

import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { startDnsServer } from '../helpers/dns-server.ts';
import { SmtpDialog, sendMail } from '../helpers/smtp-dialog.ts';
import { startSink, type SinkOptions } from '../helpers/smtp-sink.ts';
import { startTestSello } from '../helpers/sello.ts';

const message = 'From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: hi\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <f@x>\r\n\r\nHi.\r\n';

async function setup(t: TestContext, forward: string, sinkOptions: SinkOptions) {
  const sink = await startSink(sinkOptions);
  t.after(() => sink.close());
  const sello = await startTestSello(t, {
    keys: [{ domain: 'example.com', selector: 'rsa1', algorithm: 'rsa' }],
    config: {
      listeners: [{ name: 'filter', role: 'filter', listen: '127.0.0.1:0', xforwardPeers: ['127.0.0.1'], trustedNetworks: ['127.0.0.0/8'] }],
      relay: { target: sink.url, starttls: 'never', forward },
    },
  });
  return { sink, port: sello.port('filter') };
}

/** One transaction on an open dialog; returns the reply to the final dot. */
async function transaction(dialog: SmtpDialog): Promise<string> {
  assert.match(await dialog.command('MAIL FROM:<alice@example.com>'), /^250 /);
  assert.match(await dialog.command('RCPT TO:<bob@example.net>'), /^250 /);
  return dialog.sendData(message);
}

test('filter: XFORWARD and XCLIENT from a peer not in xforwardPeers are neither offered nor accepted (550)', async (t) => {
  const { port } = await setup(t, 'none', {});
  const untrusted = await SmtpDialog.connect(port, { localAddress: '127.0.0.2' });
  const ehlo = await untrusted.command('EHLO mta.test');
  assert.doesNotMatch(ehlo, /XFORWARD|XCLIENT/);
  assert.equal(await untrusted.command('XFORWARD ADDR=192.0.2.9'), '550 5.7.1 Error: Not allowed');
  assert.equal(await untrusted.command('XCLIENT ADDR=192.0.2.9'), '550 5.7.1 Error: Not allowed');
  await untrusted.close();

  const trusted = await SmtpDialog.connect(port, { localAddress: '127.0.0.1' });
  const offered = await trusted.command('EHLO mta.test');
  assert.match(offered, /^250[- ]XCLIENT NAME ADDR PORT PROTO HELO LOGIN$/m);
  assert.match(offered, /^250[- ]XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE$/m);
  assert.equal(await trusted.command('XFORWARD ADDR=192.0.2.9'), '250 OK');
  await trusted.close();
});

test('Postfix before-queue chain: XFORWARD from the trusted peer → relay forward: xforward → the MTA gets ADDR=192.0.2.9', async (t) => {
  const { sink, port } = await setup(t, 'xforward', { useXForward: true });
  const dialog = await SmtpDialog.connect(port, { localAddress: '127.0.0.1' });
  await dialog.command('EHLO mta.test');
  assert.equal(await dialog.command('XFORWARD NAME=client.example.org ADDR=192.0.2.9 PORT=40123 PROTO=ESMTP HELO=client.example.org'), '250 OK');
  assert.equal(await dialog.command('XFORWARD IDENT=4Xb2Kq1z0Mz9 SOURCE=REMOTE'), '250 OK');
  assert.equal(await transaction(dialog), '250 2.0.0 OK: queued as SINK1');
  await dialog.close();
  const received = sink.messages[0]!.client;
  assert.deepEqual(
    { ADDR: received.xForward.ADDR, PORT: received.xForward.PORT, NAME: received.xForward.NAME, HELO: received.xForward.HELO, PROTO: received.xForward.PROTO, IDENT: received.xForward.IDENT, SOURCE: received.xForward.SOURCE },
    { ADDR: '192.0.2.9', PORT: 40123, NAME: 'client.example.org', HELO: 'client.example.org', PROTO: 'ESMTP', IDENT: '4Xb2Kq1z0Mz9', SOURCE: 'REMOTE' },
  );
  assert.equal(received.remoteAddress, '192.0.2.9', 'the downstream logs the real client');
  assert.match(sink.messages[0]!.data.toString(), /^DKIM-Signature: /, 'signing is unchanged');
});

test('without XFORWARD from the peer, the relay forwards the peer itself (the socket client)', async (t) => {
  const { sink, port } = await setup(t, 'xforward', { useXForward: true });
  const sent = await sendMail(port, { from: 'alice@example.com', to: ['bob@example.net'], data: message }, { localAddress: '127.0.0.1', helo: 'mta.test' });
  assert.equal(sent.data, '250 2.0.0 OK: queued as SINK1');
  assert.equal(sink.messages[0]!.client.xForward.ADDR, '127.0.0.1');
  assert.equal(sink.messages[0]!.client.xForward.HELO, 'mta.test');
});

test('forward: xclient, and the peer forwards another client for its next message: a new downstream session, each under its own client', async (t) => {
  const { sink, port } = await setup(t, 'xclient', { useXClient: true });
  const dialog = await SmtpDialog.connect(port, { localAddress: '127.0.0.1' });
  await dialog.command('EHLO mta.test');
  assert.equal(await dialog.command('XFORWARD ADDR=192.0.2.9 PORT=40123 HELO=one.example.org'), '250 OK');
  assert.equal(await transaction(dialog), '250 2.0.0 OK: queued as SINK1');
  assert.equal(await dialog.command('XFORWARD ADDR=192.0.2.10 PORT=40124 HELO=two.example.org'), '250 OK');
  assert.equal(await transaction(dialog), '250 2.0.0 OK: queued as SINK2');
  assert.equal(await transaction(dialog), '250 2.0.0 OK: queued as SINK3');
  await dialog.close();
  const [first, second, third] = sink.messages.map((m) => m.client);
  assert.deepEqual([first!.remoteAddress, first!.xClient.HELO], ['192.0.2.9', 'one.example.org']);
  assert.deepEqual([second!.remoteAddress, second!.xClient.HELO], ['192.0.2.10', 'two.example.org']);
  assert.notEqual(first!.session, second!.session, 'XCLIENT is per connection: a new one for the new client');
  assert.equal(third!.session, second!.session, 'the same client keeps its downstream session');
});

test('mx: localDomains is left to the MTA only when it judges the real client (xclient, proxy), not with xforward', async (t) => {
  const dns = await startDnsServer({ 'pass.example': { TXT: ['v=spf1 ip4:127.0.0.2 -all'] } } as never);
  t.after(() => dns.close());
  for (const [forward, expected] of [
    ['xclient', '250 Accepted'],
    ['xforward', '550 5.7.1 Relaying denied'],
  ] as const) {
    const sink = await startSink({ useXClient: true, useXForward: true });
    t.after(() => sink.close());
    const sello = await startTestSello(t, {
      config: {
        listeners: [{ name: 'mx', role: 'mx', listen: '127.0.0.1:0', greetingDelay: 0 }],
        relay: { target: sink.url, starttls: 'never', forward },
        inbound: forward === 'xforward' ? { localDomains: ['example.net'] } : {},
        dns: { servers: [dns.address], timeout: '500ms' },
      },
    });
    const sent = await sendMail(sello.port('mx'), { from: 'alice@pass.example', to: ['someone@elsewhere.example'], data: message }, { localAddress: '127.0.0.2' });
    assert.deepEqual(sent.rcpt, [expected], forward);
    if (forward === 'xclient') assert.equal(sink.messages[0]?.client.remoteAddress, '127.0.0.2', 'the MTA saw (and judged) the real client');
  }
});

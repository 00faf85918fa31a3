// smtp:// and lmtp:// targets: URL parsing, open/probe, closed tracking (src/relay/smtp-target.ts).
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { ConfigError, RelayError } from '../../../src/errors.ts';
import { SmtpTarget, parseSmtpUrl } from '../../../src/relay/smtp-target.ts';
import type { ClientIdentity, SmtpRelayConfig } from '../../../src/relay/types.ts';
import { greetAndHello, startFakeMta, unusedPort } from './fake-mta.ts';

const client: ClientIdentity = { address: '192.0.2.7', port: 40000, helo: 'client.test', protocol: 'ESMTP', localAddress: '127.0.0.1', localPort: 25 };
const config = (url: string): SmtpRelayConfig => ({
  url,
  starttls: 'never',
  tlsRejectUnauthorized: false,
  helo: 'sello.test',
  timeouts: { connectMs: 1000, commandMs: 1000, dataMs: 1000 },
});

test('URL parsing: schemes, default ports, IPv6 literals', () => {
  assert.deepEqual(parseSmtpUrl('smtp://127.0.0.1:2525'), { protocol: 'smtp', host: '127.0.0.1', port: 2525 });
  assert.deepEqual(parseSmtpUrl('smtp://mta.example.com'), { protocol: 'smtp', host: 'mta.example.com', port: 25 });
  assert.deepEqual(parseSmtpUrl('lmtp://127.0.0.1'), { protocol: 'lmtp', host: '127.0.0.1', port: 24 });
  assert.deepEqual(parseSmtpUrl('smtp://[::1]:10026'), { protocol: 'smtp', host: '::1', port: 10026 });
  assert.deepEqual(parseSmtpUrl('lmtp://[::1]'), { protocol: 'lmtp', host: '::1', port: 24 });
  assert.deepEqual(parseSmtpUrl('smtp://127.0.0.1:2525/'), { protocol: 'smtp', host: '127.0.0.1', port: 2525 });
  assert.equal(new SmtpTarget(config('smtp://[::1]:2525')).description, 'smtp://[::1]:2525');
  assert.equal(new SmtpTarget(config('lmtp://localhost')).description, 'lmtp://localhost:24');
  assert.equal(new SmtpTarget(config('smtp://localhost')).supportsAuth, true);
  assert.equal(new SmtpTarget(config('lmtp://localhost')).supportsAuth, false);
});

test('URL parsing: unusable URLs are config errors naming the config key', () => {
  for (const url of ['smtp://', 'smtp://user:pw@host:25', 'smtp://host:25/path', 'smtp://host:25?x=1', 'http://host', 'smtp://host:99999', 'not a url']) {
    assert.throws(
      () => parseSmtpUrl(url, 'listeners[1].relay.target'),
      (error: unknown) => error instanceof ConfigError && error.path === 'listeners[1].relay.target',
      url,
    );
  }
});

test('open() returns a greeted session; closed turns true when the MTA drops the connection', async () => {
  const mta = await startFakeMta(async (peer) => {
    const hello = await greetAndHello(peer, ['8BITMIME']);
    assert.equal(hello, 'EHLO sello.test');
    await peer.readLine();
    peer.send('250 OK\r\n');
    peer.close();
  });
  try {
    const target = new SmtpTarget(config(`smtp://127.0.0.1:${mta.port}`));
    const session = await target.open(client);
    assert.equal(session.closed, false);
    assert.equal((await session.mailFrom('a@example.com', {})).code, 250);
    await mta.scriptsDone();
    for (let waited = 0; !session.closed && waited < 1000; waited += 10) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(session.closed, true);
    await session.close();
  } finally {
    await mta.close();
  }
});

test('probe(): connect, greeting, QUIT; unreachable when nothing listens', async () => {
  const mta = await startFakeMta(async (peer) => {
    peer.send('220 fake.test ESMTP\r\n');
    assert.equal(await peer.readLine(), 'QUIT');
    peer.send('221 bye\r\n');
    peer.close();
  });
  try {
    await new SmtpTarget(config(`smtp://127.0.0.1:${mta.port}`)).probe();
    await mta.scriptsDone();
    assert.equal(mta.peers.length, 1);
  } finally {
    await mta.close();
  }
  const port = await unusedPort();
  await assert.rejects(
    new SmtpTarget(config(`smtp://127.0.0.1:${port}`)).probe(),
    (error: unknown) => error instanceof RelayError && error.kind === 'unreachable',
  );
});

test('probe() with XCLIENT or XFORWARD: EHLO, and the command must be offered with ADDR, as open() needs', async () => {
  const offering = (keywords: readonly string[]) =>
    startFakeMta(async (peer) => {
      assert.equal(await greetAndHello(peer, keywords), 'EHLO sello.test');
      assert.equal(await peer.readLine(), 'QUIT');
      peer.send('221 bye\r\n');
      peer.close();
    });
  const cases: [SmtpRelayConfig['forward'], readonly string[], string | undefined][] = [
    ['xclient', ['XCLIENT NAME ADDR PORT PROTO HELO LOGIN'], undefined],
    ['xforward', ['XFORWARD NAME ADDR PROTO HELO SOURCE'], undefined],
    ['xclient', ['8BITMIME'], 'does not offer XCLIENT, which relay.forward: xclient needs (Postfix: is sello\'s address in smtpd_authorized_xclient_hosts?)'],
    ['xforward', ['XCLIENT NAME ADDR'], 'does not offer XFORWARD, which relay.forward: xforward needs (Postfix: is sello\'s address in smtpd_authorized_xforward_hosts?)'],
    ['xclient', ['XCLIENT NAME HELO'], 'does not offer XCLIENT ADDR, which relay.forward: xclient needs (Postfix: is sello\'s address in smtpd_authorized_xclient_hosts?)'],
  ];
  for (const [forward, keywords, problem] of cases) {
    const mta = await offering(keywords);
    try {
      const url = `smtp://127.0.0.1:${mta.port}`;
      const probe = new SmtpTarget({ ...config(url), forward }).probe();
      if (problem === undefined) await probe;
      else await assert.rejects(probe, (error: unknown) => error instanceof RelayError && error.kind === 'protocol' && error.message === `${url} ${problem}`);
      await mta.scriptsDone();
    } finally {
      await mta.close();
    }
  }
});

test('IPv6 loopback target', async (t) => {
  const server = net.createServer((socket) => {
    socket.write('220 v6.test ESMTP\r\n');
    socket.on('data', (data) => {
      if (data.toString().startsWith('QUIT')) socket.end('221 bye\r\n');
      else socket.write('250 v6.test\r\n');
    });
  });
  const listening = await new Promise<boolean>((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(0, '::1', () => resolve(true));
  });
  if (!listening) {
    // Like every environment-dependent test: loud skip on a workstation, a failure in CI.
    assert.ok(!process.env.CI, 'CI machines must have IPv6 loopback (::1)');
    t.skip('*** SKIPPED: this machine has no ::1 ***');
    return;
  }
  try {
    const { port } = server.address() as net.AddressInfo;
    const target = new SmtpTarget(config(`smtp://[::1]:${port}`));
    const session = await target.open(client);
    await session.close();
    await target.probe();
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

// relay.forward on the wire against a scripted MTA (src/relay/smtp-target.ts, smtp-client.ts):
// where each identity step goes in the dialogue, the XCLIENT re-EHLO, XFORWARD before every
// MAIL, PROXY headers before the greeting, and what happens when the MTA does not play along.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RelayError } from '../../../src/errors.ts';
import { SmtpTarget } from '../../../src/relay/smtp-target.ts';
import type { ClientIdentity, ForwardMode, SmtpRelayConfig } from '../../../src/relay/types.ts';
import { greetAndHello, startFakeMta, type ScriptedPeer } from './fake-mta.ts';

const client: ClientIdentity = {
  address: '192.0.2.9',
  port: 40123,
  helo: 'client.example.org',
  protocol: 'ESMTP',
  localAddress: '127.0.0.1',
  localPort: 10025,
};

const target = (port: number, forward: ForwardMode) =>
  new SmtpTarget({
    url: `smtp://127.0.0.1:${port}`,
    starttls: 'never',
    tlsRejectUnauthorized: false,
    helo: 'sello.test',
    forward,
    timeouts: { connectMs: 1000, commandMs: 1000, dataMs: 1000 },
  } satisfies SmtpRelayConfig);

/** Reads the next line and answers it. */
async function expectLine(peer: ScriptedPeer, reply: string): Promise<string | undefined> {
  const line = await peer.readLine();
  peer.send(`${reply}\r\n`);
  return line;
}

test('xclient: EHLO, XCLIENT (answered 220), EHLO again, then AUTH on the new session, then MAIL', async () => {
  const seen: (string | undefined)[] = [];
  const mta = await startFakeMta(async (peer) => {
    seen.push(await greetAndHello(peer, ['XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT', 'AUTH PLAIN']));
    seen.push(await expectLine(peer, '220 fake.test ESMTP'));
    seen.push(await expectLine(peer, '250-fake.test\r\n250 AUTH PLAIN'));
    seen.push(await expectLine(peer, '235 2.7.0 Authentication successful'));
    seen.push(await expectLine(peer, '250 2.1.0 Ok'));
    seen.push(await expectLine(peer, '221 Bye'));
  });
  try {
    const session = await target(mta.port, 'xclient').open(client);
    assert.equal((await session.authenticate({ mechanism: 'PLAIN', username: 'alice', password: 'pw' })).code, 235);
    assert.equal((await session.mailFrom('alice@example.com', {})).code, 250);
    await session.close();
    await mta.scriptsDone();
    assert.deepEqual(seen, [
      'EHLO sello.test',
      'XCLIENT NAME=[UNAVAILABLE] ADDR=192.0.2.9 PORT=40123 PROTO=ESMTP HELO=client.example.org DESTADDR=127.0.0.1 DESTPORT=10025',
      'EHLO sello.test',
      `AUTH PLAIN ${Buffer.from('\0alice\0pw').toString('base64')}`,
      'MAIL FROM:<alice@example.com>',
      'QUIT',
    ]);
  } finally {
    await mta.close();
  }
});

test('xclient not advertised (or without ADDR): protocol error naming the missing setting, QUIT, nothing sent', async () => {
  for (const keywords of [['8BITMIME'], ['XCLIENT NAME HELO']]) {
    const lines: (string | undefined)[] = [];
    const mta = await startFakeMta(async (peer) => {
      await greetAndHello(peer, keywords);
      lines.push(await expectLine(peer, '221 Bye'));
    });
    try {
      await assert.rejects(target(mta.port, 'xclient').open(client), (error: unknown) => {
        assert.ok(error instanceof RelayError);
        assert.equal(error.kind, 'protocol');
        assert.equal(error.reply.code, 451);
        assert.equal(error.reply.enhanced, '4.4.0');
        assert.match(error.message, /does not offer XCLIENT.*relay\.forward: xclient.*smtpd_authorized_xclient_hosts/);
        return true;
      });
      await mta.scriptsDone();
      assert.deepEqual(lines, ['QUIT'], `after ${keywords.join(', ')}`);
    } finally {
      await mta.close();
    }
  }
});

test('xclient refused (550, sello not authorised): protocol error with the MTA\'s reply, the session is closed', async () => {
  const mta = await startFakeMta(async (peer) => {
    await greetAndHello(peer, ['XCLIENT NAME ADDR PROTO HELO']);
    await expectLine(peer, '550 5.7.0 Error: insufficient authorization');
    await peer.closedByClient();
  });
  try {
    await assert.rejects(target(mta.port, 'xclient').open(client), (error: unknown) => {
      assert.ok(error instanceof RelayError && error.kind === 'protocol');
      assert.match(error.message, /refused XCLIENT: 550 5\.7\.0 Error: insufficient authorization/);
      return true;
    });
    await mta.scriptsDone();
  } finally {
    await mta.close();
  }
});

test('xforward: sent before every MAIL FROM (Postfix resets it after each transaction), answered 250', async () => {
  const seen: (string | undefined)[] = [];
  const mta = await startFakeMta(async (peer) => {
    seen.push(await greetAndHello(peer, ['XFORWARD NAME ADDR PROTO HELO']));
    seen.push(await expectLine(peer, '250 2.0.0 Ok'));
    seen.push(await expectLine(peer, '250 2.1.0 Ok'));
    seen.push(await expectLine(peer, '250 2.0.0 Ok'));
    seen.push(await expectLine(peer, '250 2.0.0 Ok'));
    seen.push(await expectLine(peer, '250 2.1.0 Ok'));
    seen.push(await expectLine(peer, '221 Bye'));
  });
  try {
    const session = await target(mta.port, 'xforward').open({ ...client, hostname: 'mail.example.org' });
    assert.equal((await session.mailFrom('a@example.com', {})).code, 250);
    await session.reset();
    assert.equal((await session.mailFrom('b@example.com', {})).code, 250);
    await session.close();
    await mta.scriptsDone();
    const xforward = 'XFORWARD NAME=mail.example.org ADDR=192.0.2.9 PROTO=ESMTP HELO=client.example.org';
    assert.deepEqual(seen, ['EHLO sello.test', xforward, 'MAIL FROM:<a@example.com>', 'RSET', xforward, 'MAIL FROM:<b@example.com>', 'QUIT']);
  } finally {
    await mta.close();
  }
});

test('xforward not advertised → protocol error at open; refused → protocol error at MAIL, MAIL never sent', async () => {
  const notOffered = await startFakeMta(async (peer) => {
    await greetAndHello(peer, ['PIPELINING']);
    await expectLine(peer, '221 Bye');
  });
  try {
    await assert.rejects(target(notOffered.port, 'xforward').open(client), /does not offer XFORWARD, which relay\.forward: xforward needs.*smtpd_authorized_xforward_hosts/);
  } finally {
    await notOffered.close();
  }
  const lines: (string | undefined)[] = [];
  const refusing = await startFakeMta(async (peer) => {
    await greetAndHello(peer, ['XFORWARD NAME ADDR PROTO HELO']);
    lines.push(await expectLine(peer, '550 5.7.0 Error: insufficient authorization'));
    await peer.closedByClient();
    lines.push(await peer.readLine());
  });
  try {
    const session = await target(refusing.port, 'xforward').open(client);
    await assert.rejects(session.mailFrom('a@example.com', {}), (error: unknown) => error instanceof RelayError && error.kind === 'protocol' && /refused XFORWARD: 550/.test(error.message));
    assert.equal(session.closed, true);
    await refusing.scriptsDone();
    assert.match(lines[0] ?? '', /^XFORWARD /);
    assert.equal(lines[1], undefined, 'nothing after the refused XFORWARD');
  } finally {
    await refusing.close();
  }
});

for (const [mode, expected] of [
  ['proxy-v1', Buffer.from('PROXY TCP4 192.0.2.9 127.0.0.1 40123 10025\r\n')],
  ['proxy-v2', Buffer.from('0d0a0d0a000d0a515549540a2111000cc00002097f0000019cbb2729', 'hex')],
] as const) {
  test(`${mode}: the header is the first thing on the connection; the MTA greets after reading it`, async () => {
    let header: Buffer | undefined;
    let hello: string | undefined;
    const mta = await startFakeMta(async (peer) => {
      header = await peer.readBytes(expected.length);
      hello = await greetAndHello(peer);
      await expectLine(peer, '221 Bye');
    });
    try {
      const session = await target(mta.port, mode).open(client);
      await session.close();
      await mta.scriptsDone();
      assert.equal(header?.toString('hex'), expected.toString('hex'));
      assert.equal(hello, 'EHLO sello.test');
    } finally {
      await mta.close();
    }
  });

  test(`${mode}: probe() sends the header of an unproxied connection (a hosts_proxy MTA would drop it otherwise)`, async () => {
    const local = mode === 'proxy-v1' ? Buffer.from('PROXY UNKNOWN\r\n') : Buffer.from('0d0a0d0a000d0a515549540a20000000', 'hex');
    let header: Buffer | undefined;
    const mta = await startFakeMta(async (peer) => {
      header = await peer.readBytes(local.length);
      peer.send('220 fake.test ESMTP\r\n');
      await expectLine(peer, '221 Bye');
    });
    try {
      await target(mta.port, mode).probe();
      await mta.scriptsDone();
      assert.equal(header?.toString('hex'), local.toString('hex'));
    } finally {
      await mta.close();
    }
  });
}

test('none: no identity step at all (the wire is unchanged)', async () => {
  const seen: (string | undefined)[] = [];
  const mta = await startFakeMta(async (peer) => {
    seen.push(await greetAndHello(peer, ['XCLIENT NAME ADDR', 'XFORWARD NAME ADDR']));
    seen.push(await expectLine(peer, '250 2.1.0 Ok'));
    seen.push(await expectLine(peer, '221 Bye'));
  });
  try {
    const session = await target(mta.port, 'none').open(client);
    await session.mailFrom('a@example.com', {});
    await session.close();
    await mta.scriptsDone();
    assert.deepEqual(seen, ['EHLO sello.test', 'MAIL FROM:<a@example.com>', 'QUIT']);
  } finally {
    await mta.close();
  }
});

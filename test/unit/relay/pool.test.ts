// Pooled relay connections against a scripted MTA (src/relay/pool.ts, smtp-target.ts): reuse
// with RSET between sessions, XFORWARD per transaction, and every reason to discard a
// connection — the MTA closed it, an error or 421, N transactions, the idle timeout, AUTH — plus
// the forward modes that never pool.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SmtpTarget } from '../../../src/relay/smtp-target.ts';
import type { ClientIdentity, ForwardMode, RelayPoolConfig, SmtpRelayConfig } from '../../../src/relay/types.ts';
import { greetAndHello, startFakeMta, type FakeMta, type ScriptedPeer } from './fake-mta.ts';

const client: ClientIdentity = { address: '192.0.2.9', port: 40123, helo: 'client.example.org', protocol: 'ESMTP', localAddress: '127.0.0.1', localPort: 10025 };
const otherClient: ClientIdentity = { ...client, address: '198.51.100.7', helo: 'other.example.net' };

const poolConfig: RelayPoolConfig = { maxIdle: 4, idleTimeoutMs: 60_000, maxTransactions: 100 };

function target(port: number, pool: Partial<RelayPoolConfig> = {}, forward: ForwardMode = 'none'): SmtpTarget {
  return new SmtpTarget({
    url: `smtp://127.0.0.1:${port}`,
    starttls: 'never',
    tlsRejectUnauthorized: false,
    helo: 'sello.test',
    forward,
    timeouts: { connectMs: 2000, commandMs: 2000, dataMs: 2000 },
    pool: { ...poolConfig, ...pool },
  } satisfies SmtpRelayConfig);
}

/**
 * An MTA that answers every command like a plain SMTP server; `react` may answer a line itself
 * (a reply string) or hang up on it ('drop'). Each connection's lines are kept in `lines`.
 */
async function mta(
  keywords: readonly string[] = ['PIPELINING'],
  react: (line: string, connection: number, peer: ScriptedPeer) => string | 'drop' | undefined = () => undefined,
): Promise<FakeMta & { lines: string[][] }> {
  const lines: string[][] = [];
  const fake = await startFakeMta(async (peer) => {
    const connection = lines.push([]) - 1;
    const seen = lines[connection] as string[];
    seen.push((await greetAndHello(peer, keywords)) ?? '');
    for (;;) {
      const line = await peer.readLine();
      if (line === undefined) return;
      seen.push(line);
      const reaction = react(line, connection, peer);
      if (reaction === 'drop') {
        peer.close();
        return;
      }
      if (reaction !== undefined) peer.send(`${reaction}\r\n`);
      else if (line === 'QUIT') {
        peer.send('221 2.0.0 Bye\r\n');
        peer.socket.end();
        return;
      } else if (line === 'DATA') {
        peer.send('354 go ahead\r\n');
        await peer.readData();
        peer.send('250 2.0.0 Ok: queued as Q1\r\n');
      } else peer.send('250 2.0.0 Ok\r\n');
    }
  });
  return Object.assign(fake, { lines });
}

const message = [Buffer.from('From: a@example.com\r\nSubject: pooled\r\n\r\nbody\r\n')];

/** One complete transaction on a new session from `relay`, then close(). */
async function sendOne(relay: SmtpTarget, identity: ClientIdentity = client): Promise<number> {
  const session = await relay.open(identity);
  try {
    assert.equal((await session.mailFrom('a@example.com', {})).code, 250);
    assert.equal((await session.rcptTo('b@example.net', {})).code, 250);
    return (await session.data(message)).code;
  } finally {
    await session.close();
  }
}

async function eventually(condition: () => boolean, what: string): Promise<void> {
  for (let attempt = 0; attempt < 200 && !condition(); attempt++) await new Promise((resolve) => setTimeout(resolve, 10));
  assert.ok(condition(), what);
}

test('one warm connection serves consecutive client sessions, with RSET between them', async () => {
  const server = await mta();
  const relay = target(server.port);
  try {
    assert.equal(await sendOne(relay), 250);
    assert.equal(await sendOne(relay), 250);
    assert.equal(relay.pool?.idleCount, 1);
    await relay.close();
    await server.scriptsDone();
    assert.equal(server.lines.length, 1, 'one connection');
    assert.deepEqual(server.lines[0], [
      'EHLO sello.test', 'MAIL FROM:<a@example.com>', 'RCPT TO:<b@example.net>', 'DATA', 'RSET',
      'MAIL FROM:<a@example.com>', 'RCPT TO:<b@example.net>', 'DATA', 'RSET', 'QUIT',
    ]);
  } finally {
    await server.close();
  }
});

test('never shared while in use: two open sessions get two connections', async () => {
  const server = await mta();
  const relay = target(server.port);
  try {
    const first = await relay.open(client);
    const second = await relay.open(client);
    assert.equal((await first.mailFrom('a@example.com', {})).code, 250);
    assert.equal((await second.mailFrom('c@example.com', {})).code, 250);
    await Promise.all([first.close(), second.close()]);
    assert.equal(server.lines.length, 2);
    assert.equal(relay.pool?.idleCount, 2);
  } finally {
    await relay.close();
    await server.close();
  }
});

test('xforward: the next client\'s XFORWARD goes before its MAIL FROM on the reused connection', async () => {
  const server = await mta(['XFORWARD NAME ADDR PROTO HELO']);
  const relay = target(server.port, {}, 'xforward');
  try {
    assert.equal(await sendOne(relay, client), 250);
    assert.equal(await sendOne(relay, otherClient), 250);
    await relay.close();
    await server.scriptsDone();
    assert.equal(server.lines.length, 1);
    const commands = (server.lines[0] ?? []).filter((line) => /^(XFORWARD|MAIL|RSET)/.test(line));
    assert.deepEqual(commands, [
      'XFORWARD NAME=[UNAVAILABLE] ADDR=192.0.2.9 PROTO=ESMTP HELO=client.example.org',
      'MAIL FROM:<a@example.com>',
      'RSET',
      'XFORWARD NAME=[UNAVAILABLE] ADDR=198.51.100.7 PROTO=ESMTP HELO=other.example.net',
      'MAIL FROM:<a@example.com>',
      'RSET',
    ]);
  } finally {
    await server.close();
  }
});

test('a pooled connection that the MTA closed while idle is never used for a transaction', async () => {
  // The MTA hangs up right after answering the RSET that put the connection in the pool.
  const server = await mta(undefined, (line, _connection, peer) => {
    if (line !== 'RSET') return undefined;
    peer.send('250 2.0.0 Ok\r\n');
    return 'drop';
  });
  const relay = target(server.port);
  try {
    assert.equal(await sendOne(relay), 250);
    await eventually(() => server.peers[0]?.socket.destroyed === true, 'the MTA closed the first connection');
    await new Promise((resolve) => setTimeout(resolve, 50)); // its FIN reaches sello
    assert.equal(await sendOne(relay), 250);
    assert.equal(server.lines.length, 2, 'a new connection for the second session');
    assert.deepEqual(server.lines[0]?.filter((line) => line.startsWith('MAIL')), ['MAIL FROM:<a@example.com>'], 'one MAIL on the closed connection: the first session\'s');
    assert.deepEqual(server.lines[1]?.filter((line) => line.startsWith('MAIL')), ['MAIL FROM:<a@example.com>']);
  } finally {
    await relay.close();
    await server.close();
  }
});

test('a pooled connection dropped as the next session starts: its MAIL FROM goes out again on a new connection', async () => {
  // The close races the checkout: the MTA hangs up on the reused connection's MAIL FROM
  // without answering it, as if its FIN had crossed the command.
  const server = await mta(undefined, (line, connection) => (connection === 0 && line.startsWith('MAIL') && server.lines[0]?.includes('RSET') ? 'drop' : undefined));
  const relay = target(server.port);
  try {
    assert.equal(await sendOne(relay), 250);
    assert.equal(await sendOne(relay), 250, 'the client never sees the dead connection');
    assert.equal(server.lines.length, 2);
    assert.deepEqual(server.lines[1]?.slice(0, 4), ['EHLO sello.test', 'MAIL FROM:<a@example.com>', 'RCPT TO:<b@example.net>', 'DATA']);
  } finally {
    await relay.close();
    await server.close();
  }
});

test('discarded after a 421, after an error, and never pooled after AUTH', async () => {
  const server = await mta(['AUTH PLAIN'], (line, connection) => {
    if (connection === 0 && line.startsWith('MAIL')) return '421 4.3.0 closing';
    if (line.startsWith('AUTH')) return '235 2.7.0 Ok';
    if (connection === 2 && line.startsWith('RCPT')) return 'garbage';
    return undefined;
  });
  const relay = target(server.port);
  try {
    const refused = await relay.open(client);
    assert.equal((await refused.mailFrom('a@example.com', {})).code, 421);
    await refused.close();
    const authenticated = await relay.open(client);
    assert.equal((await authenticated.authenticate({ mechanism: 'PLAIN', username: 'u', password: 'p' })).code, 235);
    await authenticated.close();
    const broken = await relay.open(client);
    await broken.mailFrom('a@example.com', {});
    await assert.rejects(broken.rcptTo('b@example.net', {}));
    await broken.close();
    assert.equal(relay.pool?.idleCount, 0);
    await server.scriptsDone();
    assert.equal(server.lines.length, 3, 'no connection served two sessions');
    assert.equal(server.lines[0]?.at(-1), 'QUIT');
    assert.equal(server.lines[1]?.at(-1), 'QUIT');
    assert.ok(!server.lines.flat().includes('RSET'), 'none went back to the pool');
  } finally {
    await server.close();
  }
});

test('closed after maxTransactions and after the idle timeout', async () => {
  const server = await mta();
  const relay = target(server.port, { maxTransactions: 2, idleTimeoutMs: 150 });
  try {
    for (let round = 0; round < 3; round++) assert.equal(await sendOne(relay), 250);
    assert.equal(server.lines.length, 2, 'the third transaction needed a new connection');
    assert.equal(server.lines[0]?.at(-1), 'QUIT', 'the first connection retired after two');
    assert.equal(relay.pool?.idleCount, 1);
    await eventually(() => server.lines[1]?.at(-1) === 'QUIT', 'the idle connection is closed after idleTimeout');
    assert.equal(relay.pool?.idleCount, 0);
  } finally {
    await server.close();
  }
});

for (const forward of ['xclient', 'proxy-v1'] as const) {
  test(`${forward}: one connection per client session, QUIT at its end (the connection carries the client)`, async () => {
    const server = await startFakeMta(async (peer) => {
      if (forward === 'proxy-v1') await peer.readLine();
      await greetAndHello(peer, ['XCLIENT NAME ADDR PORT PROTO HELO']);
      if (forward === 'xclient') {
        await peer.readLine();
        peer.send('220 fake.test\r\n');
        await peer.readLine();
        peer.send('250 fake.test\r\n');
      }
      assert.equal(await peer.readLine(), 'QUIT');
      peer.send('221 Bye\r\n');
    });
    const relay = target(server.port, {}, forward);
    try {
      assert.equal(relay.pool, undefined);
      await (await relay.open(client)).close();
      await (await relay.open(client)).close();
      await server.scriptsDone();
      assert.equal(server.peers.length, 2);
    } finally {
      await server.close();
    }
  });
}

// Tests for src/milter/server.ts and connection.ts against a recording fake Engine (the seam of
// pipeline/session.ts): real sockets on loopback, packets built by test/helpers/milter-client.ts.
// What the MTA sees (negotiation, replies, header edits) is asserted byte for byte, what the
// engine sees as plain values; every kind of bad input closes the connection with one log line.

import assert from 'node:assert/strict';
import { describe, test, type TestContext } from 'node:test';
import { parseConfig } from '../../../src/config/load.ts';
import type { SmtpReply } from '../../../src/errors.ts';
import { MilterServer } from '../../../src/milter/server.ts';
import type { ClientFacts, FrontEnd } from '../../../src/pipeline/session.ts';
import { captureLog } from '../../helpers/log.ts';
import { FakeEngine, record } from './fake-engine.ts';
import { milterPacket, mta, MilterTestClient, uint32 } from '../../helpers/milter-client.ts';

async function startMilter(t: TestContext, listener: Record<string, unknown> = {}, limits: Record<string, unknown> = {}) {
  const log = captureLog('info');
  const config = parseConfig({
    listeners: [{ name: 'milter', role: 'milter', listen: 'inet:127.0.0.1:0', trustedNetworks: ['10.0.0.0/8'], ...listener }],
    limits,
  });
  const engine = new FakeEngine({ maxMessageSize: config.limits.maxMessageSize, maxHeaderSize: config.limits.maxHeaderSize });
  const listenerConfig = config.listeners[0]!;
  const frontEnd: FrontEnd = { listener: 'milter', role: 'milter', signs: listenerConfig.sign ?? true, verifies: listenerConfig.verify ?? true, mtaJudgesRelay: true };
  const counted: string[] = [];
  const metrics = {
    connectionOpened: (name: string) => counted.push(`open ${name}`),
    connectionClosed: (name: string) => counted.push(`close ${name}`),
    reply: (name: string, stage: string | undefined, code: number) => counted.push(`reply ${name} ${stage} ${code}`),
  };
  const server = new MilterServer({ config, listener: listenerConfig, engine, frontEnd, logger: log.logger, metrics, maxPacketSize: 2048 });
  const { port } = await server.start();
  t.after(() => server.close());
  const connect = async () => {
    const client = await MilterTestClient.connect(port);
    t.after(() => client.close());
    return client;
  };
  return { engine, log, connect, server, counted };
}

/** Negotiates as Postfix 3 does (everything offered) and returns the client. */
async function negotiated(connect: () => Promise<MilterTestClient>): Promise<MilterTestClient> {
  const client = await connect();
  await client.exchange(mta.negotiate());
  return client;
}

const text = (data: Buffer) => data.toString('latin1');

/** Waits until `predicate` holds (bounded: 100 tries, 10 s). */
async function eventually(predicate: () => boolean, what: string): Promise<void> {
  for (let attempt = 0; attempt < 100 && !predicate(); attempt++) await new Promise((resolve) => setTimeout(resolve, 100));
  assert.ok(predicate(), what);
}

describe('option negotiation', () => {
  test('asks only for insert/change header and macro lists, skips unknown commands, no replies to headers and body', async (t) => {
    const { connect } = await startMilter(t);
    const client = await connect();
    const [response] = await client.exchange(mta.negotiate(6, 0x1ff, 0x1fffff));
    assert.equal(response!.letter, 'O');
    const expected = Buffer.concat([
      uint32(6),
      uint32(0x111), // SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_SETSYMLIST
      uint32(0x1c0180), // NOUNKNOWN NR_HDR NR_EOH NR_BODY HDR_LEADSPC
      uint32(0),
      Buffer.from('j {daemon_name} {client_addr} {client_name}\0'),
      uint32(2),
      Buffer.from('i {auth_authen}\0'),
      uint32(5),
      Buffer.from('i\0'),
    ]);
    assert.equal(response!.data.toString('hex'), expected.toString('hex'));
  });

  test('an MTA offering fewer flags gets only those, and no macro lists without SMFIF_SETSYMLIST', async (t) => {
    const { connect } = await startMilter(t);
    const client = await connect();
    const [response] = await client.exchange(mta.negotiate(2, 0x11, 0x7f));
    assert.equal(response!.data.toString('hex'), Buffer.concat([uint32(2), uint32(0x11), uint32(0)]).toString('hex'));
  });

  test('an MTA that may not change headers is refused: closed, one warning', async (t) => {
    const { connect, log } = await startMilter(t);
    const client = await connect();
    client.send(mta.negotiate(6, 0x01, 0x1fffff));
    await client.waitClosed();
    assert.match(log.text(), /"level":40.*does not allow adding and changing header fields.*protocol error from the MTA; closing the connection/);
  });
});

describe('a signed message (authenticated client)', () => {
  test('the engine gets the client from the connect event and macros, and the message exactly; edits go back as delete + insert', async (t) => {
    const { connect, engine } = await startMilter(t);
    engine.endVerdict = (message) => ({
      action: 'accept',
      message,
      record,
      edits: {
        add: ['DKIM-Signature: v=1; a=rsa-sha256; d=example.org;\r\n\tb=abc\r\n', 'Authentication-Results: mx.example.org; spf=pass\r\n'],
        remove: [
          { name: 'Authentication-Results', index: 1 },
          { name: 'Authentication-Results', index: 3 },
        ],
      },
    });
    const client = await negotiated(connect);
    client.send(mta.macros('C', { j: 'mx.example.org', '{daemon_name}': 'submission' }), mta.connect('client.example.net', '192.0.2.9', 40000), mta.helo('client.example.net'));
    assert.deepEqual((await client.read(2)).map((response) => response.letter), ['c', 'c']); // connect and HELO answered
    client.send(mta.macros('M', { '{auth_authen}': 'alice', i: 'ABC123' }));
    assert.deepEqual((await client.exchange(mta.mail('<alice@example.org>'))).map((r) => r.letter), ['c']);
    assert.deepEqual((await client.exchange(mta.rcpt('<bob@example.net>'))).map((r) => r.letter), ['c']);
    client.send(mta.header('From', ' Alice <alice@example.org>'), mta.header('Subject', ' folded\n\tsubject'), mta.endOfHeaders());
    client.send(mta.body('Hello\r\n'), mta.body('World\r\n'));
    const responses = await client.exchange(mta.endOfMessage(), 5);
    assert.deepEqual(
      responses.map((r) => [r.letter, text(r.data)]),
      [
        ['m', `${text(uint32(3))}Authentication-Results\0\0`],
        ['m', `${text(uint32(1))}Authentication-Results\0\0`],
        ['i', `${text(uint32(0))}Authentication-Results\0 mx.example.org; spf=pass\0`],
        ['i', `${text(uint32(0))}DKIM-Signature\0 v=1; a=rsa-sha256; d=example.org;\n\tb=abc\0`],
        ['c', ''],
      ],
    );
    assert.deepEqual(engine.calls, [
      ['mail', 'alice@example.org', { sessionId: (engine.calls[0]![2] as ClientFacts).sessionId, address: '192.0.2.9', addressKnown: true, helo: 'client.example.net', user: 'alice', trusted: false }],
      ['rcpt', 'bob@example.net'],
      ['end', 'From: Alice <alice@example.org>\r\nSubject: folded\r\n\tsubject\r\n\r\nHello\r\nWorld\r\n'],
      ['delivered', { code: 250, queueId: 'ABC123' }],
    ]);
    assert.deepEqual(engine.frontEnds[0], { listener: 'milter', role: 'milter', signs: true, verifies: true, mtaJudgesRelay: true });
  });

  test("Postfix's non_smtpd_milters connection (localhost, 127.0.0.1, port 0) is local submission: trusted, no SPF address", async (t) => {
    const { connect, engine } = await startMilter(t);
    const client = await negotiated(connect);
    client.send(mta.connect('localhost', '127.0.0.1', 0), mta.helo('localhost'));
    assert.deepEqual((await client.read(2)).map((response) => response.letter), ['c', 'c']); // connect and HELO answered
    await client.exchange(mta.mail('<root@example.org>'));
    const facts = engine.calls[0]![2] as ClientFacts;
    assert.equal(facts.trusted, true);
    assert.equal(facts.addressKnown, false);
  });

  test('a client in trustedNetworks is trusted; {client_addr} wins over the connect event', async (t) => {
    const { connect, engine } = await startMilter(t);
    const client = await negotiated(connect);
    client.send(mta.macros('C', { '{client_addr}': '10.1.2.3' }), mta.connect('[10.1.2.3]', '10.1.2.3', 5000));
    assert.deepEqual((await client.read(1)).map((response) => response.letter), ['c']); // connect answered
    await client.exchange(mta.mail('<>'));
    const facts = engine.calls[0]![2] as ClientFacts;
    assert.deepEqual([engine.calls[0]![1], facts.address, facts.trusted], ['', '10.1.2.3', true]);
  });

  test('a signing-only milter accepts mail it would not sign at MAIL (SMFIR_ACCEPT), without asking the engine', async (t) => {
    const { connect, engine } = await startMilter(t, { verify: false });
    const client = await negotiated(connect);
    client.send(mta.connect('stranger.example', '198.51.100.1', 1234));
    assert.deepEqual((await client.read(1)).map((response) => response.letter), ['c']); // connect answered
    assert.deepEqual((await client.exchange(mta.mail('<x@stranger.example>'))).map((r) => r.letter), ['a']);
    assert.deepEqual(engine.calls, []);
  });
});

describe('refusals become SMFIR_REPLYCODE', () => {
  test('an SPF fail at RCPT: the exact reply, one line, % doubled', async (t) => {
    const { connect, engine } = await startMilter(t);
    engine.rcptVerdict = () => ({ action: 'reject', reply: { code: 550, enhanced: '5.7.23', text: 'SPF validation failed: 100% not permitted' } });
    const client = await negotiated(connect);
    client.send(mta.connect('bad.example', '203.0.113.5', 1234));
    assert.deepEqual((await client.read(1)).map((response) => response.letter), ['c']); // connect answered
    await client.exchange(mta.mail('<x@spf-fail.example>'));
    const [response] = await client.exchange(mta.rcpt('<bob@example.org>'));
    assert.equal(response!.letter, 'y');
    assert.equal(text(response!.data), '550 5.7.23 SPF validation failed: 100%% not permitted\0');
  });

  test('a refusal at MAIL and at the end of message; connections and refusals are counted by listener', async (t) => {
    const { connect, engine, counted } = await startMilter(t);
    engine.mailVerdict = { action: 'defer', reply: { code: 451, enhanced: '4.7.24', text: 'SPF temporary error' } };
    const client = await negotiated(connect);
    client.send(mta.connect('c.example', '203.0.113.5', 1234));
    assert.deepEqual((await client.read(1)).map((response) => response.letter), ['c']); // connect answered
    assert.equal(text((await client.exchange(mta.mail('<x@y.example>')))[0]!.data), '451 4.7.24 SPF temporary error\0');
    engine.mailVerdict = { action: 'accept' };
    engine.endVerdict = () => ({ action: 'reject', reply: { code: 550, enhanced: '5.7.1', text: 'DMARC policy' } });
    await client.exchange(mta.mail('<x@y.example>'));
    client.send(mta.header('From', ' x@y.example'), mta.endOfHeaders());
    assert.equal(text((await client.exchange(mta.endOfMessage()))[0]!.data), '550 5.7.1 DMARC policy\0');
    client.close();
    await eventually(() => counted.includes('close milter'), 'the connection counted closed');
    assert.deepEqual(counted, ['open milter', 'reply milter mail 451', 'reply milter data 550', 'close milter']);
  });

  test('a header section over limits.maxHeaderSize is refused at the end with 552 5.3.4, and not kept', async (t) => {
    const { connect, engine } = await startMilter(t, {}, { maxHeaderSize: 200 });
    const client = await negotiated(connect);
    client.send(mta.connect('c.example', '203.0.113.5', 1234));
    assert.deepEqual((await client.read(1)).map((response) => response.letter), ['c']); // connect answered
    await client.exchange(mta.mail('<x@y.example>'));
    for (let index = 0; index < 10; index++) client.send(mta.header('X-Filler', ` ${'x'.repeat(40)}`));
    client.send(mta.endOfHeaders(), mta.body('hi\r\n'));
    assert.equal(text((await client.exchange(mta.endOfMessage()))[0]!.data), '552 5.3.4 Message header section exceeds fixed maximum size\0');
    assert.deepEqual(engine.calls.at(-1)?.slice(0, 2), ['failed', 552]);
  });

  test('a message over limits.maxMessageSize is refused with 552 5.3.4', async (t) => {
    const { connect } = await startMilter(t, {}, { maxMessageSize: 1000 });
    const client = await negotiated(connect);
    client.send(mta.connect('c.example', '203.0.113.5', 1234));
    assert.deepEqual((await client.read(1)).map((response) => response.letter), ['c']); // connect answered
    await client.exchange(mta.mail('<x@y.example>'));
    client.send(mta.header('From', ' x@y.example'), mta.endOfHeaders());
    for (let index = 0; index < 5; index++) client.send(mta.body('y'.repeat(400)));
    assert.equal(text((await client.exchange(mta.endOfMessage()))[0]!.data), '552 5.3.4 Message size exceeds fixed maximum message size\0');
  });

  test('an engine failure is answered 451 4.3.0 and logged at error', async (t) => {
    const { connect, engine, log } = await startMilter(t);
    engine.endVerdict = () => {
      throw new Error('boom');
    };
    const client = await negotiated(connect);
    client.send(mta.connect('c.example', '203.0.113.5', 1234));
    assert.deepEqual((await client.read(1)).map((response) => response.letter), ['c']); // connect answered
    await client.exchange(mta.mail('<x@y.example>'));
    client.send(mta.header('From', ' x@y.example'), mta.endOfHeaders());
    assert.equal(text((await client.exchange(mta.endOfMessage()))[0]!.data), '451 4.3.0 Local error in processing, try again later\0');
    assert.match(log.text(), /"level":50.*the engine failed/);
  });
});

describe('the MTA reuses the connection', () => {
  test('abort ends the transaction; the next message starts clean; quit closes', async (t) => {
    const { connect, engine } = await startMilter(t);
    const client = await negotiated(connect);
    client.send(mta.connect('c.example', '203.0.113.5', 1234));
    assert.deepEqual((await client.read(1)).map((response) => response.letter), ['c']); // connect answered
    await client.exchange(mta.mail('<x@y.example>'));
    client.send(mta.header('From', ' x@y.example'), mta.abort());
    await client.exchange(mta.mail('<z@y.example>'));
    client.send(mta.endOfHeaders());
    await client.exchange(mta.endOfMessage());
    assert.deepEqual(
      engine.calls.map((call) => call[0]),
      ['mail', 'abort', 'mail', 'end', 'delivered'],
    );
    assert.equal(engine.calls[3]![1], '\r\n');
    client.send(mta.quit());
    await client.waitClosed();
  });
});

describe('bad input: one log line, the connection closed, no crash', () => {
  const closesWith = async (t: TestContext, send: (client: MilterTestClient) => void, line: RegExp, level = 40) => {
    const { connect, log, engine } = await startMilter(t);
    const client = await negotiated(connect);
    send(client);
    await client.waitClosed();
    await eventually(() => line.test(log.text()), `log line ${line} in ${log.text()}`);
    const record = log.records().find((entry) => line.test(String(entry['err'] ?? '') + String(entry['msg'])));
    assert.equal(record?.['level'], level);
    return { engine };
  };

  test('a length over the limit', async (t) => void (await closesWith(t, (client) => client.send(Buffer.from([0, 0, 0x10, 0, 0x42])), /packet of 4096 bytes is over the limit of 2048/)));
  test('an unknown command', async (t) => void (await closesWith(t, (client) => client.send(milterPacket('Z')), /unknown command 'Z'/)));
  test('a malformed packet', async (t) => void (await closesWith(t, (client) => client.send(milterPacket('H', 'no NUL')), /string without its terminating NUL/)));
  test('a body before the headers ended', async (t) => {
    const { engine } = await closesWith(
      t,
      (client) => client.send(mta.connect('c.example', '203.0.113.5', 1), mta.mail('<a@b.example>'), mta.header('From', ' a@b.example'), mta.body('x')),
      /a body chunk before the end of headers/,
    );
    assert.deepEqual(engine.calls.at(-1), ['abort']);
  });
  test('a header outside a message', async (t) => void (await closesWith(t, (client) => client.send(mta.header('From', ' a@b')), /a header outside a message/)));
  test('a truncated packet, then the MTA goes away', async (t) => {
    const { connect, log } = await startMilter(t);
    const client = await negotiated(connect);
    client.socket.end(mta.mail('<a@b.example>').subarray(0, 9));
    await client.waitClosed();
    await eventually(() => /disconnected inside a packet \(truncated\)/.test(log.text()), 'truncation logged');
    assert.equal(log.records().at(-1)?.['level'], 30);
  });
  test('the MTA disconnects mid-message: the engine transaction is aborted', async (t) => {
    const { connect, log, engine } = await startMilter(t);
    const client = await negotiated(connect);
    client.send(mta.connect('c.example', '203.0.113.5', 1234));
    assert.deepEqual((await client.read(1)).map((response) => response.letter), ['c']); // connect answered
    await client.exchange(mta.mail('<x@y.example>'));
    client.send(mta.header('From', ' x@y.example'));
    client.close();
    await eventually(() => /disconnected mid-message/.test(log.text()), 'mid-message disconnect logged');
    assert.deepEqual(engine.calls.at(-1), ['abort']);
  });
  test('commands before the negotiation', async (t) => {
    const { connect, log } = await startMilter(t);
    const client = await connect();
    client.send(mta.helo('x'));
    await client.waitClosed();
    await eventually(() => /'helo' before the option negotiation/.test(log.text()), 'logged');
  });
});

describe('lifecycle', () => {
  test('shutdown closes idle connections at once and lets a message in progress finish', async (t) => {
    const { connect, server, engine } = await startMilter(t);
    const idle = await negotiated(connect);
    const busy = await negotiated(connect);
    busy.send(mta.connect('c.example', '203.0.113.5', 1234));
    assert.deepEqual((await busy.read(1)).map((response) => response.letter), ['c']); // connect answered
    await busy.exchange(mta.mail('<x@y.example>'));
    const stopped = server.shutdown(10_000);
    await idle.waitClosed();
    assert.equal(busy.closed, false);
    busy.send(mta.header('From', ' x@y.example'), mta.endOfHeaders());
    assert.equal((await busy.exchange(mta.endOfMessage()))[0]!.letter, 'c');
    await busy.waitClosed();
    await stopped;
    assert.deepEqual(engine.calls.at(-1)?.[0], 'delivered');
  });
});

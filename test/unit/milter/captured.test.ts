// Real exchanges between Postfix 3.7 and sello's milter listener (test/fixtures/milter/*.json,
// recorded by test/fixtures/milter/capture.ts; how is written in each file's "made"):
//  - every byte Postfix sent decodes, in the order the milter protocol prescribes;
//  - replayed into the milter server, with an engine that answers what sello's engine answered
//    then, the server writes back exactly the bytes sello wrote (negotiation, continues, header
//    deletions and insertions);
//  - a seeded fuzz run mutates those streams (bounded in count and time): the decoder and the
//    connection either go on or fail with MilterProtocolError, never anything else.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { parseConfig } from '../../../src/config/load.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import { MilterDecoder, MilterProtocolError, type MilterCommand } from '../../../src/milter/codec.ts';
import { MilterConnection } from '../../../src/milter/connection.ts';
import { MilterServer } from '../../../src/milter/server.ts';
import type { FrontEnd } from '../../../src/pipeline/session.ts';
import { FakeEngine, record } from './fake-engine.ts';
import { seededRandom } from '../../helpers/random.ts';

const FIXTURES = path.join(import.meta.dirname, '../../fixtures/milter');

interface Capture {
  made: string;
  mta: Buffer;
  filter: Buffer;
}

function capture(name: string): Capture {
  const raw = JSON.parse(readFileSync(path.join(FIXTURES, `${name}.json`), 'utf8')) as { made: string; mta: string; filter: string };
  return { made: raw.made, mta: Buffer.from(raw.mta, 'hex'), filter: Buffer.from(raw.filter, 'hex') };
}

const CAPTURES = ['postfix-smtpd-inbound', 'postfix-sendmail-local'] as const;

/** The filter's packets, split by an independent reader: [letter, data]. */
function responses(bytes: Buffer): [string, Buffer][] {
  const packets: [string, Buffer][] = [];
  for (let rest = bytes; rest.length > 0; ) {
    const length = rest.readUInt32BE(0);
    packets.push([String.fromCharCode(rest[4] as number), rest.subarray(5, 4 + length)]);
    rest = rest.subarray(4 + length);
  }
  return packets;
}

/** The header edits sello sent (m = delete, i = insert at 0), turned back into the engine's form. */
function editsOf(filter: Buffer): { add: string[]; remove: { name: string; index: number }[] } {
  const add: string[] = [];
  const remove: { name: string; index: number }[] = [];
  for (const [letter, data] of responses(filter)) {
    if (letter !== 'i' && letter !== 'm') continue;
    const index = data.readUInt32BE(0);
    const [name, value] = data.subarray(4).toString('latin1').split('\0') as [string, string];
    if (letter === 'm') remove.push({ name, index });
    else add.unshift(`${name}:${value.replace(/\n/g, '\r\n')}\r\n`);
  }
  return { add, remove };
}

const names = (commands: MilterCommand[]) => commands.map((command) => (command.command === 'macros' ? `D${command.for}` : command.command));

describe('captured Postfix exchanges', () => {
  test('fixtures say how they were made', () => {
    for (const name of CAPTURES) assert.match(capture(name).made, /^Postfix 3\.\d+\.\d+ ↔ sello milter listener, recorded by test\/fixtures\/milter\/capture\.ts/);
  });

  test('smtpd inbound: the whole stream decodes in protocol order', () => {
    const decoder = new MilterDecoder();
    const commands = decoder.push(capture('postfix-smtpd-inbound').mta);
    assert.equal(decoder.buffered, 0);
    assert.deepEqual(names(commands), [
      'negotiate', 'DC', 'connect', 'DH', 'helo', 'DM', 'mail', 'DR', 'rcpt', 'DT', 'data',
      ...Array(6).fill(['DL', 'header']).flat(),
      'DN', 'endOfHeaders', 'DB', 'body', 'DE', 'endOfMessage', 'abort', 'abort', 'quit',
    ]);
    assert.deepEqual(commands[0], { command: 'negotiate', version: 6, actions: 0x1ff, protocol: 0x1fffff });
    const connect = commands[2];
    assert.ok(connect?.command === 'connect');
    assert.deepEqual([connect.hostname, connect.family, connect.address], ['[127.0.0.2]', 'inet', '127.0.0.2']);
  });

  test('sendmail local submission: cleanup simulates localhost 127.0.0.1 port 0, unbracketed MAIL', () => {
    const commands = new MilterDecoder().push(capture('postfix-sendmail-local').mta);
    assert.deepEqual(commands[2], { command: 'connect', hostname: 'localhost', family: 'inet', port: 0, address: '127.0.0.1' });
    assert.deepEqual(commands.find((command) => command.command === 'mail'), { command: 'mail', args: ['root@example.org'] });
  });

  for (const name of CAPTURES) {
    test(`${name}: replayed, the server answers byte for byte what sello answered`, async (t: TestContext) => {
      const { mta, filter } = capture(name);
      const engine = new FakeEngine();
      engine.endVerdict = (message) => ({ action: 'accept', message, record, edits: editsOf(filter) });
      const config = parseConfig({ listeners: [{ name: 'milter', role: 'milter', listen: 'inet:127.0.0.1:0' }] });
      const frontEnd: FrontEnd = { listener: 'milter', role: 'milter', signs: true, verifies: true, mtaJudgesRelay: true };
      const server = new MilterServer({ config, listener: config.listeners[0]!, engine, frontEnd, logger: silentLogger() });
      const { port } = await server.start();
      t.after(() => server.close());
      const written: Buffer[] = [];
      await new Promise<void>((resolve, reject) => {
        const socket = net.connect(port, '127.0.0.1', () => socket.end(mta));
        socket.on('data', (chunk: Buffer) => written.push(chunk));
        socket.on('close', () => resolve());
        socket.on('error', reject);
      });
      assert.equal(Buffer.concat(written).toString('hex'), filter.toString('hex'));
      const end = engine.calls.find((call) => call[0] === 'end');
      assert.match(String(end?.[1]), /^(Authentication-Results: sello\.test; spf=pass smtp\.mailfrom=forged@pass\.example\r\n)?From: .*\r\n\r\n[^\r\n]+\r\n$/s);
    });
  }
});

/** One mutation of `input`: flip, overwrite, insert, delete, duplicate a slice, or truncate. */
function mutate(input: Buffer, next: () => number): Buffer {
  const at = () => Math.floor(next() * input.length);
  const bytes = [...input];
  const kind = Math.floor(next() * 6);
  const count = 1 + Math.floor(next() * 8);
  for (let step = 0; step < count; step++) {
    const position = at();
    if (kind === 0) bytes[position] = (bytes[position] ?? 0) ^ (1 << Math.floor(next() * 8));
    else if (kind === 1) bytes[position] = Math.floor(next() * 256);
    else if (kind === 2) bytes.splice(position, 0, Math.floor(next() * 256));
    else if (kind === 3) bytes.splice(position, 1);
  }
  if (kind === 4) {
    const start = at();
    const slice = bytes.slice(start, start + 1 + Math.floor(next() * 64));
    bytes.splice(at(), 0, ...slice);
  }
  if (kind === 5) bytes.length = at();
  return Buffer.from(bytes);
}

describe('fuzz: mutated captured exchanges', () => {
  const SEED = 0x5e110;
  const MAX_CASES = 3000;
  const MAX_MS = 15_000;

  test(`decoder and connection fail only with MilterProtocolError (seed ${SEED}, ≤ ${MAX_CASES} cases, ≤ ${MAX_MS / 1000} s)`, async () => {
    const next = seededRandom(SEED);
    const inputs = CAPTURES.map((name) => capture(name).mta);
    const started = Date.now();
    let cases = 0;
    let protocolErrors = 0;
    for (; cases < MAX_CASES && Date.now() - started < MAX_MS; cases++) {
      const input = mutate(inputs[cases % inputs.length] as Buffer, next);
      const decoder = new MilterDecoder(4096);
      const engine = new FakeEngine({ maxMessageSize: 2048, maxHeaderSize: 1024 });
      const connection = new MilterConnection(
        { frontEnd: { listener: 'fuzz', role: 'milter', signs: true, verifies: true, mtaJudgesRelay: true }, engine, logger: silentLogger(), trustedNetworks: new net.BlockList() },
        `fuzz-${cases}`,
      );
      try {
        // Chunked at random points, as a socket would deliver it.
        for (let offset = 0; offset < input.length; ) {
          const size = 1 + Math.floor(next() * 200);
          for (const command of decoder.push(input.subarray(offset, offset + size))) await connection.handle(command);
          offset += size;
        }
      } catch (error) {
        if (!(error instanceof MilterProtocolError)) {
          assert.fail(`case ${cases} (seed ${SEED}) threw ${String(error)} for input ${input.toString('hex')}`);
        }
        protocolErrors++;
      } finally {
        connection.closed();
      }
      assert.equal(engine.calls.filter((call) => call[0] === 'mail').length >= engine.calls.filter((call) => call[0] === 'end').length, true, 'no end without a mail');
    }
    assert.ok(cases >= 200, `only ${cases} cases ran`);
    // The mutations must reach both outcomes, or the run tests nothing.
    assert.ok(protocolErrors > cases / 10 && protocolErrors < cases, `${protocolErrors} protocol errors in ${cases} cases`);
  });
});

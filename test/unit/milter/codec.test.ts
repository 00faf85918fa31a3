// Tests for src/milter/codec.ts: packets built by hand from the formats of Sendmail's
// libmilter (mfdef.h, engine.c) and Postfix's milter8.c, decoded and encoded byte for byte;
// framing across arbitrary chunk boundaries; every malformed packet a MilterProtocolError.
// Exchanges captured from real Postfix are checked in captured.test.ts.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  decodePacket,
  encodeChangeHeader,
  encodeInsertHeader,
  encodeNegotiation,
  encodeReplyCode,
  headerValueForMta,
  MilterDecoder,
  MilterProtocolError,
} from '../../../src/milter/codec.ts';

/** A packet as the MTA frames it: uint32 length of command + data, command byte, data. */
function frame(letter: string, data: Buffer | string = Buffer.alloc(0)): Buffer {
  const body = Buffer.concat([Buffer.from(letter, 'latin1'), typeof data === 'string' ? Buffer.from(data, 'latin1') : data]);
  const length = Buffer.alloc(4);
  length.writeUInt32BE(body.length);
  return Buffer.concat([length, body]);
}

const hex = (bytes: Buffer) => bytes.toString('hex');

describe('decoding', () => {
  test('option negotiation as Postfix 3 sends it: version 6, every action, every v6 protocol flag', () => {
    const bytes = Buffer.from('0000000d4f00000006000001ff001fffff', 'hex');
    assert.deepEqual(new MilterDecoder().push(bytes), [{ command: 'negotiate', version: 6, actions: 0x1ff, protocol: 0x1fffff }]);
  });

  test('connect: hostname, family, port (network order), address', () => {
    const data = Buffer.concat([Buffer.from('mail.example.org\x004'), Buffer.from([0x30, 0x39]), Buffer.from('192.0.2.7\x00')]);
    assert.deepEqual(decodePacket('C'.charCodeAt(0), data), { command: 'connect', hostname: 'mail.example.org', family: 'inet', port: 12345, address: '192.0.2.7' });
    assert.deepEqual(decodePacket('C'.charCodeAt(0), Buffer.from('localhost\x00U')), { command: 'connect', hostname: 'localhost', family: 'unknown', port: 0, address: '' });
  });

  test('macros for a command: name/value pairs', () => {
    const command = decodePacket('D'.charCodeAt(0), Buffer.from('M{auth_authen}\x00alice\x00i\x004XyZ\x00'));
    assert.equal(command.command, 'macros');
    assert.ok(command.command === 'macros');
    assert.equal(command.for, 'M');
    assert.deepEqual([...command.macros], [['{auth_authen}', 'alice'], ['i', '4XyZ']]);
  });

  test('MAIL and RCPT: the address and its ESMTP arguments', () => {
    assert.deepEqual(decodePacket('M'.charCodeAt(0), Buffer.from('<a@example.org>\x00SIZE=100\x00BODY=8BITMIME\x00')), {
      command: 'mail',
      args: ['<a@example.org>', 'SIZE=100', 'BODY=8BITMIME'],
    });
    assert.deepEqual(decodePacket('R'.charCodeAt(0), Buffer.from('<b@example.net>\x00')), { command: 'rcpt', args: ['<b@example.net>'] });
  });

  test('a header keeps its value bytes exactly (8-bit, leading space, folds)', () => {
    const value = Buffer.from(' caf\xe9\n\tfolded', 'latin1');
    const command = decodePacket('L'.charCodeAt(0), Buffer.concat([Buffer.from('Subject\x00'), value, Buffer.from([0])]));
    assert.ok(command.command === 'header');
    assert.equal(command.name, 'Subject');
    assert.equal(hex(command.value), hex(value));
  });

  test('commands without data', () => {
    const letters = { T: 'data', N: 'endOfHeaders', A: 'abort', Q: 'quit', K: 'quitNewConnection' };
    for (const [letter, name] of Object.entries(letters)) assert.deepEqual(decodePacket(letter.charCodeAt(0), Buffer.alloc(0)), { command: name });
    assert.deepEqual(decodePacket('U'.charCodeAt(0), Buffer.from('XYZZY\x00')), { command: 'unknown', line: 'XYZZY' });
    assert.deepEqual(decodePacket('H'.charCodeAt(0), Buffer.from('client.example\x00')), { command: 'helo', helo: 'client.example' });
  });

  test('body and end of message carry raw bytes', () => {
    const chunk = Buffer.from('line\r\n\x00\xff', 'latin1');
    assert.deepEqual(decodePacket('B'.charCodeAt(0), chunk), { command: 'body', chunk });
    assert.deepEqual(decodePacket('E'.charCodeAt(0), Buffer.alloc(0)), { command: 'endOfMessage', chunk: Buffer.alloc(0) });
  });

  test('packets split at every byte boundary decode the same', () => {
    const stream = Buffer.concat([frame('H', 'h.example\x00'), frame('M', '<a@b>\x00'), frame('B', 'x'.repeat(300)), frame('E')]);
    const whole = new MilterDecoder().push(stream);
    assert.equal(whole.length, 4);
    for (let split = 1; split < stream.length; split++) {
      const decoder = new MilterDecoder();
      const parts = [...decoder.push(stream.subarray(0, split)), ...decoder.push(stream.subarray(split))];
      assert.deepEqual(parts, whole, `split at ${split}`);
      assert.equal(decoder.buffered, 0);
    }
    const decoder = new MilterDecoder();
    const oneByOne = [...stream].flatMap((byte) => decoder.push(Buffer.from([byte])));
    assert.deepEqual(oneByOne, whole);
  });

  test('a partial packet waits; buffered says how much', () => {
    const decoder = new MilterDecoder();
    assert.deepEqual(decoder.push(frame('M', '<a@b>\x00').subarray(0, 7)), []);
    assert.equal(decoder.buffered, 7);
  });
});

describe('malformed input is a MilterProtocolError', () => {
  const refuses = (bytes: Buffer, message: RegExp, maxPacketSize?: number) =>
    assert.throws(() => new MilterDecoder(maxPacketSize).push(bytes), (error: unknown) => error instanceof MilterProtocolError && message.test(error.message));

  test('a length over the limit is refused from its 4 length bytes alone', () => {
    refuses(Buffer.from([0x00, 0x10, 0x00, 0x01]), /packet of 1048577 bytes is over the limit of 1000/, 1000);
    refuses(Buffer.from([0xff, 0xff, 0xff, 0xff]), /packet of 4294967295 bytes is over the limit/);
  });
  test('length 0', () => refuses(Buffer.from([0, 0, 0, 0]), /length 0/));
  test('an unknown command', () => refuses(frame('Z'), /unknown command 'Z'/));
  test('an unknown command byte that is not printable is shown escaped', () => refuses(frame('\x01'), /unknown command '\\x01'/));
  test('a string without NUL', () => refuses(frame('H', 'no-terminator'), /command 'H': string without its terminating NUL/));
  test('negotiation too short', () => refuses(frame('O', Buffer.alloc(8)), /command 'O': truncated/));
  test('trailing bytes', () => refuses(frame('Q', 'x'), /command 'Q': 1 unexpected bytes at the end/));
  test('connect with an unknown family', () => refuses(frame('C', 'h\x00X'), /unknown address family 'X'/));
  test('connect cut after the family', () => refuses(frame('C', 'h\x004\x00'), /command 'C': truncated/));
  test('MAIL without an address', () => refuses(frame('M'), /mail: no address/));
  test('a header without a name', () => refuses(frame('L', '\x00v\x00'), /empty field name/));
});

describe('encoding', () => {
  test('negotiation with macro lists per stage (SMFIF_SETSYMLIST)', () => {
    const bytes = encodeNegotiation({ version: 6, actions: 0x111, protocol: 0x1c2a0, macros: { connect: ['j', '{client_addr}'], mail: ['{auth_authen}'] } });
    const expected = Buffer.concat([
      Buffer.from('000000334f', 'hex'), // 1 + 12 + (4 + 16) + (4 + 14) bytes
      Buffer.from('00000006' + '00000111' + '0001c2a0', 'hex'),
      Buffer.from('00000000', 'hex'),
      Buffer.from('j {client_addr}\x00'),
      Buffer.from('00000002', 'hex'),
      Buffer.from('{auth_authen}\x00'),
    ]);
    assert.equal(hex(bytes), hex(expected));
  });

  test('reply code: one line, control characters removed, % doubled for Sendmail', () => {
    const bytes = encodeReplyCode({ code: 550, enhanced: '5.7.23', text: 'SPF fail for 100% of\r\nyou\x00' });
    assert.equal(bytes.subarray(5).toString('latin1'), '550 5.7.23 SPF fail for 100%% of you\x00');
    assert.equal(bytes.readUInt32BE(0), bytes.length - 4);
    assert.equal(bytes[4], 'y'.charCodeAt(0));
  });

  test('reply code: only 4xx/5xx with a matching enhanced code', () => {
    assert.throws(() => encodeReplyCode({ code: 250, enhanced: '2.0.0', text: 'OK' }), /4xx or 5xx/);
    assert.throws(() => encodeReplyCode({ code: 451, enhanced: '5.7.1', text: 'x' }), /does not match/);
  });

  test('insert and change header: index, name, value, each NUL-terminated', () => {
    assert.equal(hex(encodeInsertHeader(0, 'X-A', Buffer.from(' v'))), hex(Buffer.from('0000000c69' + '00000000' + Buffer.from('X-A\x00 v\x00').toString('hex'), 'hex')));
    assert.equal(hex(encodeChangeHeader(2, 'Authentication-Results', Buffer.alloc(0))), hex(Buffer.concat([Buffer.from('0000001d6d00000002', 'hex'), Buffer.from('Authentication-Results\x00\x00')])));
  });

  test('header values for the MTA: folds as LF, leading space only with SMFIP_HDR_LEADSPC', () => {
    assert.equal(headerValueForMta(' a=b;\r\n\tc=d\r\n', true).toString(), ' a=b;\n\tc=d');
    assert.equal(headerValueForMta(' a=b;\r\n\tc=d\r\n', false).toString(), 'a=b;\n\tc=d');
    assert.throws(() => headerValueForMta(' a\r\nInjected: yes\r\n', true), /folded lines/);
    assert.throws(() => headerValueForMta(' a\rb', true), /folded lines/);
  });
});

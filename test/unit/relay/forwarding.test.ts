// The client identity on the wire (src/relay/forwarding.ts): XCLIENT and XFORWARD command lines
// and PROXY v1/v2 headers, byte for byte, as Postfix, Exim and HAProxy's spec expect them.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  advertisedAttributes,
  ipv6Bytes,
  mtaSeesRealClient,
  proxyLocalHeader,
  proxyV1Header,
  proxyV2Header,
  xclientCommands,
  xforwardCommands,
  xtext,
} from '../../../src/relay/forwarding.ts';
import type { ClientIdentity } from '../../../src/relay/types.ts';

const client: ClientIdentity = {
  address: '192.0.2.9',
  port: 40123,
  helo: 'client.example.org',
  hostname: 'mail.example.org',
  protocol: 'ESMTP',
  localAddress: '127.0.0.1',
  localPort: 25,
};
const v6: ClientIdentity = { ...client, address: '2001:db8::9', localAddress: '::1' };
/** What Postfix 3.9 advertises. */
const postfixXclient = advertisedAttributes('NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT')!;
const postfixXforward = advertisedAttributes('NAME ADDR PORT PROTO HELO IDENT SOURCE')!;

test('xtext (RFC 3461 §4): "+", "=", space, controls and non-ASCII octets as +XX', () => {
  assert.equal(xtext('mail.example.org'), 'mail.example.org');
  assert.equal(xtext('a+b=c d\t'), 'a+2Bb+3Dc+20d+09');
  assert.equal(xtext('jürgen'), 'j+C3+BCrgen');
  assert.equal(xtext('[UNAVAILABLE]'), '[UNAVAILABLE]');
});

test('advertised attributes: case-insensitive words after the keyword; absent keyword → undefined', () => {
  assert.deepEqual([...advertisedAttributes('name Addr  PORT')!], ['NAME', 'ADDR', 'PORT']);
  assert.equal(advertisedAttributes(undefined), undefined);
  assert.equal(advertisedAttributes('')!.size, 0);
});

test('XCLIENT: one line with every attribute Postfix advertises, in XCLIENT_README order', () => {
  assert.deepEqual(xclientCommands(client, postfixXclient), [
    'XCLIENT NAME=mail.example.org ADDR=192.0.2.9 PORT=40123 PROTO=ESMTP HELO=client.example.org DESTADDR=127.0.0.1 DESTPORT=25',
  ]);
  assert.deepEqual(xclientCommands({ ...client, login: 'alice@example.com' }, postfixXclient), [
    'XCLIENT NAME=mail.example.org ADDR=192.0.2.9 PORT=40123 PROTO=ESMTP HELO=client.example.org LOGIN=alice@example.com DESTADDR=127.0.0.1 DESTPORT=25',
  ]);
});

test('XCLIENT: IPv6 as IPV6:…, IPv4-mapped as IPv4; unknown values [UNAVAILABLE]', () => {
  assert.deepEqual(xclientCommands(v6, postfixXclient), [
    'XCLIENT NAME=mail.example.org ADDR=IPV6:2001:db8::9 PORT=40123 PROTO=ESMTP HELO=client.example.org DESTADDR=IPV6:::1 DESTPORT=25',
  ]);
  const unknown: ClientIdentity = { address: '::ffff:192.0.2.9', port: 0, helo: '', protocol: 'SMTP', localAddress: '', localPort: 0 };
  assert.deepEqual(xclientCommands(unknown, postfixXclient), ['XCLIENT NAME=[UNAVAILABLE] ADDR=192.0.2.9 PORT=[UNAVAILABLE] PROTO=SMTP HELO=[UNAVAILABLE]']);
});

test('XCLIENT: only advertised attributes (Exim 4.98 offers no PROTO or HELO)', () => {
  assert.deepEqual(xclientCommands(client, advertisedAttributes('ADDR NAME PORT LOGIN DESTADDR DESTPORT')!), [
    'XCLIENT NAME=mail.example.org ADDR=192.0.2.9 PORT=40123 DESTADDR=127.0.0.1 DESTPORT=25',
  ]);
  assert.deepEqual(xclientCommands(client, advertisedAttributes('NAME ADDR PROTO HELO')!), [
    'XCLIENT NAME=mail.example.org ADDR=192.0.2.9 PROTO=ESMTP HELO=client.example.org',
  ]);
});

test('XCLIENT: HELO text Postfix would refuse (space, 8-bit, over 255) is [UNAVAILABLE]; "+" and "=" are xtext', () => {
  const helo = (value: string) => xclientCommands({ ...client, helo: value }, advertisedAttributes('ADDR HELO')!)[0];
  assert.equal(helo('two words'), 'XCLIENT ADDR=192.0.2.9 HELO=[UNAVAILABLE]');
  assert.equal(helo('grüß.example'), 'XCLIENT ADDR=192.0.2.9 HELO=[UNAVAILABLE]');
  assert.equal(helo('a'.repeat(256)), 'XCLIENT ADDR=192.0.2.9 HELO=[UNAVAILABLE]');
  assert.equal(helo('[192.0.2.9]'), 'XCLIENT ADDR=192.0.2.9 HELO=[192.0.2.9]');
  assert.equal(helo('a+b=c'), 'XCLIENT ADDR=192.0.2.9 HELO=a+2Bb+3Dc');
  const name = (value: string) => xclientCommands({ ...client, hostname: value }, advertisedAttributes('ADDR NAME')!)[0];
  assert.equal(name('bad name!'), 'XCLIENT NAME=[UNAVAILABLE] ADDR=192.0.2.9');
});

test('XCLIENT: over 512 octets → several lines, each ≤ 512 with CRLF, ADDR in the last one', () => {
  const long: ClientIdentity = { ...client, hostname: `${'h'.repeat(60)}.`.repeat(4) + 'example', helo: `${'+'.repeat(80)}x` };
  const lines = xclientCommands(long, postfixXclient);
  assert.ok(lines.length >= 2, lines.join('\n'));
  for (const line of lines) assert.ok(line.length + 2 <= 512, `${line.length + 2} octets`);
  assert.match(lines.at(-1)!, / ADDR=192\.0\.2\.9$/);
  assert.ok(lines.slice(0, -1).every((line) => !line.includes('ADDR=')));
  const attributes = lines.flatMap((line) => line.split(' ').slice(1).map((word) => word.split('=')[0]));
  assert.deepEqual(attributes.sort(), ['ADDR', 'DESTADDR', 'DESTPORT', 'HELO', 'NAME', 'PORT', 'PROTO']);
});

test('XFORWARD: advertised attributes, bare IPv6 (as Postfix\'s smtp client sends it), IDENT/SOURCE only when forwarded', () => {
  assert.deepEqual(xforwardCommands(client, postfixXforward), [
    'XFORWARD NAME=mail.example.org ADDR=192.0.2.9 PORT=40123 PROTO=ESMTP HELO=client.example.org',
  ]);
  assert.deepEqual(xforwardCommands({ ...v6, hostname: undefined, ident: '4Xb2Kq1z0Mz9', source: 'LOCAL' }, postfixXforward), [
    'XFORWARD NAME=[UNAVAILABLE] ADDR=2001:db8::9 PORT=40123 PROTO=ESMTP HELO=client.example.org IDENT=4Xb2Kq1z0Mz9 SOURCE=LOCAL',
  ]);
  assert.deepEqual(xforwardCommands(client, advertisedAttributes('NAME ADDR PROTO HELO')!), [
    'XFORWARD NAME=mail.example.org ADDR=192.0.2.9 PROTO=ESMTP HELO=client.example.org',
  ]);
});

test('PROXY v1: "PROXY TCP4|TCP6 src dst sport dport" + CRLF; the client\'s family decides', () => {
  assert.equal(proxyV1Header(client).toString('latin1'), 'PROXY TCP4 192.0.2.9 127.0.0.1 40123 25\r\n');
  assert.equal(proxyV1Header(v6).toString('latin1'), 'PROXY TCP6 2001:db8::9 ::1 40123 25\r\n');
  assert.equal(proxyV1Header({ ...client, address: '::ffff:192.0.2.9', localAddress: '::ffff:127.0.0.1' }).toString('latin1'), 'PROXY TCP4 192.0.2.9 127.0.0.1 40123 25\r\n');
  // A forwarded IPv6 client on an IPv4 filter listener, and the other way round.
  assert.equal(proxyV1Header({ ...v6, localAddress: '127.0.0.1' }).toString('latin1'), 'PROXY TCP6 2001:db8::9 ::ffff:127.0.0.1 40123 25\r\n');
  assert.equal(proxyV1Header({ ...client, localAddress: '::1' }).toString('latin1'), 'PROXY TCP4 192.0.2.9 127.0.0.1 40123 25\r\n');
  assert.throws(() => proxyV1Header({ ...client, address: 'unknown' }), /not an IP address/);
});

test('PROXY v2: signature, 0x21, 0x11/0x21, length, addresses, ports (big-endian)', () => {
  const signature = '0d0a0d0a000d0a515549540a';
  assert.equal(proxyV2Header(client).toString('hex'), `${signature}2111000c` + 'c0000209' + '7f000001' + '9cbb' + '0019');
  assert.equal(
    proxyV2Header(v6).toString('hex'),
    `${signature}21210024` + '20010db8000000000000000000000009' + '00000000000000000000000000000001' + '9cbb' + '0019',
  );
  assert.equal(proxyV2Header(client).length, 16 + 12);
  assert.equal(proxyV2Header(v6).length, 16 + 36);
});

test('PROXY headers of a connection that proxies no client (health probe): v1 UNKNOWN, v2 LOCAL', () => {
  assert.equal(proxyLocalHeader('proxy-v1').toString('latin1'), 'PROXY UNKNOWN\r\n');
  assert.equal(proxyLocalHeader('proxy-v2').toString('hex'), '0d0a0d0a000d0a515549540a' + '20000000');
});

test('IPv6 text forms → 16 octets', () => {
  assert.equal(ipv6Bytes('::').toString('hex'), '0'.repeat(32));
  assert.equal(ipv6Bytes('::1').toString('hex'), `${'0'.repeat(31)}1`);
  assert.equal(ipv6Bytes('2001:db8::').toString('hex'), `20010db8${'0'.repeat(24)}`);
  assert.equal(ipv6Bytes('::ffff:127.0.0.1').toString('hex'), '00000000000000000000ffff7f000001');
  assert.equal(ipv6Bytes('fe80:0:0:0:1:2:3:4').toString('hex'), 'fe800000000000000001000200030004');
});

test('which modes make the MTA judge relaying by the real client: XCLIENT and PROXY, not XFORWARD', () => {
  assert.deepEqual(
    (['none', 'xclient', 'xforward', 'proxy-v1', 'proxy-v2'] as const).filter((mode) => mtaSeesRealClient(mode)),
    ['xclient', 'proxy-v1', 'proxy-v2'],
  );
});

// Making the real client known to the MTA (PRODUCT.md §3), as bytes: the XCLIENT and XFORWARD
// commands (Postfix XCLIENT_README, XFORWARD_README) and the PROXY protocol v1/v2 header
// (HAProxy's proxy-protocol.txt).
// Owns: attribute selection, value sanitising, xtext encoding, the 512-octet command limit and
// the PROXY header layout. Pure functions.
// Must not: touch sockets or decide what happens when the MTA lacks an extension
// (smtp-target.ts does: it defers rather than relaying without the client).

import net from 'node:net';
import type { ClientIdentity, ForwardMode } from './types.ts';

// What each mode means for relaying is config data (config/relay-target.ts); re-exported here.
export { forwardModes, mtaSeesRealClient } from '../config/relay-target.ts';

const unavailable = '[UNAVAILABLE]';
/** RFC 5321 §4.5.3.1.4: a command line is at most 512 octets with its CRLF. */
const maxCommandLength = 510;
/** XFORWARD_README note 1 / XCLIENT_README note 1: values up to 255 characters. */
const maxValueLength = 255;

/**
 * RFC 3461 §4 xtext (XCLIENT and XFORWARD values): "+", "=" and every octet outside "!".."~"
 * become "+XX" with upper-case hex; non-ASCII text is encoded as its UTF-8 octets.
 */
export function xtext(value: string): string {
  let encoded = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    encoded += byte >= 0x21 && byte <= 0x7e && byte !== 0x2b && byte !== 0x3d ? String.fromCharCode(byte) : `+${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return encoded;
}

/** The attribute names an EHLO keyword's parameters list ("XCLIENT NAME ADDR PORT …"), upper case. */
export function advertisedAttributes(parameters: string | undefined): ReadonlySet<string> | undefined {
  if (parameters === undefined) return undefined;
  return new Set(parameters.toUpperCase().split(/\s+/).filter(Boolean));
}

/** "::ffff:192.0.2.1" → "192.0.2.1"; other addresses unchanged. */
function unmapped(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return mapped ? (mapped[1] as string) : address;
}

/** XCLIENT_README: IPv4 as is, IPv6 prefixed "IPV6:", never in brackets. */
function xclientAddress(address: string): string {
  const plain = unmapped(address);
  const family = net.isIP(plain);
  return family === 6 ? `IPV6:${plain}` : family === 4 ? plain : unavailable;
}

/** XFORWARD ADDR as Postfix's own SMTP client sends it (smtp_proto.c): the bare address. */
function xforwardAddress(address: string): string {
  const plain = unmapped(address);
  return net.isIP(plain) ? plain : unavailable;
}

/** A DNS host name (Postfix checks NAME with valid_hostname()), else [UNAVAILABLE]. */
function hostnameValue(name: string | undefined): string {
  if (!name || name.length > maxValueLength) return unavailable;
  return /^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?$/.test(name) ? name : unavailable;
}

/**
 * Free text from the client (HELO, IDENT). XFORWARD_README note 1: after decoding, no control
 * characters, non-ASCII or whitespace, and at most 255 characters; anything else would draw a
 * 501 and defer the mail, so it is sent as [UNAVAILABLE].
 */
function textValue(value: string | undefined): string {
  if (!value || value.length > maxValueLength || !/^[\x21-\x7e]+$/.test(value)) return unavailable;
  return value;
}

function portValue(port: number): string {
  return Number.isInteger(port) && port > 0 && port <= 65535 ? String(port) : unavailable;
}

type Attribute = readonly [name: string, value: string];

/**
 * The attributes as command lines of at most 512 octets. One line when they fit; otherwise
 * packed in order over several lines (XCLIENT_README note 1). An attribute that cannot fit even
 * alone is sent as [UNAVAILABLE].
 */
function commandLines(verb: string, attributes: readonly Attribute[]): string[] {
  const words = attributes.map(([name, value]) => {
    const word = `${name}=${xtext(value)}`;
    return verb.length + 1 + word.length <= maxCommandLength ? word : `${name}=${unavailable}`;
  });
  const lines: string[] = [];
  let line = verb;
  for (const word of words) {
    if (line !== verb && line.length + 1 + word.length > maxCommandLength) {
      lines.push(line);
      line = verb;
    }
    line += ` ${word}`;
  }
  if (line !== verb) lines.push(line);
  return lines;
}

/**
 * XCLIENT command line(s) for `client`, with only the attributes the server advertised (Exim
 * 4.98 offers no HELO or PROTO, Postfix before 2.5 no PORT). Order as in XCLIENT_README's
 * example: NAME ADDR PORT PROTO HELO, then LOGIN, DESTADDR, DESTPORT. When the attributes need
 * more than one line, ADDR and PORT go last: smtp-server (and any server that authorises
 * XCLIENT by the current client address) refuses a further XCLIENT once ADDR was applied.
 */
export function xclientCommands(client: ClientIdentity, advertised: ReadonlySet<string>): string[] {
  const candidates: Attribute[] = [
    ['NAME', hostnameValue(client.hostname)],
    ['ADDR', xclientAddress(client.address)],
    ['PORT', portValue(client.port)],
    ['PROTO', client.protocol],
    ['HELO', textValue(client.helo)],
  ];
  if (client.login) candidates.push(['LOGIN', client.login]);
  if (net.isIP(unmapped(client.localAddress))) candidates.push(['DESTADDR', xclientAddress(client.localAddress)]);
  if (client.localPort > 0) candidates.push(['DESTPORT', portValue(client.localPort)]);
  const attributes = candidates.filter(([name]) => advertised.has(name));
  const single = commandLines('XCLIENT', attributes);
  if (single.length <= 1) return single;
  const last = new Set(['PORT', 'ADDR']);
  return commandLines('XCLIENT', [
    ...attributes.filter(([name]) => !last.has(name)),
    ...attributes.filter(([name]) => name === 'PORT'),
    ...attributes.filter(([name]) => name === 'ADDR'),
  ]);
}

/**
 * XFORWARD command line(s) for `client`, with only the advertised attributes: NAME ADDR PORT
 * PROTO HELO, then IDENT and SOURCE when a trusted upstream forwarded them to sello (SOURCE is
 * never invented: it changes Postfix's header rewriting). Sent before every MAIL FROM, since
 * the server resets XFORWARD attributes after each transaction (XFORWARD_README).
 */
export function xforwardCommands(client: ClientIdentity, advertised: ReadonlySet<string>): string[] {
  const candidates: Attribute[] = [
    ['NAME', hostnameValue(client.hostname)],
    ['ADDR', xforwardAddress(client.address)],
    ['PORT', portValue(client.port)],
    ['PROTO', client.protocol],
    ['HELO', textValue(client.helo)],
  ];
  if (client.ident && textValue(client.ident) !== unavailable) candidates.push(['IDENT', client.ident]);
  if (client.source) candidates.push(['SOURCE', client.source]);
  return commandLines('XFORWARD', candidates.filter(([name]) => advertised.has(name)));
}

interface AddressPair {
  family: 4 | 6;
  source: string;
  destination: string;
}

/**
 * PROXY carries one address family for both ends; the client's decides. A destination of the
 * other family becomes its IPv4-mapped form (v4 in v6), or for a v6 destination with a v4
 * client: 127.0.0.1 for ::1, else 0.0.0.0 (the destination is sello's own address, for logs).
 * Throws when the client address is not an IP address: never a header that hides the client.
 */
function addressPair(client: ClientIdentity): AddressPair {
  const source = unmapped(client.address);
  const family = net.isIP(source);
  if (family !== 4 && family !== 6) throw new TypeError(`client address ${JSON.stringify(client.address)} is not an IP address`);
  const local = unmapped(client.localAddress);
  const localFamily = net.isIP(local);
  let destination: string;
  if (localFamily === family) destination = local;
  else if (family === 6) destination = localFamily === 4 ? `::ffff:${local}` : '::';
  else destination = local === '::1' ? '127.0.0.1' : '0.0.0.0';
  return { family, source, destination };
}

function port16(port: number): number {
  return Number.isInteger(port) && port >= 0 && port <= 65535 ? port : 0;
}

/** PROXY protocol v1 (proxy-protocol.txt §2.1): "PROXY TCP4|TCP6 src dst sport dport\r\n". */
export function proxyV1Header(client: ClientIdentity): Buffer {
  const { family, source, destination } = addressPair(client);
  return Buffer.from(`PROXY TCP${family} ${source} ${destination} ${port16(client.port)} ${port16(client.localPort)}\r\n`, 'ascii');
}

/** proxy-protocol.txt §2.2: the 12-octet v2 signature. */
const proxyV2Signature = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

/**
 * PROXY protocol v2 (proxy-protocol.txt §2.2): signature, 0x21 (version 2, PROXY), 0x11 (TCP
 * over IPv4) or 0x21 (TCP over IPv6), the address block length (12 or 36, big-endian), source
 * and destination addresses, source and destination ports. No TLVs.
 */
export function proxyV2Header(client: ClientIdentity): Buffer {
  const { family, source, destination } = addressPair(client);
  const addresses = family === 4 ? [ipv4Bytes(source), ipv4Bytes(destination)] : [ipv6Bytes(source), ipv6Bytes(destination)];
  const ports = Buffer.alloc(4);
  ports.writeUInt16BE(port16(client.port), 0);
  ports.writeUInt16BE(port16(client.localPort), 2);
  const block = Buffer.concat([...addresses, ports]);
  const head = Buffer.from([0x21, family === 4 ? 0x11 : 0x21, block.length >> 8, block.length & 0xff]);
  return Buffer.concat([proxyV2Signature, head, block]);
}

/**
 * The header of a connection that proxies no client (the /readyz probe): v1 "PROXY UNKNOWN",
 * v2 the LOCAL command (0x20) with family UNSPEC and no addresses. A server that expects a
 * header would otherwise stall the probe (Exim waits proxy_protocol_timeout, 3 s, then greets)
 * or drop it.
 */
export function proxyLocalHeader(mode: 'proxy-v1' | 'proxy-v2'): Buffer {
  return mode === 'proxy-v1' ? Buffer.from('PROXY UNKNOWN\r\n', 'ascii') : Buffer.concat([proxyV2Signature, Buffer.from([0x20, 0x00, 0x00, 0x00])]);
}

/** The PROXY header for `client`, or undefined when the mode sends none. */
export function proxyHeader(mode: ForwardMode, client: ClientIdentity): Buffer | undefined {
  if (mode === 'proxy-v1') return proxyV1Header(client);
  if (mode === 'proxy-v2') return proxyV2Header(client);
  return undefined;
}

function ipv4Bytes(address: string): Buffer {
  return Buffer.from(address.split('.').map(Number));
}

/** 16 octets of an IPv6 address in any RFC 4291 §2.2 text form (including "::" and a trailing dotted quad). */
export function ipv6Bytes(address: string): Buffer {
  let text = address;
  const dottedQuad = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dottedQuad) {
    const [a = 0, b = 0, c = 0, d = 0] = (dottedQuad[1] as string).split('.').map(Number);
    text = `${text.slice(0, dottedQuad.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const headGroups = head ? head.split(':') : [];
  const tailGroups = tail ? tail.split(':') : [];
  const missing = tail === undefined ? 0 : 8 - headGroups.length - tailGroups.length;
  const groups = [...headGroups, ...Array<string>(missing).fill('0'), ...tailGroups];
  const bytes = Buffer.alloc(16);
  groups.forEach((group, index) => bytes.writeUInt16BE(Number.parseInt(group, 16), index * 2));
  return bytes;
}

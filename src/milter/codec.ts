// The milter wire protocol, version 6 (Sendmail 8.14+ libmilter, Postfix >= 2.6 milter8.c):
// packets MTA → filter decoded into typed commands, and the filter's responses encoded.
// Owns: framing (4-byte big-endian length, then a command byte and its data), every length
// bound, the constants of mfdef.h we use, and making reply text safe for the MTA.
// Must not: do I/O, keep session state or decide anything (session.ts and server.ts do).
//
// Packet: uint32 length (command byte + data), char command, data. Strings are NUL-terminated.

import type { SmtpReply } from '../errors.ts';

/** The protocol version we speak (mfdef.h SMFI_PROT_VERSION). */
export const MILTER_VERSION = 6;

/** Postfix sends body chunks of at most 65535 bytes (milter8.c MILTER_CHUNK_SIZE) unless SMFIP_MDS_* is negotiated (we do not). */
export const DEFAULT_MAX_PACKET_SIZE = 65535 + 1024;

/** Actions a filter may ask for (mfdef.h SMFIF_*). */
export const Action = {
  addHeaders: 0x01,
  changeBody: 0x02,
  addRecipient: 0x04,
  deleteRecipient: 0x08,
  changeHeaders: 0x10,
  quarantine: 0x20,
  changeFrom: 0x40,
  addRecipientWithArgs: 0x80,
  setMacroList: 0x100,
} as const;

/** Protocol steps the filter does not want, or does not reply to (mfdef.h SMFIP_*). */
export const Protocol = {
  noConnect: 0x1,
  noHelo: 0x2,
  noMail: 0x4,
  noRcpt: 0x8,
  noBody: 0x10,
  noHeaders: 0x20,
  noEndOfHeaders: 0x40,
  noReplyHeader: 0x80,
  noUnknown: 0x100,
  noData: 0x200,
  skip: 0x400,
  rejectedRecipients: 0x800,
  noReplyConnect: 0x1000,
  noReplyHelo: 0x2000,
  noReplyMail: 0x4000,
  noReplyRcpt: 0x8000,
  noReplyData: 0x10000,
  noReplyUnknown: 0x20000,
  noReplyEndOfHeaders: 0x40000,
  noReplyBody: 0x80000,
  /** Header values arrive (and must be sent) with the space after the colon (mfdef.h SMFIP_HDR_LEADSPC). */
  headerLeadingSpace: 0x100000,
} as const;

/** The stages a filter may ask macros for in the negotiation (mfdef.h SMFIM_*). */
export const MacroStage = { connect: 0, helo: 1, mail: 2, rcpt: 3, data: 4, endOfMessage: 5, endOfHeaders: 6 } as const;
export type MacroStageName = keyof typeof MacroStage;

/** Every command an MTA sends (mfdef.h SMFIC_*), decoded. */
export type MilterCommand =
  | { command: 'negotiate'; version: number; actions: number; protocol: number }
  | { command: 'connect'; hostname: string; family: 'inet' | 'inet6' | 'unix' | 'unknown'; port: number; address: string }
  | { command: 'helo'; helo: string }
  /** D: macros for the command named by `for` (its command character), sent just before it. */
  | { command: 'macros'; for: string; macros: Map<string, string> }
  | { command: 'mail'; args: string[] }
  | { command: 'rcpt'; args: string[] }
  | { command: 'data' }
  /** L: one header field; `value` exactly as sent (bytes kept, folds as "\n" or "\r\n"). */
  | { command: 'header'; name: string; value: Buffer }
  | { command: 'endOfHeaders' }
  | { command: 'body'; chunk: Buffer }
  | { command: 'endOfMessage'; chunk: Buffer }
  | { command: 'abort' }
  | { command: 'quit' }
  /** K (v6): the MTA closes the transaction but reuses the connection for a new one. */
  | { command: 'quitNewConnection' }
  | { command: 'unknown'; line: string };

/** The bytes broke the protocol: the connection must close (the MTA applies its default action). */
export class MilterProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MilterProtocolError';
  }
}

/**
 * Splits a byte stream into packets and decodes them. A packet longer than `maxPacketSize` is
 * refused as soon as its length is read: nothing is buffered for it.
 */
export class MilterDecoder {
  readonly #maxPacketSize: number;
  #pending: Buffer[] = [];
  #pendingLength = 0;

  constructor(maxPacketSize = DEFAULT_MAX_PACKET_SIZE) {
    this.#maxPacketSize = maxPacketSize;
  }

  /** Bytes received and not yet a whole packet (a truncated packet at close). */
  get buffered(): number {
    return this.#pendingLength;
  }

  /** Adds `chunk` and returns every whole packet now available, decoded. */
  push(chunk: Buffer): MilterCommand[] {
    if (chunk.length > 0) {
      this.#pending.push(chunk);
      this.#pendingLength += chunk.length;
    }
    const commands: MilterCommand[] = [];
    for (;;) {
      if (this.#pendingLength < 4) break;
      const head = this.#peek(4);
      const length = head.readUInt32BE(0);
      if (length === 0) throw new MilterProtocolError('packet of length 0 (no command byte)');
      if (length > this.#maxPacketSize) throw new MilterProtocolError(`packet of ${length} bytes is over the limit of ${this.#maxPacketSize}`);
      if (this.#pendingLength < 4 + length) break;
      const packet = this.#take(4 + length);
      commands.push(decodePacket(packet[4] as number, packet.subarray(5)));
    }
    return commands;
  }

  #peek(count: number): Buffer {
    if ((this.#pending[0] as Buffer).length < count) this.#pending = [Buffer.concat(this.#pending)];
    return (this.#pending[0] as Buffer).subarray(0, count);
  }

  #take(count: number): Buffer {
    const all = this.#pending.length === 1 ? (this.#pending[0] as Buffer) : Buffer.concat(this.#pending);
    const packet = all.subarray(0, count);
    const rest = all.subarray(count);
    this.#pending = rest.length > 0 ? [rest] : [];
    this.#pendingLength = rest.length;
    return packet;
  }
}

/** Reads NUL-terminated strings and fixed fields from one packet's data; any overrun is a protocol error. */
class FieldReader {
  readonly data: Buffer;
  readonly what: string;
  #offset = 0;
  constructor(data: Buffer, what: string) {
    this.data = data;
    this.what = what;
  }

  get remaining(): number {
    return this.data.length - this.#offset;
  }

  bytesUntilNul(): Buffer {
    const end = this.data.indexOf(0, this.#offset);
    if (end === -1) throw new MilterProtocolError(`${this.what}: string without its terminating NUL`);
    const field = this.data.subarray(this.#offset, end);
    this.#offset = end + 1;
    return field;
  }

  string(): string {
    return this.bytesUntilNul().toString('utf8');
  }

  uint32(): number {
    if (this.remaining < 4) throw new MilterProtocolError(`${this.what}: truncated`);
    const value = this.data.readUInt32BE(this.#offset);
    this.#offset += 4;
    return value;
  }

  uint16(): number {
    if (this.remaining < 2) throw new MilterProtocolError(`${this.what}: truncated`);
    const value = this.data.readUInt16BE(this.#offset);
    this.#offset += 2;
    return value;
  }

  byte(): number {
    if (this.remaining < 1) throw new MilterProtocolError(`${this.what}: truncated`);
    return this.data[this.#offset++] as number;
  }

  /** Strings until the data ends (MAIL/RCPT arguments); the last must be terminated too. */
  strings(): string[] {
    const values: string[] = [];
    while (this.remaining > 0) values.push(this.string());
    return values;
  }

  end(): void {
    if (this.remaining !== 0) throw new MilterProtocolError(`${this.what}: ${this.remaining} unexpected bytes at the end`);
  }
}

const families = { '4': 'inet', '6': 'inet6', L: 'unix', U: 'unknown' } as const;

/** One packet's command byte and data → the command (mfdef.h SMFIC_*, formats as libmilter's engine.c reads them). */
export function decodePacket(code: number, data: Buffer): MilterCommand {
  const letter = String.fromCharCode(code);
  const fields = new FieldReader(data, `command '${printable(code)}'`);
  switch (letter) {
    case 'O': {
      // SMFIC_OPTNEG: version, actions, protocol (uint32 each).
      const version = fields.uint32();
      const actions = fields.uint32();
      const protocol = fields.uint32();
      fields.end();
      return { command: 'negotiate', version, actions, protocol };
    }
    case 'C': {
      // SMFIC_CONNECT: hostname NUL, family char, then (not for 'U') port uint16 and address NUL.
      const hostname = fields.string();
      const familyCode = String.fromCharCode(fields.byte());
      const family = families[familyCode as keyof typeof families];
      if (!family) throw new MilterProtocolError(`connect: unknown address family '${printable(familyCode.charCodeAt(0))}'`);
      if (family === 'unknown') {
        fields.end();
        return { command: 'connect', hostname, family, port: 0, address: '' };
      }
      const port = fields.uint16();
      const address = fields.string();
      fields.end();
      return { command: 'connect', hostname, family, port, address };
    }
    case 'H': {
      const helo = fields.string();
      fields.end();
      return { command: 'helo', helo };
    }
    case 'D': {
      // SMFIC_MACRO: the command character the macros belong to, then name NUL value NUL pairs.
      const forCode = fields.byte();
      const macros = new Map<string, string>();
      while (fields.remaining > 0) {
        const name = fields.string();
        const value = fields.string();
        macros.set(name, value);
      }
      return { command: 'macros', for: String.fromCharCode(forCode), macros };
    }
    case 'M':
    case 'R': {
      const args = fields.strings();
      if (args.length === 0) throw new MilterProtocolError(`${letter === 'M' ? 'mail' : 'rcpt'}: no address`);
      return { command: letter === 'M' ? 'mail' : 'rcpt', args };
    }
    case 'L': {
      const name = fields.bytesUntilNul().toString('latin1');
      const value = Buffer.from(fields.bytesUntilNul());
      fields.end();
      if (name.length === 0) throw new MilterProtocolError('header: empty field name');
      return { command: 'header', name, value };
    }
    case 'B':
      return { command: 'body', chunk: Buffer.from(data) };
    case 'E':
      // SMFIC_BODYEOB may carry a last body chunk (libmilter passes it to xxfi_body).
      return { command: 'endOfMessage', chunk: Buffer.from(data) };
    case 'U': {
      const line = fields.string();
      fields.end();
      return { command: 'unknown', line };
    }
    case 'T':
    case 'N':
    case 'A':
    case 'Q':
    case 'K': {
      fields.end();
      const command = ({ T: 'data', N: 'endOfHeaders', A: 'abort', Q: 'quit', K: 'quitNewConnection' } as const)[letter];
      return { command };
    }
    default:
      throw new MilterProtocolError(`unknown command '${printable(code)}'`);
  }
}

function printable(code: number): string {
  return code >= 0x21 && code <= 0x7e ? String.fromCharCode(code) : `\\x${code.toString(16).padStart(2, '0')}`;
}

/** One response packet: length, command character, data. */
function packet(letter: string, ...parts: Buffer[]): Buffer {
  const data = Buffer.concat(parts);
  const head = Buffer.alloc(5);
  head.writeUInt32BE(data.length + 1, 0);
  head[4] = letter.charCodeAt(0);
  return Buffer.concat([head, data]);
}

function uint32(value: number): Buffer {
  const bytes = Buffer.alloc(4);
  bytes.writeUInt32BE(value >>> 0, 0);
  return bytes;
}

function cString(value: string | Buffer): Buffer {
  const bytes = typeof value === 'string' ? Buffer.from(value, 'latin1') : value;
  if (bytes.includes(0)) throw new Error('a milter string cannot contain NUL');
  return Buffer.concat([bytes, Buffer.from([0])]);
}

/** O: our version, the actions and protocol flags we want, and the macros we want per stage (SMFIF_SETSYMLIST). */
export function encodeNegotiation(options: { version: number; actions: number; protocol: number; macros?: Partial<Record<MacroStageName, readonly string[]>> }): Buffer {
  const lists = Object.entries(options.macros ?? {}).flatMap(([stage, names]) => [
    uint32(MacroStage[stage as MacroStageName]),
    cString((names as readonly string[]).join(' ')),
  ]);
  return packet('O', uint32(options.version), uint32(options.actions), uint32(options.protocol), ...lists);
}

export const encodeContinue = (): Buffer => packet('c');
export const encodeAccept = (): Buffer => packet('a');
export const encodeReject = (): Buffer => packet('r');
export const encodeTempfail = (): Buffer => packet('t');
/** p: still working, reset the MTA's timeout (end of message only). */
export const encodeProgress = (): Buffer => packet('p');

/**
 * y: the SMTP reply the MTA gives instead of its own. Text the MTA would misread is removed:
 * no CR/LF/NUL or other control characters (one line only), and '%' is doubled because Sendmail
 * uses the reply as a format string (Postfix milter8.c undoes the doubling). Only 4xx/5xx
 * replies are valid here (libmilter smfi_setreply).
 */
export function encodeReplyCode(reply: SmtpReply): Buffer {
  if (reply.code < 400 || reply.code > 599) throw new Error(`a milter reply code must be 4xx or 5xx, not ${reply.code}`);
  if (reply.enhanced && !/^[45]\.\d{1,3}\.\d{1,3}$/.test(reply.enhanced)) throw new Error(`not an enhanced status code: ${reply.enhanced}`);
  if (reply.enhanced && reply.enhanced[0] !== String(reply.code)[0]) throw new Error(`enhanced code ${reply.enhanced} does not match ${reply.code}`);
  const text = reply.text
    .replace(/[^\x20-\x7e]+/g, ' ')
    .replace(/%/g, '%%')
    .trim();
  return packet('y', cString([String(reply.code), reply.enhanced, text].filter(Boolean).join(' ')));
}

/**
 * A header field value in the form the MTA expects in h/i/m: folded lines joined by "\n" (Sendmail
 * and Postfix keep header lines without CR), with the leading space when SMFIP_HDR_LEADSPC was
 * negotiated (milter8.c MILTER8_HDR_SPACE) and without it otherwise.
 */
export function headerValueForMta(value: string, leadingSpace: boolean): Buffer {
  const lines = value.replace(/\r\n$/, '').replace(/\r\n/g, '\n');
  if (/[\r\0]/.test(lines) || /\n(?![ \t])/.test(lines)) throw new Error('a header value may only contain folded lines (CRLF + WSP)');
  return Buffer.from(leadingSpace ? lines : lines.replace(/^ /, ''), 'latin1');
}

/** h: append a header field at the end of the header. */
export function encodeAddHeader(name: string, value: Buffer): Buffer {
  return packet('h', cString(name), cString(value));
}

/** i: insert a header field at `index` (0: before the first field). */
export function encodeInsertHeader(index: number, name: string, value: Buffer): Buffer {
  return packet('i', uint32(index), cString(name), cString(value));
}

/** m: change the `index`-th (1-based) field named `name`; an empty value deletes it. */
export function encodeChangeHeader(index: number, name: string, value: Buffer): Buffer {
  return packet('m', uint32(index), cString(name), cString(value));
}

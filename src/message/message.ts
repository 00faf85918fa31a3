// The message as sello handles it: exact bytes with CRLF line endings, split into header and body.
// Owns: line-ending and NUL policy (PRODUCT.md §4 "the bytes signed are the bytes relayed"), the header/
// body split, and reading the RFC 5322 From. Must not: change any byte other than line endings.

import addressparser from 'nodemailer/lib/addressparser';
import { Replies, SmtpReplyError } from '../errors.ts';
import { normalizeLineEndings } from './line-endings.ts';
import type { HeaderField } from './header-edits.ts';

const CR = 0x0d;
const LF = 0x0a;

/** True if `data` has a CR not followed by LF or an LF not preceded by CR. */
export function hasBareLineEnding(data: Buffer): boolean {
  for (let index = data.indexOf(LF); index !== -1; index = data.indexOf(LF, index + 1)) {
    if (index === 0 || data[index - 1] !== CR) return true;
  }
  for (let index = data.indexOf(CR); index !== -1; index = data.indexOf(CR, index + 1)) {
    if (data[index + 1] !== LF) return true;
  }
  return false;
}

/** Removes every NUL byte. */
export function stripNul(data: Buffer): Buffer {
  const out = Buffer.allocUnsafe(data.length);
  let length = 0;
  for (let start = 0; start < data.length; ) {
    const nul = data.indexOf(0, start);
    const end = nul === -1 ? data.length : nul;
    length += data.copy(out, length, start, end);
    start = end + 1;
  }
  return Buffer.from(out.subarray(0, length));
}

/**
 * Applies `data.nul`, then `data.bareLineEndings`, before anything is signed or relayed.
 * NUL first: RFC 5321 §4.5.2 and RFC 5322 §2.3 leave no place for it in a message, and MTAs
 * that drop NULs would read "CRLF NUL . CRLF" as the end of the data (SMTP smuggling): `reject`
 * refuses the message with 550 5.6.0, `strip` removes the NULs so the line ends the normaliser
 * and the relay's dot-stuffing see are the ones every MTA sees. Absent (`sello verify`, which
 * relays nothing): NULs are left alone. Then bare line endings: normalize, or reject with
 * 550 5.6.0. A message that already has only CRLF endings is returned as it is (plus a final
 * CRLF if missing).
 */
export function prepareMessage(input: Buffer, bareLineEndings: 'normalize' | 'reject', nul?: 'reject' | 'strip'): Buffer {
  let data = input;
  if (nul && data.includes(0)) {
    if (nul === 'reject') throw new SmtpReplyError(Replies.nulInMessage);
    data = stripNul(data);
  }
  if (hasBareLineEnding(data)) {
    if (bareLineEndings === 'reject') throw new SmtpReplyError(Replies.bareLineEnding);
    return normalizeLineEndings(data);
  }
  if (data.length >= 2 && data[data.length - 2] === CR && data[data.length - 1] === LF) return data;
  return normalizeLineEndings(data);
}

export interface SplitMessage {
  /** Header fields, each ending in CRLF, without the empty line. */
  header: Buffer;
  /** Everything after the empty line (may be empty). */
  body: Buffer;
}

/** RFC 5322 §2.1: the header section ends at the first empty line. Input has CRLF endings. */
export function splitMessage(message: Buffer): SplitMessage {
  if (message.subarray(0, 2).equals(Buffer.from('\r\n'))) return { header: Buffer.alloc(0), body: message.subarray(2) };
  const end = message.indexOf('\r\n\r\n');
  if (end === -1) return { header: message, body: Buffer.alloc(0) };
  return { header: message.subarray(0, end + 2), body: message.subarray(end + 4) };
}

/** The raw values of every field named `name` (case-insensitive), unfolded. */
export function headerValues(header: Buffer, name: string): string[] {
  const wanted = name.toLowerCase();
  const values: string[] = [];
  const lines = header.toString('latin1').split('\r\n');
  for (let index = 0; index < lines.length; index++) {
    const line = lines[index] as string;
    const colon = line.indexOf(':');
    if (colon <= 0 || /^[ \t]/.test(line) || line.slice(0, colon).trim().toLowerCase() !== wanted) continue;
    let value = line.slice(colon + 1);
    while (index + 1 < lines.length && /^[ \t]/.test(lines[index + 1] as string)) value += lines[++index];
    values.push(value.trim());
  }
  return values;
}

/**
 * headerValues over fields already split (headerFields), so the header is not parsed again: the
 * values of the fields named `name`, unfolded. A line starting with WSP is no field of its own.
 */
export function fieldValues(fields: readonly HeaderField[], name: string): string[] {
  const wanted = name.toLowerCase();
  const values: string[] = [];
  for (const field of fields) {
    // As headerValues reads lines: the colon on the field's first line, after at least one octet.
    const colon = field.raw.indexOf(':');
    if (colon <= 0 || colon > field.raw.indexOf('\r\n') || /^[ \t]/.test(field.raw) || field.name.toLowerCase() !== wanted) continue;
    values.push(field.raw.slice(colon + 1).replace(/\r\n/g, '').trim());
  }
  return values;
}

/**
 * The single author address of the message, or the reply that refuses it. RFC 5322 §3.6 allows
 * exactly one From field; DMARC (RFC 7489 §6.6.1) cannot evaluate several From addresses, and
 * sello signs with d= aligned to the From domain, so submission requires exactly one. Takes the
 * header section, or its fields when the pipeline has split them already.
 */
export function singleFromAddress(header: Buffer | readonly HeaderField[]): { address: string; domain: string } {
  const fields = Buffer.isBuffer(header) ? headerValues(header, 'From') : fieldValues(header, 'From');
  if (fields.length === 0) throw new SmtpReplyError(Replies.fromMissing);
  if (fields.length > 1) throw new SmtpReplyError(Replies.fromMultiple);
  const parsed = addressparser(Buffer.from(fields[0] as string, 'latin1').toString('utf8'));
  const mailboxes = parsed.flatMap((entry) => ('group' in entry && entry.group ? entry.group : [entry]));
  if (mailboxes.length !== 1) throw new SmtpReplyError(mailboxes.length ? Replies.fromMultiple : Replies.fromMissing);
  const address = (mailboxes[0] as { address?: string }).address ?? '';
  const at = address.lastIndexOf('@');
  if (at <= 0 || at === address.length - 1) throw new SmtpReplyError(Replies.fromMissing);
  return { address, domain: address.slice(at + 1).toLowerCase() };
}

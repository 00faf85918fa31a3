// The Received-SPF header field (RFC 7208 §9.1) for one SPF outcome.
// Owns: its syntax, quoting, sanitising and folding. HELO and MAIL FROM come from the client, so
// every value is reduced to printable US-ASCII and written as a dot-atom or a quoted-string, and
// the comment escapes its delimiters: nothing the client sends can end the field, start another
// one, close the comment early or add a key=value pair.
// Must not: decide anything about the message or evaluate SPF.

import type { SpfOutcome } from '../checks/types.ts';

// RFC 5322 §2.1.1: lines SHOULD be at most 78 characters, MUST be at most 998 (without CRLF).
const PREFERRED_LINE_LENGTH = 78;
// A value longer than this is cut: quoted and fully escaped (2 octets per character) it still fits
// on one line of at most 998 octets with its key. SMTP itself limits a path to 256 octets and a
// domain to 255 (RFC 5321 §4.5.3.1), so only hostile or broken input is ever cut.
export const MAX_VALUE_LENGTH = 400;
// A comment word longer than this is cut (and marked with "...") for the same reason.
const MAX_COMMENT_WORD_LENGTH = 400;

/**
 * Replaces every character that is not printable US-ASCII or SP (control characters including
 * CR, LF, HTAB and NUL, DEL, and everything beyond 0x7E) by "?", and cuts to `maxLength`.
 * RFC 7208 §9.1 values and comments are US-ASCII; RFC 5322 §2.2 header bodies have no CR/LF.
 */
export function sanitiseHeaderText(text: string, maxLength = MAX_VALUE_LENGTH): string {
  return Array.from(text, (character) => (/^[\x20-\x7e]$/.test(character) ? character : '?'))
    .slice(0, maxLength)
    .join('');
}

// RFC 5322 §3.2.3: atext, and dot-atom-text = 1*atext *("." 1*atext).
const DOT_ATOM_TEXT = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?:\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*$/;

/** A §9.1 value: the dot-atom if the (sanitised) text is one, else an RFC 5322 §3.2.4
 *  quoted-string with `"` and `\` written as quoted-pairs. */
export function formatValue(value: string): string {
  const clean = sanitiseHeaderText(value);
  if (DOT_ATOM_TEXT.test(clean)) return clean;
  return `"${clean.replace(/["\\]/g, '\\$&')}"`;
}

/** The comment's words, each escaped as RFC 5322 §3.2.2 ccontent (quoted-pairs for "(", ")"
 *  and "\"); runs of white space become the single spaces between words. */
function commentWords(comment: string): string[] {
  return sanitiseHeaderText(comment, Number.POSITIVE_INFINITY)
    .split(' ')
    .filter((word) => word !== '')
    .map((word) => (word.length > MAX_COMMENT_WORD_LENGTH ? `${word.slice(0, MAX_COMMENT_WORD_LENGTH)}...` : word))
    .map((word) => word.replace(/[()\\]/g, '\\$&'));
}

/**
 * The whole header field, CRLF-terminated:
 * `Received-SPF: <result> (<comment>) client-ip=…; envelope-from=…; helo=…; receiver=…; identity=…;`
 * envelope-from is the MAIL FROM as given, `""` for the null sender, whatever identity was
 * checked (RFC 7208 §9.1 "the envelope sender mailbox"; with identity=mailfrom and a null
 * sender the checked mailbox was postmaster@<helo>, RFC 7208 §2.4).
 */
export function formatReceivedSpf(outcome: SpfOutcome, receiver: string): string {
  // RFC 7208 §9.1: header-field = "Received-SPF:" [CFWS] result FWS [comment FWS] [key-value-list] CRLF
  const atoms: string[] = ['Received-SPF:', outcome.result];
  const words = commentWords(outcome.comment);
  if (words.length > 0) {
    words[0] = `(${words[0]}`;
    words[words.length - 1] = `${words[words.length - 1]})`;
    atoms.push(...words);
  }
  // key-value-list = key-value-pair *( ";" [CFWS] key-value-pair ) [";"]
  const pairs: [string, string][] = [
    ['client-ip', outcome.clientIp],
    ['envelope-from', outcome.mailFrom],
    ['helo', outcome.helo],
    ['receiver', receiver],
    ['identity', outcome.identity],
  ];
  for (const [key, value] of pairs) atoms.push(`${key}=${formatValue(value)};`);
  return `${fold(atoms)}\r\n`;
}

/** Joins atoms with single spaces, starting a new (indented) line instead of a space where the
 *  line would pass 78 characters (RFC 5322 §2.2.3: folding inserts CRLF before white space). */
function fold(atoms: string[]): string {
  const lines: string[] = [];
  let line = '';
  for (const atom of atoms) {
    if (line === '') line = atom;
    else if (line.length + 1 + atom.length <= PREFERRED_LINE_LENGTH) line += ` ${atom}`;
    else {
      lines.push(line);
      line = ` ${atom}`;
    }
  }
  lines.push(line);
  return lines.join('\r\n');
}

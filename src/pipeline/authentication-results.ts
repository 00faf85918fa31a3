// Authentication-Results (RFC 8601): one field with our authserv-id carrying every result, and
// removal of incoming fields that claim our authserv-id (RFC 8601 §5).
// Owns: assembling the field. Must not: run checks or decide policy.

import { formatAuthHeaderRow, formatAuthservId } from 'mailauth/lib/tools.js';
import type { ArcVerification } from '../checks/arc.ts';
import type { DkimVerification } from '../checks/dkim-verify.ts';
import type { DmarcEvaluation } from '../checks/dmarc.ts';
import type { SpfOutcome } from '../checks/types.ts';
import { fieldReferences, type FieldReference, type HeaderField } from '../message/index.ts';

export interface InboundResults {
  spf: SpfOutcome[];
  dkim?: DkimVerification;
  arc?: ArcVerification;
  dmarc?: DmarcEvaluation;
}

/** "spf=pass (comment) smtp.mailfrom=alice@example.com" or "… smtp.helo=mx.example.com". */
function spfResinfo(outcome: SpfOutcome): string {
  const smtp: Record<string, string> = outcome.identity === 'helo' ? { helo: outcome.helo } : { mailfrom: outcome.sender };
  return formatAuthHeaderRow('spf', { result: outcome.result, comment: outcome.comment, smtp }, { strict: true });
}

/**
 * The whole field, CRLF-terminated. Resinfos are folded one per line (RFC 8601 §2.2 allows CFWS
 * around ";"). A message without signatures gets "dkim=none" (RFC 8601 §2.7.1).
 */
export function formatAuthenticationResults(authservId: string, results: InboundResults): string {
  return `Authentication-Results: ${authenticationResultsValue(authservId, results)}\r\n`;
}

/**
 * The field's value, folded, without the name or the final CRLF: "authserv-id;\r\n resinfo…".
 * An ARC-Authentication-Results carries the same value after its "i=N; " (RFC 8617 §4.1.1).
 */
export function authenticationResultsValue(authservId: string, results: InboundResults): string {
  const resinfos: string[] = [];
  for (const outcome of results.spf) resinfos.push(spfResinfo(outcome));
  if (results.dkim) {
    if (results.dkim.signatures.length === 0) resinfos.push('dkim=none');
    for (const signature of results.dkim.signatures) resinfos.push(signature.info.replace(/\r?\n[ \t]*/g, ' '));
  }
  if (results.dmarc) resinfos.push(results.dmarc.info.replace(/\r?\n[ \t]*/g, ' '));
  if (results.arc) resinfos.push(results.arc.info.replace(/\r?\n[ \t]*/g, ' '));
  if (resinfos.length === 0) resinfos.push('none');
  return `${formatAuthservId(authservId, true)};\r\n ${resinfos.join(';\r\n ')}`;
}

/** The authserv-id of an Authentication-Results value: its first token, CFWS and quotes aside. */
export function authservIdOf(value: string): string {
  let text = value.trimStart();
  // Skip leading comments (CFWS), e.g. "(comment) example.com; spf=pass".
  while (text.startsWith('(')) {
    let depth = 0;
    let index = 0;
    for (; index < text.length; index++) {
      const char = text[index];
      if (char === '\\') index++;
      else if (char === '(') depth++;
      else if (char === ')' && --depth === 0) break;
    }
    text = text.slice(index + 1).trimStart();
  }
  const quoted = /^"((?:[^"\\]|\\.)*)"/.exec(text);
  if (quoted) return (quoted[1] as string).replace(/\\(.)/g, '$1');
  return (/^[^\s;()]+/.exec(text)?.[0] ?? '').replace(/\.$/, '');
}

/**
 * RFC 8601 §5: a border MTA removes Authentication-Results fields that claim its own authserv-id
 * (they are forgeries from outside). Returns them as references (name, index among the fields of
 * that name) for the header edits; `fields` is the header section as received.
 */
export function forgedAuthenticationResults(fields: readonly HeaderField[], authservId: string): FieldReference[] {
  const wanted = authservId.toLowerCase();
  return fieldReferences(fields, (field) => {
    if (field.name.toLowerCase() !== 'authentication-results') return false;
    const value = field.raw.slice(field.raw.indexOf(':') + 1).replace(/\r\n/g, '');
    return authservIdOf(value).toLowerCase() === wanted;
  });
}

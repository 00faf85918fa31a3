// keycheck's judgement: is the TXT record at <selector>._domainkey.<domain> the public half of
// this private key? One function shared by `sello keycheck` and the rotation gate (a pending key
// is promoted only on this function's "ok"), so the command and the server never disagree.
// Owns: reading DKIM key records (RFC 6376 §3.6.1, RFC 8463 §4.2) and comparing them with a key.
// Must not: query DNS itself (the caller injects its resolver), change files, or print anything.

import { createPublicKey } from 'node:crypto';
import { KeyError } from '../errors.ts';
import { loadKey, recordName, type KeyAlgorithm, type LoadedKey } from './keys.ts';

export type KeyState = 'ok' | 'missing' | 'mismatch' | 'revoked' | 'error';

export interface KeyCheck {
  domain: string;
  selector: string;
  /** The owner name looked up, without the final dot. */
  name: string;
  path: string;
  /** The local key's algorithm and RSA size; absent when the key could not be read. */
  algorithm?: KeyAlgorithm;
  bits?: number;
  state: KeyState;
  /** Why the state is what it is; empty for a plain ok. */
  detail: string;
  /** Things worth knowing that do not change the state (other TXT records, testing mode …). */
  notes: string[];
  /** The TXT records found at the name, each one's character-strings joined. */
  published: string[];
}


/** A local key to check: its signing domain, selector and file. */
export type LocalKey = { domain: string; selector: string; path: string };

type Resolve = (name: string, rrtype: string) => Promise<unknown>;

/** Checks one local key against DNS. Never throws for a DNS or key problem: that is a state. */
export async function checkKey(local: LocalKey, resolve: Resolve): Promise<KeyCheck> {
  const name = recordName(local.domain, local.selector);
  const base = { domain: local.domain, selector: local.selector, name, path: local.path, notes: [] as string[], published: [] as string[] };
  let key: LoadedKey;
  try {
    key = await loadKey(local.path);
  } catch (error) {
    if (!(error instanceof KeyError)) throw error;
    return { ...base, state: 'error', detail: `local key: ${error.message}` };
  }
  const described = { ...base, algorithm: key.algorithm, ...(key.bits === undefined ? {} : { bits: key.bits }) };

  let answer: unknown;
  try {
    answer = await resolve(name, 'TXT');
  } catch (error) {
    const code = errorCode(error);
    if (code === 'ENOTFOUND') return { ...described, state: 'missing', detail: 'no such name (NXDOMAIN)' };
    if (code === 'ENODATA') return { ...described, state: 'missing', detail: 'no TXT record at the name (NODATA)' };
    return { ...described, state: 'error', detail: `DNS lookup failed (${code ?? describe(error)}); try again or check --dns` };
  }
  // RFC 6376 §3.6.2.2: the character-strings of one TXT record are concatenated with no
  // intervening whitespace before use.
  const published = (answer as string[][]).map((strings) => strings.join(''));
  return { ...described, published, ...judge(published, key) };
}

type Judgement = Pick<KeyCheck, 'state' | 'detail' | 'notes'>;

/** The state of a key given every TXT record at its name. */
export function judge(published: readonly string[], key: Pick<LoadedKey, 'algorithm' | 'privateKey'>): Judgement {
  const notes: string[] = [];
  const keyRecords: { tags: Map<string, string> }[] = [];
  const invalid: string[] = [];
  for (const text of published) {
    const record = parseKeyRecord(text);
    if (record.kind === 'other') continue;
    if (record.kind === 'invalid') invalid.push(record.reason);
    else keyRecords.push(record);
  }
  const others = published.length - keyRecords.length - invalid.length;
  if (others > 0) notes.push(`${others} other TXT record(s) at the name (not DKIM key records, ignored)`);

  if (keyRecords.length === 0 && invalid.length === 0) {
    return { state: 'missing', detail: `${published.length} TXT record(s) at the name, none a DKIM key record`, notes };
  }
  const verdicts: Judgement[] = [
    ...invalid.map((reason): Judgement => ({ state: 'mismatch', detail: `invalid key record: ${reason}`, notes: [] })),
    ...keyRecords.map((record) => compare(record.tags, key)),
  ];
  for (const verdict of verdicts) notes.push(...verdict.notes);
  const [only] = verdicts;
  if (verdicts.length === 1 && only) return { state: only.state, detail: only.detail, notes };

  // RFC 6376 §3.6.2.2: "if there are multiple records in an RRset, the results are undefined":
  // a verifier may use any of them, so this is fine only when every one carries our key.
  const several = `${verdicts.length} DKIM key records at the name (RFC 6376 §3.6.2.2: the result is undefined, verifiers may use any)`;
  if (verdicts.every((verdict) => verdict.state === 'ok')) {
    notes.unshift(`${several}; all carry this key`);
    return { state: 'ok', detail: '', notes };
  }
  if (verdicts.every((verdict) => verdict.state === 'revoked')) return { state: 'revoked', detail: `${several}, all revoked`, notes };
  const each = verdicts.map((verdict) => (verdict.state === 'ok' ? 'ok' : `${verdict.state} (${verdict.detail})`)).join('; ');
  return { state: 'mismatch', detail: `${several}: ${each}`, notes };
}

type ParsedRecord = { kind: 'key'; tags: Map<string, string> } | { kind: 'invalid'; reason: string } | { kind: 'other' };

/**
 * One TXT record as a DKIM key record (RFC 6376 §3.6.1, tag-list syntax §3.2). A record that
 * starts with v= of another value is not ours to judge ("MUST be discarded"); one without v=
 * counts as a key record when it has a p= tag (v= is only RECOMMENDED).
 */
export function parseKeyRecord(text: string): ParsedRecord {
  const tags = new Map<string, string>();
  const order: string[] = [];
  let syntaxError: string | undefined;
  // RFC 6376 §3.2: tag-spec = [FWS] tag-name [FWS] "=" [FWS] tag-value [FWS], separated by ";",
  // with an optional final ";".
  for (const spec of text.split(';')) {
    if (spec.trim() === '') continue;
    const equals = spec.indexOf('=');
    const tagName = equals === -1 ? '' : spec.slice(0, equals).trim();
    if (!/^[A-Za-z][A-Za-z0-9_]*$/.test(tagName)) {
      syntaxError ??= `${JSON.stringify(spec.trim())} is not a tag=value pair`;
      continue;
    }
    // Tag names are case-sensitive (§3.2); a duplicate makes the whole tag-list invalid.
    if (tags.has(tagName)) syntaxError ??= `the ${tagName}= tag occurs twice`;
    tags.set(tagName, spec.slice(equals + 1).trim());
    order.push(tagName);
  }
  const version = tags.get('v');
  if (version !== undefined && version !== 'DKIM1') {
    // §3.6.1: "Records beginning with a "v=" tag with any other value MUST be discarded."
    return order[0] === 'v' ? { kind: 'other' } : { kind: 'invalid', reason: `v=${version} is not DKIM1` };
  }
  if (version === undefined && !tags.has('p')) return { kind: 'other' };
  if (syntaxError !== undefined) return { kind: 'invalid', reason: syntaxError };
  if (version !== undefined && order[0] !== 'v') return { kind: 'invalid', reason: 'v=DKIM1 must be the first tag (RFC 6376 §3.6.1)' };
  if (!tags.has('p')) return { kind: 'invalid', reason: 'no p= tag (it is required, RFC 6376 §3.6.1)' };
  return { kind: 'key', tags };
}

/** One key record against the local key: k= (default rsa) and p=. */
function compare(tags: Map<string, string>, key: Pick<LoadedKey, 'algorithm' | 'privateKey'>): Judgement {
  const notes: string[] = [];
  // RFC 6376 §3.6.1 t=: a colon-separated list of flags; unknown flags MUST be ignored.
  const flags = (tags.get('t') ?? '').split(':').map((flag) => flag.trim());
  // t=y marks a domain testing DKIM; verifiers must not treat it differently from unsigned mail,
  // so say so but do not count it as a problem.
  if (flags.includes('y')) notes.push('t=y: the domain is testing DKIM');
  // t=s: i= must not be a subdomain of d=; sello's signatures carry no i= (default @d=), so it holds.
  if (flags.includes('s')) notes.push('t=s: strict subdomains (i= must be in d= itself; sello sets no i=, so its signatures comply)');
  const note = tags.get('n');
  if (note !== undefined && note !== '') notes.push(`n=${note}`);
  // §3.6.1: p= is a base64string, which may contain FWS (§2.4); those spaces are not part of the key.
  const p = (tags.get('p') ?? '').replace(/[\t\r\n ]+/g, '');
  if (p === '') return { state: 'revoked', detail: 'p= is empty: the key is revoked (RFC 6376 §3.6.1)', notes };
  // s=: service types, "*" (the default) or "email"; a key for other services only must not
  // be used to verify mail (§3.6.1), so it cannot verify what sello signs.
  const services = (tags.get('s') ?? '*').split(':').map((service) => service.trim().toLowerCase());
  if (!services.includes('*') && !services.includes('email')) {
    return { state: 'mismatch', detail: `s=${tags.get('s') ?? ''} does not include email or *: verifiers will not use this key for mail (RFC 6376 §3.6.1)`, notes };
  }
  // h=: acceptable hash algorithms (default: all); sello signs with sha256 (RFC 8301 §3.1).
  const hashes = tags.get('h');
  if (hashes !== undefined && !hashes.split(':').map((hash) => hash.trim().toLowerCase()).includes('sha256')) {
    return { state: 'mismatch', detail: `h=${hashes} does not allow sha256, the only hash sello signs with (RFC 8301 §3.1)`, notes };
  }

  const published = (tags.get('k') ?? 'rsa').toLowerCase(); // k= defaults to rsa (§3.6.1)
  if (published !== key.algorithm) {
    return { state: 'mismatch', detail: `k=${published} is published, the local key is ${key.algorithm}`, notes };
  }
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(p) || p.length % 4 !== 0) {
    return { state: 'mismatch', detail: 'p= is not valid base64', notes };
  }
  const bytes = Buffer.from(p, 'base64');
  const publicKey = createPublicKey(key.privateKey);
  if (key.algorithm === 'ed25519') {
    // RFC 8463 §4.2: p= is the raw 32-byte Ed25519 public key, not a SubjectPublicKeyInfo.
    const raw = Buffer.from(publicKey.export({ format: 'jwk' }).x ?? '', 'base64url');
    if (bytes.equals(raw)) return { state: 'ok', detail: '', notes };
    const spki = publicKey.export({ type: 'spki', format: 'der' });
    if (bytes.equals(spki)) {
      return { state: 'mismatch', detail: 'p= holds this key as SubjectPublicKeyInfo; RFC 8463 §4.2 needs the raw 32-byte key', notes };
    }
    return { state: 'mismatch', detail: 'p= is a different public key', notes };
  }
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  if (bytes.equals(spki)) return { state: 'ok', detail: '', notes };
  // RFC 6376 §3.6.1 names RSAPublicKey (PKCS#1) while practice is SubjectPublicKeyInfo; common
  // verifiers take both, so a PKCS#1 record of this key is ok, with a note.
  if (bytes.equals(publicKey.export({ type: 'pkcs1', format: 'der' }))) {
    notes.push('p= is a PKCS#1 RSAPublicKey; most records use SubjectPublicKeyInfo (what sello dns-record prints)');
    return { state: 'ok', detail: '', notes };
  }
  return { state: 'mismatch', detail: 'p= is a different public key', notes };
}


function errorCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string' ? error.code : undefined;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

// DKIM key material: generate, name (keys/<domain>/<selector>.pem), write, load, and turn a key
// into its DNS TXT record (RFC 6376 §3.6.1, RFC 8463 §4.2).
// Owns: key file naming and validation, file modes, the record value and its BIND/JSON forms.
// Must not: sign messages, read configuration, query DNS or print anything (callers report).

import { createPrivateKey, createPublicKey, generateKeyPairSync, KeyObject } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { mkdir, open, rename, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { domainToASCII } from 'node:url';
import { KeyError } from '../errors.ts';

export type KeyAlgorithm = 'rsa' | 'ed25519';
export const rsaKeySizes = [1024, 2048, 3072, 4096] as const;
export type RsaKeySize = (typeof rsaKeySizes)[number];
export type RecordFormat = 'bind' | 'value' | 'json';
export const recordFormats: readonly RecordFormat[] = ['bind', 'value', 'json'];

export function isRecordFormat(value: string): value is RecordFormat {
  return (recordFormats as readonly string[]).includes(value);
}

export interface LoadedKey {
  readonly path: string;
  readonly algorithm: KeyAlgorithm;
  /** RSA modulus length; absent for Ed25519. */
  readonly bits?: number;
  readonly privateKey: KeyObject;
  /** The file's contents as read. */
  readonly pem: string;
  /** Problems that do not stop the key from being used: loose file mode, 1024-bit RSA. */
  readonly warnings: string[];
  /** The file's modification time (sello_key_age_seconds). */
  readonly modified: Date;
  /** The file's permission bits, e.g. 0o600 (key-store.ts refuses group or other access). */
  readonly mode: number;
}

/** A new private key as PKCS#8 PEM. RSA defaults to 2048 bits (RFC 8301 §3.2 allows 1024–4096). */
export function generateKey(algorithm: KeyAlgorithm, bits?: RsaKeySize): string {
  if (algorithm === 'ed25519') {
    if (bits !== undefined) throw new KeyError('', 'a key size applies to RSA keys only, not Ed25519');
    return generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  }
  const modulusLength = bits ?? 2048;
  if (!rsaKeySizes.includes(modulusLength)) {
    throw new KeyError('', `RSA key size ${String(modulusLength)} is not one of ${rsaKeySizes.join(', ')}`);
  }
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength, publicExponent: 0x10001 });
  return privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
}

const ldhLabel = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * The signing domain in lowercase A-label form. U-labels are converted (IDNA via the URL
 * standard's domain-to-ASCII); the result must be LDH labels (RFC 5321 §4.1.2 sub-domain, as
 * d= requires, RFC 6376 §3.5) of ≤ 63 octets, ≤ 253 octets in all. One trailing dot is dropped.
 */
export function validateDomain(domain: string): string {
  const bad = (why: string) => new KeyError('', `invalid domain ${JSON.stringify(domain)}: ${why}`);
  const input = domain.endsWith('.') ? domain.slice(0, -1) : domain;
  // domainToASCII parses a URL host ("a/b" → "a", "../x" → ".."), so no ASCII character other
  // than letters, digits, hyphen and dot may reach it; non-ASCII is left for IDNA to judge.
  if (/[\x00-\x2c\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]/.test(input)) {
    return fail(bad('only letters, digits, hyphens and dots are allowed'));
  }
  const ascii = domainToASCII(input).toLowerCase();
  if (ascii === '') return fail(bad('not a valid (internationalized) domain name'));
  if (ascii.length > 253) return fail(bad('longer than 253 octets'));
  const labels = ascii.split('.');
  for (const label of labels) {
    if (!ldhLabel.test(label)) {
      return fail(bad(`label ${JSON.stringify(label)} must be 1–63 letters, digits or inner hyphens`));
    }
  }
  // RFC 1123 §2.1: a top-level label is never all-numeric, so this is not an IPv4 address.
  if (/^[0-9]+$/.test(labels[labels.length - 1] ?? '')) return fail(bad('the last label must not be all digits'));
  return ascii;
}

/**
 * The selector, lowercased (DNS names compare case-insensitively, RFC 4343; the file name must
 * not depend on the case typed). RFC 6376 §3.1: selector = sub-domain *("." sub-domain); A-labels
 * only, so only [a-z0-9-] and dots, no label starting or ending with a hyphen.
 */
export function validateSelector(selector: string): string {
  const bad = (why: string) => new KeyError('', `invalid selector ${JSON.stringify(selector)}: ${why}`);
  const lower = selector.toLowerCase();
  if (!/^[a-z0-9.-]+$/.test(lower)) return fail(bad('only letters, digits, hyphens and dots are allowed'));
  if (lower.length > 253) return fail(bad('longer than 253 octets'));
  for (const label of lower.split('.')) {
    if (!ldhLabel.test(label)) {
      return fail(bad(`label ${JSON.stringify(label)} must be 1–63 letters, digits or inner hyphens`));
    }
  }
  return lower;
}

function fail(error: Error): never {
  throw error;
}

/** `<keysDir>/<domain>/<selector>.pem`, after validating both names (no path traversal). */
export function keyPath(keysDir: string, domain: string, selector: string): string {
  return join(keysDir, validateDomain(domain), `${validateSelector(selector)}.pem`);
}

/** The owner name of the key record, without the final dot: `<selector>._domainkey.<domain>`. */
export function recordName(domain: string, selector: string): string {
  return `${validateSelector(selector)}._domainkey.${validateDomain(domain)}`;
}

/**
 * Why a key file must not sign: readable or writable by group or others (OpenDKIM refuses such
 * keys too, unless RequireSafeKeys is off), with the command that fixes it; undefined if safe.
 */
export function unsafeKeyMode(key: Pick<LoadedKey, 'path' | 'mode'>): string | undefined {
  if ((key.mode & 0o077) === 0) return undefined;
  const mode = key.mode.toString(8).padStart(4, '0');
  return `key file mode is ${mode}, open to group or others; run: chmod 600 ${key.path} (or set signing.allowUnsafeKeys: true)`;
}

/**
 * Writes a new key file (mode 0600, directories 0700) and returns its path. Never overwrites:
 * the file is created with O_EXCL, so an existing key is a KeyError.
 */
export async function writeKey(keysDir: string, domain: string, selector: string, pem: string): Promise<string> {
  const path = keyPath(keysDir, domain, selector);
  const directory = dirname(path);
  try {
    await mkdir(directory, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw new KeyError(directory, `cannot create key directory: ${describe(error)}`);
  }
  let handle;
  try {
    handle = await open(path, 'wx', 0o600);
  } catch (error) {
    if (errorCode(error) === 'EEXIST') {
      throw new KeyError(path, 'a key already exists there; refusing to overwrite it (choose a new selector)');
    }
    throw new KeyError(path, `cannot create key file: ${describe(error)}`);
  }
  try {
    await handle.chmod(0o600); // the umask may have removed bits, never added any: make it exact
    await handle.writeFile(pem);
    await handle.sync();
    await handle.close();
  } catch (error) {
    await handle.close().catch(() => undefined);
    await unlink(path).catch(() => undefined);
    throw new KeyError(path, `cannot write key file: ${describe(error)}`);
  }
  await syncDirectory(directory);
  return path;
}

/**
 * Where a key's record file lives: beside the key, its name ending in .txt instead of .pem (sello)
 * or .private (opendkim-genkey, which writes <selector>.private and <selector>.txt).
 */
export function recordFilePath(keyFile: string): string {
  return /\.(pem|private|key)$/.test(keyFile) ? keyFile.replace(/\.(pem|private|key)$/, '.txt') : `${keyFile}.txt`;
}

/**
 * Writes the record (public, mode 0644) beside its key, replacing an older one: the record is
 * derived from the key and the chosen tags, never the other way round. Written to a temporary
 * name and renamed, so a reader never sees half a record.
 */
export async function writeRecordFile(keyFile: string, record: string): Promise<string> {
  const path = recordFilePath(keyFile);
  const temporary = `${path}.${process.pid}.tmp`;
  try {
    await writeFile(temporary, record.endsWith('\n') ? record : `${record}\n`, { mode: 0o644, flag: 'wx' });
    await rename(temporary, path);
  } catch (error) {
    await unlink(temporary).catch(() => undefined);
    throw new KeyError(path, `cannot write the record file: ${describe(error)}`);
  }
  return path;
}

/** Makes the new directory entry durable; best effort (not every platform can fsync a directory). */
export async function syncDirectory(directory: string): Promise<void> {
  try {
    const handle = await open(directory, fsConstants.O_RDONLY);
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch {
    // the key itself is fsynced; a directory fsync failure is not worth failing keygen for
  }
}

/**
 * Reads a private key: PKCS#8 (`BEGIN PRIVATE KEY`, what keygen writes) or PKCS#1
 * (`BEGIN RSA PRIVATE KEY`, what openssl genrsa -traditional and opendkim-genkey write).
 * Refuses unreadable files, encrypted keys, key types other than RSA and Ed25519 (RFC 6376 §3.3,
 * RFC 8463) and RSA keys under 1024 bits (RFC 8301 §3.2), each as a KeyError naming the path.
 */
export async function loadKey(path: string): Promise<LoadedKey> {
  let pem: string;
  let mode: number;
  let modified: Date;
  try {
    const handle = await open(path, 'r');
    try {
      const stat = await handle.stat();
      if (!stat.isFile()) throw new KeyError(path, 'not a regular file');
      mode = stat.mode & 0o777;
      modified = stat.mtime;
      pem = await handle.readFile('utf8');
    } finally {
      await handle.close();
    }
  } catch (error) {
    if (error instanceof KeyError) throw error;
    if (errorCode(error) === 'ENOENT') throw new KeyError(path, 'no such key file');
    throw new KeyError(path, `cannot read key file: ${describe(error)}`);
  }

  // PKCS#8 EncryptedPrivateKeyInfo, or PKCS#1 with a "Proc-Type: 4,ENCRYPTED" header.
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type:\s*4,ENCRYPTED/.test(pem)) {
    throw new KeyError(path, 'the key is encrypted; sello needs an unencrypted key file (protect it with mode 0600)');
  }
  const label = /-----BEGIN ([A-Z0-9 ]+)-----/.exec(pem)?.[1];
  if (label === undefined) throw new KeyError(path, 'not a PEM file (expected BEGIN PRIVATE KEY or BEGIN RSA PRIVATE KEY)');
  if (label !== 'PRIVATE KEY' && label !== 'RSA PRIVATE KEY') {
    throw new KeyError(path, `unsupported PEM block "${label}" (expected PRIVATE KEY or RSA PRIVATE KEY with an RSA or Ed25519 key)`);
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: pem, format: 'pem' });
  } catch (error) {
    if (errorCode(error) === 'ERR_MISSING_PASSPHRASE') {
      throw new KeyError(path, 'the key is encrypted; sello needs an unencrypted key file');
    }
    throw new KeyError(path, `not a valid private key: ${describe(error)}`);
  }

  const warnings: string[] = [];
  if ((mode & 0o077) !== 0) {
    warnings.push(`${path}: key file mode is ${mode.toString(8).padStart(4, '0')}, readable by others than its owner; it should be 0600`);
  }
  const type = privateKey.asymmetricKeyType;
  if (type === 'ed25519') {
    return { path, algorithm: 'ed25519', privateKey, pem, warnings, modified, mode };
  }
  if (type !== 'rsa') {
    // rsa-pss keys are restricted to PSS, which DKIM's rsa-sha256 (PKCS#1 v1.5) cannot use.
    throw new KeyError(path, `unsupported key type "${type ?? 'unknown'}"; DKIM keys are RSA or Ed25519 (RFC 6376 §3.3, RFC 8463)`);
  }
  const bits = privateKey.asymmetricKeyDetails?.modulusLength ?? 0;
  // RFC 8301 §3.2: signers MUST use RSA keys of at least 1024 bits, SHOULD use at least 2048;
  // verifiers need only handle keys of 1024 to 4096 bits.
  if (bits < 1024) throw new KeyError(path, `RSA key of ${String(bits)} bits is too short; RFC 8301 §3.2 requires at least 1024 (use 2048)`);
  if (bits < 2048) warnings.push(`${path}: RSA key of ${String(bits)} bits is below the recommended 2048 (RFC 8301 §3.2)`);
  if (bits > 4096) warnings.push(`${path}: RSA key of ${String(bits)} bits; verifiers need only support up to 4096 (RFC 8301 §3.2)`);
  return { path, algorithm: 'rsa', bits, privateKey, pem, warnings, modified, mode };
}

/** Optional tags of a key record (RFC 6376 §3.6.1), as opendkim-genkey and rspamadm offer them. */
export interface RecordTags {
  /** t=y: the domain is testing DKIM; verifiers must treat its mail as unsigned. */
  testing?: boolean;
  /** t=s: the i= domain must be d= itself, not a subdomain of it. */
  strictSubdomains?: boolean;
  /** s=: the service the key is for; "email" (or "*", all, the default). */
  service?: 'email' | '*';
  /** n=: a note for administrators, not interpreted (qp-section). */
  note?: string;
}

/**
 * The TXT record value (RFC 6376 §3.6.1). RSA: p= is the base64 DER SubjectPublicKeyInfo.
 * Ed25519: p= is the base64 of the raw 32-byte public key (RFC 8463 §4.2), not SPKI. Optional
 * tags come before p=, in the order t=, s=, n=.
 */
export function dnsRecordValue(key: KeyObject | Pick<LoadedKey, 'privateKey'>, tags: RecordTags = {}): string {
  const keyObject = key instanceof KeyObject ? key : key.privateKey;
  const publicKey = keyObject.type === 'public' ? keyObject : createPublicKey(keyObject);
  const flags = [...(tags.testing ? ['y'] : []), ...(tags.strictSubdomains ? ['s'] : [])];
  const optional = [
    ...(flags.length > 0 ? [`t=${flags.join(':')}; `] : []),
    ...(tags.service !== undefined ? [`s=${tags.service}; `] : []),
    ...(tags.note !== undefined ? [`n=${qpSection(tags.note)}; `] : []),
  ].join('');
  switch (publicKey.asymmetricKeyType) {
    case 'rsa':
      return `v=DKIM1; k=rsa; ${optional}p=${publicKey.export({ type: 'spki', format: 'der' }).toString('base64')}`;
    case 'ed25519': {
      const raw = Buffer.from(publicKey.export({ format: 'jwk' }).x ?? '', 'base64url');
      if (raw.length !== 32) throw new KeyError('', `Ed25519 public key is ${String(raw.length)} bytes, expected 32`);
      return `v=DKIM1; k=ed25519; ${optional}p=${raw.toString('base64')}`;
    }
    default:
      throw new KeyError('', `unsupported key type "${publicKey.asymmetricKeyType ?? 'unknown'}"`);
  }
}

/**
 * n= text as a qp-section (RFC 6376 §3.6.1, RFC 2045 §6.7): printable ASCII stays, except "="
 * and ";" (which would end the tag); everything else, and spaces at the end, become =XX of
 * their UTF-8 octets.
 */
export function qpSection(text: string): string {
  const encoded = [...Buffer.from(text, 'utf8')]
    .map((octet) => (octet >= 0x20 && octet <= 0x7e && octet !== 0x3d && octet !== 0x3b ? String.fromCharCode(octet) : `=${octet.toString(16).toUpperCase().padStart(2, '0')}`))
    .join('');
  return encoded.replace(/ +$/, (spaces) => '=20'.repeat(spaces.length));
}

/** RFC 1035 §3.3.14: a TXT RDATA character-string holds at most 255 octets. */
const maxCharacterString = 255;

/**
 * Splits a record value into character-strings of ≤ 255 octets. Tags stay whole where they fit
 * (`"v=DKIM1; k=rsa; " "p=…"`); a longer tag (p=) is cut anywhere, which is safe because DKIM
 * concatenates the strings without separators (RFC 6376 §3.6.2.2).
 */
export function splitTxtStrings(value: string): string[] {
  if (!/^[\x20-\x7e]*$/.test(value)) throw new KeyError('', 'a DKIM record value must be printable ASCII');
  const tags = value.match(/[^;]*(?:;\s*|$)/g)?.filter((tag) => tag !== '') ?? [];
  const strings: string[] = [];
  let current = '';
  for (const tag of tags) {
    if (current.length + tag.length <= maxCharacterString) {
      current += tag;
      continue;
    }
    if (current !== '') strings.push(current);
    current = '';
    let rest = tag;
    while (rest.length > maxCharacterString) {
      strings.push(rest.slice(0, maxCharacterString));
      rest = rest.slice(maxCharacterString);
    }
    current = rest;
  }
  if (current !== '' || strings.length === 0) strings.push(current);
  return strings;
}

/**
 * The record for publishing. bind: one zone-file line with the value split into quoted
 * character-strings (with a TTL when given); value: the value alone; json: {name, type, value, strings}. No final newline.
 */
export function formatRecord(domain: string, selector: string, value: string, format: RecordFormat, ttlSeconds?: number): string {
  const name = recordName(domain, selector);
  const strings = splitTxtStrings(value);
  switch (format) {
    case 'value':
      return value;
    case 'json':
      return JSON.stringify({ name, type: 'TXT', value, strings });
    case 'bind': {
      const quoted = strings.map((s) => `"${s.replace(/[\\"]/g, (c) => `\\${c}`)}"`);
      return `${name}.${ttlSeconds === undefined ? '' : ` ${String(ttlSeconds)}`} IN TXT ( ${quoted.join(' ')} )`;
    }
  }
}

function errorCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string' ? error.code : undefined;
}

/** A short reason without the path (which the KeyError already names). */
function describe(error: unknown): string {
  const reasons: Record<string, string> = {
    EACCES: 'permission denied',
    EPERM: 'operation not permitted',
    EISDIR: 'is a directory',
    ENOTDIR: 'a path component is not a directory',
    ENOENT: 'no such file or directory',
    EROFS: 'read-only file system',
    ENOSPC: 'no space left on device',
  };
  const code = errorCode(error);
  if (code !== undefined && reasons[code] !== undefined) return reasons[code];
  return error instanceof Error ? error.message : String(error);
}

// Making DKIM-Signature header fields (RFC 6376 §5) with oversigning, from mailauth's parts.
// Owns: choosing the h= list and producing the signature lines to prepend to a message.
// Must not: decide whether a message is signed (signer.ts), read keys from disk, or touch the
// message bytes: the caller prepends the returned lines and relays the rest unchanged.
//
// Why not mailauth's dkimSign: it lists each field only as often as it occurs, so it cannot
// oversign. Oversigning names a field once more than it occurs; a verifier treats the extra
// name as a null string (RFC 6376 §5.4.2), so the signature breaks if an instance is added
// later (§8.15). The null entries add nothing to the header hash: only h= changes. So the
// h= list is chosen here and mailauth's own canonicalization, body hash and header
// formatting do the byte-level work (same code its dkimSign runs).

import { createHash, sign, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import { generateCanonicalizedHeader } from 'mailauth/lib/dkim/header/index.js';
import { formatSignatureHeaderLine, parseHeaders, type ParsedHeaderRow } from 'mailauth/lib/tools.js';
import { SigningError } from '../errors.ts';
import { RelaxedBodyHash, type RelaxedBodyHashOptions } from './relaxed-body-hash.ts';

export interface SigningKey {
  domain: string;
  selector: string;
  algorithm: 'rsa' | 'ed25519';
  privateKey: KeyObject;
}

export interface SignatureOptions {
  /** Fields signed when present, in h= order. */
  signedFields: readonly string[];
  /** Fields listed once more than they occur (also when absent). */
  oversignedFields: readonly string[];
  /** Signing time (t=). */
  now: Date;
  /** x= = t= + this, or false for no x= tag. */
  expiryMs: number | false;
}

const CANONICALIZATION = 'relaxed/relaxed';

/**
 * crypto.sign with a callback runs on libuv's thread pool: an RSA-2048 signature costs about
 * 0.3 ms of CPU, and on the event loop it capped a signing sello at one core (npm run bench).
 */
const signOffThread = promisify(sign) as (algorithm: string | null, data: Buffer, key: KeyObject) => Promise<Buffer>;

/**
 * The h= names and the header rows they select, per RFC 6376 §5.4.2: the n-th name of a field
 * selects its n-th instance counted from the bottom. Oversigned fields get one more name.
 */
export function selectHeaderFields(
  rows: readonly ParsedHeaderRow[],
  signedFields: readonly string[],
  oversignedFields: readonly string[],
): { names: string[]; rows: ParsedHeaderRow[] } {
  const oversigned = new Set(oversignedFields.map((field) => field.toLowerCase()));
  const fields = [...signedFields, ...oversignedFields.filter((field) => !signedFields.some((f) => f.toLowerCase() === field.toLowerCase()))];
  const names: string[] = [];
  const selected: ParsedHeaderRow[] = [];
  const seen = new Set<string>();
  for (const field of fields) {
    const key = field.toLowerCase();
    if (seen.has(key)) continue;
    seen.add(key);
    const instances = rows.filter((row) => row.key === key).reverse();
    for (const row of instances) {
      names.push(field);
      selected.push(row);
    }
    if (oversigned.has(key)) names.push(field);
  }
  return { names, rows: selected };
}

/** A body hash computed elsewhere (while the body streamed in): relaxed canonicalization, SHA-256, base64. */
export interface BodyHash {
  relaxedSha256: string;
}

/**
 * The body hash sello's signatures and ARC seals carry (RFC 6376 §3.4.4 relaxed body
 * canonicalization, §3.7 bh=), fed chunk by chunk as the body streams in, so the body never has
 * to be in memory whole. relaxed-body-hash.ts does the canonicalization (mailauth's result, at a
 * third of its cost); `crlfLineEndings` as there.
 */
export class RelaxedBodyHasher {
  readonly #hasher: RelaxedBodyHash;
  #digest: string | undefined;

  constructor(options: RelaxedBodyHashOptions = {}) {
    this.#hasher = new RelaxedBodyHash(options);
  }

  update(chunk: Buffer): void {
    if (this.#digest !== undefined) throw new Error('RelaxedBodyHasher: update after digest');
    this.#hasher.update(chunk);
  }

  /** The base64 hash; the body is complete once this is asked for. */
  digest(): BodyHash {
    this.#digest ??= this.#hasher.digest();
    return { relaxedSha256: this.#digest };
  }
}

/** `body` hashed at once (a message held in memory), or the hash already made. */
export function relaxedBodyHash(body: Buffer | BodyHash): string {
  if (!Buffer.isBuffer(body)) return body.relaxedSha256;
  const hasher = new RelaxedBodyHasher();
  hasher.update(body);
  return hasher.digest().relaxedSha256;
}

/**
 * Signs `header` (the header section, each field ending in CRLF, without the empty line) and
 * `body` (everything after the empty line, or its hash made while it streamed in) once per key.
 * Returns the DKIM-Signature fields, each ending in CRLF, in key order: prepend them to the
 * message as they are.
 */
export async function createSignatures(header: Buffer, body: Buffer | BodyHash, keys: readonly SigningKey[], options: SignatureOptions): Promise<string> {
  const { parsed } = parseHeaders(header);
  const { names, rows } = selectHeaderFields(parsed, options.signedFields, options.oversignedFields);
  if (!rows.some((row) => row.key === 'from')) {
    // RFC 6376 §5.4: the From header field MUST be signed.
    throw new SigningError('message has no From header field to sign');
  }

  const bodyHash = relaxedBodyHash(body);

  const timestamp = Math.floor(options.now.getTime() / 1000);
  const expiration = options.expiryMs === false ? false : timestamp + Math.floor(options.expiryMs / 1000);

  const lines = await Promise.all(
    keys.map(async (key) => {
      const algorithm = `${key.algorithm}-sha256`;
      const { canonicalizedHeader, dkimHeaderOpts } = generateCanonicalizedHeader(
        'DKIM',
        { keys: names.join(':'), headers: rows },
        {
          signingDomain: key.domain,
          selector: key.selector,
          algorithm,
          canonicalization: CANONICALIZATION,
          bodyHash,
          timestamp,
          expiration,
        },
      );
      try {
        // RFC 8463 §3: Ed25519-SHA256 signs the SHA-256 hash of the canonicalized data.
        const signature =
          key.algorithm === 'rsa'
            ? await signOffThread('RSA-SHA256', canonicalizedHeader, key.privateKey)
            : await signOffThread(null, createHash('sha256').update(canonicalizedHeader).digest(), key.privateKey);
        dkimHeaderOpts.b = signature.toString('base64');
      } catch (error) {
        throw new SigningError(`signing with ${key.selector}._domainkey.${key.domain} failed: ${(error as Error).message}`, { cause: error });
      }
      return `${formatSignatureHeaderLine('DKIM', dkimHeaderOpts, true)}\r\n`;
    }),
  );
  return lines.join('');
}

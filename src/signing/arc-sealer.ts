// ARC sealing (RFC 8617 §5.1), opt-in with inbound.arc.seal: one ARC set (ARC-Seal,
// ARC-Message-Signature, ARC-Authentication-Results) on a message the inbound checks ran on.
// Owns: whether a set may be added to the chain the message carries, its instance and cv=, and
// turning mailauth's createSeal answer into lines to prepend, or an ArcSealError.
// Must not: verify the chain (checks/arc.ts does; its result comes in), decide what a failure
// does to the message (pipeline/transaction.ts does), or touch message bytes: the caller
// prepends the returned lines to exactly the header and body it passed in.

import type { KeyObject } from 'node:crypto';
import { createSeal, getARChain } from 'mailauth/lib/arc/index.js';
import { dkimBody } from 'mailauth/lib/dkim/body/index.js';
import { parseDkimHeaders, parseHeaders } from 'mailauth/lib/tools.js';
import { DEFAULT_SIGNED_FIELDS } from '../config/schema.ts';
import { ArcSealError } from '../errors.ts';
import type { SplitMessage } from '../message/index.ts';

/** What validating the chain as received gave (RFC 8617 §4.4 chain validation status). */
export type ChainValidation = 'none' | 'pass' | 'fail';

/** An RSA key (README "ARC sealing": rsa-sha256 only); loaded by key-store.ts loadArcSealKey. */
export interface ArcSealKey {
  domain: string;
  selector: string;
  privateKey: KeyObject;
}

export type ArcSealResult =
  | { sealed: true; headerLines: string; instance: number; cv: ChainValidation }
  | {
      sealed: false;
      /** chain-already-failed: the newest ARC-Seal says cv=fail; chain-full: it has instance 50. */
      reason: 'chain-already-failed' | 'chain-full';
      /** The highest instance the message carries. */
      instance: number;
    };

/** RFC 8617 §4.2.1: instance values run from 1 to 50. */
export const MAX_ARC_INSTANCE = 50;

const ARC_FIELDS = new Set(['arc-seal', 'arc-message-signature', 'arc-authentication-results']);

/**
 * The ARC-Message-Signature's h=: DKIM-Signature first (RFC 8617 §4.1.2: the AMS SHOULD cover
 * the DKIM-Signature fields present), then the fields a DKIM signature covers by default.
 * mailauth leaves out the ARC fields and Authentication-Results (§4.1.2: MUST NOT) and names only
 * the fields present.
 */
const AMS_FIELDS = ['DKIM-Signature', ...DEFAULT_SIGNED_FIELDS];

/**
 * The highest instance among the ARC header fields of `header` and the cv= of the ARC-Seal with
 * that instance. Every ARC field with a usable i= counts, also one outside a valid chain, so a new
 * set never reuses an instance that is there (the same reading mailauth's createSeal checks).
 */
export function arcPosition(header: Buffer): { highest: number; newestCv: string | undefined } {
  let highest = 0;
  let newestCv: string | undefined;
  for (const row of parseHeaders(header).parsed) {
    if (!ARC_FIELDS.has(row.key)) continue;
    let tags: Record<string, { value?: unknown } | undefined> | undefined;
    try {
      tags = parseDkimHeaders(row.line).parsed;
    } catch {
      continue; // not a tag-list at all: it names no instance
    }
    const instance = tags?.['i']?.value;
    if (typeof instance !== 'number' || !Number.isInteger(instance) || instance < 1) continue;
    if (instance > highest) {
      highest = instance;
      newestCv = undefined;
    }
    const cv = tags?.['cv']?.value;
    if (instance === highest && row.key === 'arc-seal' && typeof cv === 'string') newestCv = cv.trim().toLowerCase();
  }
  return { highest, newestCv };
}

export class ArcSealer {
  readonly domain: string;
  readonly selector: string;
  /** mailauth's signer takes PEM (or raw Ed25519 bytes), not a KeyObject. */
  readonly #privateKeyPem: string;
  readonly #now: () => Date;

  constructor(key: ArcSealKey, now: () => Date = () => new Date()) {
    if (key.privateKey.asymmetricKeyType !== 'rsa') {
      throw new ArcSealError(`ARC sealing key ${key.selector}._domainkey.${key.domain} is not an RSA key`);
    }
    this.domain = key.domain;
    this.selector = key.selector;
    this.#privateKeyPem = key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    this.#now = now;
  }

  /**
   * Seals `message` (the header section and body exactly as they will be relayed) as the next
   * instance. `validation` is the result of validating the chain as received; the ARC-
   * Authentication-Results carries `authenticationResults`, the value of our Authentication-
   * Results field ("authserv-id; resinfo; …", RFC 8617 §4.1.1). Returns the fields to prepend,
   * or why none may be added; throws ArcSealError when mailauth cannot make the set.
   */
  async seal(message: SplitMessage, validation: ChainValidation, authenticationResults: string): Promise<ArcSealResult> {
    try {
      return await this.#seal(message, validation, authenticationResults);
    } catch (error) {
      // Whatever went wrong (an unexpected header parse, a library error) is a sealing failure
      // the caller handles, not an exception that would cost the message its delivery.
      if (error instanceof ArcSealError) throw error;
      throw new ArcSealError(`ARC sealing with ${this.selector}._domainkey.${this.domain} failed: ${(error as Error).message}`, { cause: error });
    }
  }

  async #seal(message: SplitMessage, validation: ChainValidation, authenticationResults: string): Promise<ArcSealResult> {
    const { highest, newestCv } = arcPosition(message.header);
    // RFC 8617 §5.1: a chain whose newest ARC-Seal already says cv=fail has ended; the sealer
    // stops there and adds nothing.
    if (newestCv === 'fail') return { sealed: false, reason: 'chain-already-failed', instance: highest };
    // RFC 8617 §4.2.1: instances run from 1 to 50; a 51st set would make every validator reject
    // the whole chain (and the next hop could not add one either), so the message goes unsealed.
    if (highest >= MAX_ARC_INSTANCE) return { sealed: false, reason: 'chain-full', instance: highest };
    const instance = highest + 1; // RFC 8617 §5.1: one more than the highest instance present
    // RFC 8617 §4.4 / §5.2: cv=none only when there is no chain (i=1). ARC fields that the
    // verifier could not read as a chain still occupy their instances: that chain does not
    // validate, so cv=fail, and the seal covers only its own set (§5.1.2).
    const cv: ChainValidation = validation === 'none' && highest > 0 ? 'fail' : validation;

    const bodyHasher = dkimBody('relaxed', 'sha256', false);
    bodyHasher.update(message.body);
    const bodyHash = bodyHasher.digest('base64');
    const headers = parseHeaders(message.header);
    const described = `${this.selector}._domainkey.${this.domain}`;

    let answer: Awaited<ReturnType<typeof createSeal>>;
    try {
      // cv=pass signs the whole chain (RFC 8617 §5.1.1), so mailauth needs it; a cv=fail seal
      // covers only its own set (§5.1.2) and a cv=none one has no chain to cover.
      const chain = cv === 'pass' ? getARChain(headers) : false;
      answer = await createSeal(false, {
        headers,
        arc: { chain: chain || [] },
        seal: {
          signingDomain: this.domain,
          selector: this.selector,
          privateKey: this.#privateKeyPem,
          algorithm: 'rsa-sha256',
          i: instance,
          cv,
          authResults: authenticationResults,
          headerList: AMS_FIELDS,
          signTime: this.#now(),
          bodyHash,
        },
        strict: true,
      });
    } catch (error) {
      throw new ArcSealError(`ARC sealing with ${described} failed: ${(error as Error).message}`, { cause: error });
    }
    if (answer.errors.length > 0) {
      const reasons = answer.errors.map(({ err }) => `${err.code ? `${err.code}: ` : ''}${err.message}`);
      throw new ArcSealError(`ARC sealing with ${described} failed: ${reasons.join('; ')}`);
    }
    return { sealed: true, headerLines: checkedSet(answer.headers, instance, cv, described), instance, cv };
  }
}

/**
 * mailauth's three fields, checked before they go on a message: ARC-Seal, ARC-Message-Signature
 * and ARC-Authentication-Results in that order (RFC 8617 §5.1), each with our instance, the
 * seal with our cv=, and nothing that could end the header section early (an empty or
 * unfolded line). Returns them CRLF-terminated.
 */
function checkedSet(fields: readonly string[], instance: number, cv: ChainValidation, described: string): string {
  const wrong = (why: string) => new ArcSealError(`ARC sealing with ${described} failed: mailauth returned ${why}`);
  const names = ['ARC-Seal', 'ARC-Message-Signature', 'ARC-Authentication-Results'];
  if (fields.length !== names.length) throw wrong(`${fields.length} header fields instead of an ARC set`);
  fields.forEach((field, index) => {
    const name = names[index] as string;
    if (!field.startsWith(`${name}: `)) throw wrong(`"${field.slice(0, 30)}" where ${name} belongs`);
    // RFC 5322 §2.2.3: continuation lines start with whitespace; no bare CR or LF.
    if (/\r(?!\n)|(?<!\r)\n|\r\n(?![ \t])|[ \t]*\r\n[ \t]*\r\n/.test(field) || /\r\n$/.test(field)) throw wrong(`a malformed ${name} field`);
    if (name === 'ARC-Authentication-Results') {
      if (!field.startsWith(`${name}: i=${instance}; `)) throw wrong(`an ARC-Authentication-Results without i=${instance}`);
      return;
    }
    const tags = parseDkimHeaders(field).parsed;
    if (tags?.['i']?.value !== instance) throw wrong(`a ${name} without i=${instance}`);
    if (name === 'ARC-Seal' && tags?.['cv']?.value !== cv) throw wrong(`an ARC-Seal without cv=${cv}`);
  });
  return fields.map((field) => `${field}\r\n`).join('');
}

// The signing modifier: decides whether a message is signed and with which keys, and signs it.
// Owns: PRODUCT.md §4 "what is signed". Runs last in the pipeline so the signatures cover every
// header sello added. Must not: refuse or accept mail itself (it throws SmtpReplyError for the
// caller to answer) or change message bytes (it returns lines to prepend).

import type { SigningConfig } from '../config/schema.ts';
import { SigningError } from '../errors.ts';
import { singleFromAddress, type HeaderField } from '../message/index.ts';
import { createSignatures, type BodyHash, type SigningKey } from './dkim-signature.ts';
import type { KeyStore } from './key-store.ts';
import type { SigningTable } from './table.ts';

export interface SignatureMade {
  domain: string;
  selector: string;
  algorithm: 'rsa-sha256' | 'ed25519-sha256';
}

export type SigningResult =
  | { signed: true; headerLines: string; signatures: SignatureMade[]; pattern: string }
  | { signed: false; reason: 'domain-not-configured' | 'from-not-single'; fromDomain?: string };

/** The header section as it will leave, and the body or its hash (made while it streamed in). */
export interface MessageToSign {
  header: Buffer;
  body: Buffer | BodyHash;
  /** The fields of the header as received, when the caller split them already (the From is read from them). */
  receivedFields?: readonly HeaderField[];
}

export interface SignerOptions {
  /** submission refuses a message without exactly one From address (550 5.6.0); filter relays it unsigned. */
  requireSingleFrom: boolean;
}

export class Signer {
  readonly #table: SigningTable;
  readonly #keys: KeyStore;
  readonly #config: SigningConfig;
  readonly #now: () => Date;

  constructor(table: SigningTable, keys: KeyStore, config: SigningConfig, now: () => Date = () => new Date()) {
    this.#table = table;
    this.#keys = keys;
    this.#config = config;
    this.#now = now;
  }

  /**
   * Whether sign() would sign a message with this header (From domain in the signing table), so
   * the body hash can be skipped for one it would not. sign() decides again and asks for the
   * body hash only when it signs.
   */
  wouldSign(header: Buffer | readonly HeaderField[]): boolean {
    try {
      return this.#table.lookup(singleFromAddress(header).domain) !== undefined;
    } catch {
      return false; // no single From: refused or relayed unsigned, never signed
    }
  }

  /** Throws SmtpReplyError (From rule) or SigningError (never silently unsigned). */
  async sign(message: MessageToSign, options: SignerOptions): Promise<SigningResult> {
    let fromDomain: string;
    try {
      fromDomain = singleFromAddress(message.receivedFields ?? message.header).domain;
    } catch (error) {
      if (options.requireSingleFrom) throw error;
      return { signed: false, reason: 'from-not-single' };
    }
    const entry = this.#table.lookup(fromDomain);
    if (!entry) return { signed: false, reason: 'domain-not-configured', fromDomain };

    const keys: SigningKey[] = entry.selectors.map((selector) => {
      const key = this.#keys.get(entry.signingDomain, selector);
      if (!key) throw new SigningError(`no key loaded for ${selector}._domainkey.${entry.signingDomain}`);
      return key;
    });
    const signatures = keys.map((key) => ({ domain: key.domain, selector: key.selector, algorithm: `${key.algorithm}-sha256` as const }));
    let headerLines: string;
    try {
      headerLines = await createSignatures(message.header, message.body, keys, {
        signedFields: this.#config.headers,
        oversignedFields: this.#config.oversign,
        now: this.#now(),
        expiryMs: this.#config.expiry,
      });
    } catch (error) {
      // The configured signatures that failed, so the error can be counted per key.
      if (error instanceof SigningError) throw new SigningError(error.message, { cause: error, signatures });
      throw error;
    }
    return { signed: true, headerLines, pattern: entry.pattern, signatures };
  }
}

// The keys the signing table needs, loaded once (at start and on reload) and held in memory.
// Owns: mapping (domain, selector) → usable key; failing start-up when a configured key is
// missing or unusable. Must not: log key material or generate keys.

import { ConfigError, KeyError } from '../errors.ts';
import type { SigningKey } from './dkim-signature.ts';
import { keyPath, loadKey } from './keys.ts';
import type { SigningTable } from './table.ts';

/** What is known about a loaded key besides its material (metrics, logs): never the key itself. */
export interface KeyInfo {
  domain: string;
  selector: string;
  algorithm: 'rsa-sha256' | 'ed25519-sha256';
  /** RSA modulus length; 256 for Ed25519 (RFC 8463 §3). */
  bits: number;
  path: string;
  /** The key file's modification time when it was loaded. */
  modified: Date;
}

export interface KeyStore {
  get(domain: string, selector: string): SigningKey | undefined;
  /** Non-fatal findings (file mode, 1024-bit RSA), for the start-up log. */
  readonly warnings: readonly string[];
  readonly size: number;
  /** Every loaded key's description, in signing-table order. */
  readonly loaded: readonly KeyInfo[];
}

/** Loads every key the table names; the first problem is a ConfigError naming the table entry. */
export async function loadKeyStore(keysDir: string, table: SigningTable): Promise<KeyStore> {
  const keys = new Map<string, SigningKey>();
  const loaded: KeyInfo[] = [];
  const warnings: string[] = [];
  for (const { domain, selector } of table.keys()) {
    const path = keyPath(keysDir, domain, selector);
    try {
      const key = await loadKey(path);
      keys.set(`${domain}/${selector}`, { domain, selector, algorithm: key.algorithm, privateKey: key.privateKey });
      loaded.push({ domain, selector, algorithm: `${key.algorithm}-sha256`, bits: key.bits ?? 256, path, modified: key.modified });
      warnings.push(...key.warnings);
    } catch (error) {
      if (error instanceof KeyError) {
        throw new ConfigError(`signing.domains["${domain}"]`, `selector "${selector}": ${error.message} (make it with: sello keygen ${domain} --selector ${selector} --keys-dir ${keysDir})`);
      }
      throw error;
    }
  }
  return {
    get: (domain, selector) => keys.get(`${domain}/${selector}`),
    warnings,
    size: keys.size,
    loaded,
  };
}

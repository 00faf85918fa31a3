// The keys the signing table needs, loaded once (at start and on reload) and held in memory.
// Owns: mapping (domain, selector) → usable key; failing start-up when a configured key is
// missing or unusable. Must not: log key material or generate keys.

import { ConfigError, KeyError } from '../errors.ts';
import type { SigningKey } from './dkim-signature.ts';
import { keyPath, loadKey } from './keys.ts';
import type { SigningTable } from './table.ts';

export interface KeyStore {
  get(domain: string, selector: string): SigningKey | undefined;
  /** Non-fatal findings (file mode, 1024-bit RSA), for the start-up log. */
  readonly warnings: readonly string[];
  readonly size: number;
}

/** Loads every key the table names; the first problem is a ConfigError naming the table entry. */
export async function loadKeyStore(keysDir: string, table: SigningTable): Promise<KeyStore> {
  const keys = new Map<string, SigningKey>();
  const warnings: string[] = [];
  for (const { domain, selector } of table.keys()) {
    const path = keyPath(keysDir, domain, selector);
    try {
      const loaded = await loadKey(path);
      keys.set(`${domain}/${selector}`, { domain, selector, algorithm: loaded.algorithm, privateKey: loaded.privateKey });
      warnings.push(...loaded.warnings);
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
  };
}

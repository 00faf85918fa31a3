// The keys the signing table needs, and the ARC sealing key (inbound.arc.seal), loaded once (at
// start and on reload) and held in memory.
// Owns: mapping (domain, selector) → usable key; failing start-up when a configured key is
// missing or unusable. Must not: log key material or generate keys.

import { ConfigError, KeyError } from '../errors.ts';
import type { ArcSealKey } from './arc-sealer.ts';
import type { SigningKey } from './dkim-signature.ts';
import { keyPath, loadKey, recordName, unsafeKeyMode, type LoadedKey } from './keys.ts';
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

/** Where keys are besides <keysDir> and whether loose file modes are tolerated (signing.*). */
export interface KeyLocations {
  /** "<selector>._domainkey.<domain>" → key file, for keys kept where they are (sello import opendkim). */
  readonly keyFiles?: Readonly<Record<string, string>>;
  readonly allowUnsafeKeys?: boolean;
}

/** The key file of (domain, selector): signing.keyFiles if listed there, else <keysDir>/<domain>/<selector>.pem. */
export function signingKeyPath(keysDir: string, domain: string, selector: string, locations: KeyLocations = {}): string {
  const name = recordName(domain, selector);
  const listed = Object.entries(locations.keyFiles ?? {}).find(([recordKey]) => recordKey.toLowerCase().replace(/\.$/, '') === name);
  return listed ? listed[1] : keyPath(keysDir, domain, selector);
}

/** The KeyError of signing.allowUnsafeKeys: the file exists but is open to group or others. */
class UnsafeKeyFile extends KeyError {}

/** loadKey, then the file-mode rule of signing.allowUnsafeKeys. */
async function loadSigningKey(path: string, locations: KeyLocations): Promise<LoadedKey> {
  const key = await loadKey(path);
  const unsafe = locations.allowUnsafeKeys ? undefined : unsafeKeyMode(key);
  if (unsafe) throw new UnsafeKeyFile(path, unsafe);
  return key;
}

/** The hint to append to a key problem: how to make the key, unless the key exists and only its mode is wrong. */
function makeHint(error: KeyError, command: string): string {
  return error instanceof UnsafeKeyFile ? '' : ` (make it with: ${command})`;
}

/** Loads every key the table names; the first problem is a ConfigError naming the table entry. */
export async function loadKeyStore(keysDir: string, table: SigningTable, locations: KeyLocations = {}): Promise<KeyStore> {
  const keys = new Map<string, SigningKey>();
  const loaded: KeyInfo[] = [];
  const warnings: string[] = [];
  for (const { domain, selector } of table.keys()) {
    const path = signingKeyPath(keysDir, domain, selector, locations);
    try {
      const key = await loadSigningKey(path, locations);
      keys.set(`${domain}/${selector}`, { domain, selector, algorithm: key.algorithm, privateKey: key.privateKey });
      loaded.push({ domain, selector, algorithm: `${key.algorithm}-sha256`, bits: key.bits ?? 256, path, modified: key.modified });
      warnings.push(...key.warnings);
    } catch (error) {
      if (error instanceof KeyError) {
        throw new ConfigError(`signing.domains["${domain}"]`, `selector "${selector}": ${error.message}${makeHint(error, `sello keygen ${domain} --selector ${selector} --keys-dir ${keysDir}`)}`);
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

/**
 * The ARC sealing key `<keysDir>/<domain>/<selector>.pem` (inbound.arc.seal). RSA only: an ARC
 * set has exactly one seal, so unlike DKIM there is no second signature to fall back on, and
 * ARC validators check rsa-sha256 while Ed25519 support is not universal (README "ARC
 * sealing"). Any problem is a ConfigError under inbound.arc.seal naming the key file.
 */
export async function loadArcSealKey(keysDir: string, domain: string, selector: string, locations: KeyLocations = {}): Promise<{ key: ArcSealKey; info: KeyInfo; warnings: string[] }> {
  const where = 'inbound.arc.seal';
  const make = `sello keygen ${domain} --selector ${selector} --algorithm rsa --keys-dir ${keysDir}`;
  let path: string;
  try {
    path = signingKeyPath(keysDir, domain, selector, locations);
  } catch (error) {
    if (error instanceof KeyError) throw new ConfigError(where, error.message);
    throw error;
  }
  let key;
  try {
    key = await loadSigningKey(path, locations);
  } catch (error) {
    if (error instanceof KeyError) throw new ConfigError(where, `selector "${selector}": ${error.message}${makeHint(error, make)}`);
    throw error;
  }
  if (key.algorithm === 'ed25519') {
    throw new ConfigError(where, `${path}: an Ed25519 key cannot seal ARC: sello seals with rsa-sha256 only (one seal per hop, no fallback signature); use an RSA key (make one with: ${make})`);
  }
  return {
    key: { domain, selector, privateKey: key.privateKey },
    info: { domain, selector, algorithm: 'rsa-sha256', bits: key.bits ?? 0, path, modified: key.modified },
    warnings: key.warnings,
  };
}

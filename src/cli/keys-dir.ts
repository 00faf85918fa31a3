// Which keys directory `sello keygen` uses without --keys-dir: signing.keysDir of the config the
// lookup finds ($SELLO_CONFIG, /etc/sello/sello.yaml, ./config/sello.yaml: config-path.ts), so on
// a packaged install keys land in /var/lib/sello/keys with no flag; the built-in `keys` when no
// config exists. Owns: that choice and the stderr line saying which directory it is (shared with
// `sello rotate`, which reads the config anyway). Must not: create the directory or write keys.

import { existsSync } from 'node:fs';
import { loadConfig } from '../config/load.ts';
import { ConfigError } from '../errors.ts';
import { configPath } from './config-path.ts';
import type { CliIo } from './io.ts';

/** keygen's directory when there is no config to ask (the schema's signing.keysDir default too). */
export const FALLBACK_KEYS_DIR = 'keys';

/** The stderr line naming the directory a command uses and why. */
export function keysDirLine(keysDir: string, configFile: string | undefined): string {
  return `keys directory: ${keysDir} (${configFile === undefined ? 'the default: no config file found' : `signing.keysDir of ${configFile}`})\n`;
}

/**
 * signing.keysDir of the config the lookup finds, said on stderr. A config that is found but
 * invalid is an error (naming the file), not a silent fall back to another directory.
 */
export async function defaultKeysDir(io: CliIo, exists: (file: string) => boolean = existsSync): Promise<string> {
  let file: string;
  try {
    file = configPath(undefined, io.env, exists);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    io.stderr(keysDirLine(FALLBACK_KEYS_DIR, undefined));
    return FALLBACK_KEYS_DIR;
  }
  const { keysDir } = (await loadConfig(file, io.env)).signing;
  io.stderr(keysDirLine(keysDir, file));
  return keysDir;
}

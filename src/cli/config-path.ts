// Which config file a command reads: --config, else $SELLO_CONFIG, else /etc/sello/sello.yaml
// when it exists (the Debian package's conffile), else ./config/sello.yaml when it exists (a
// checkout). Owns: that order and the error naming every path it tried.
// Must not: read the file (config/load.ts does).

import { existsSync } from 'node:fs';
import path from 'node:path';
import { DEFAULT_CONFIG_PATH } from '../config/load.ts';
import { ConfigError } from '../errors.ts';

/** The conffile of the Debian package (packaging/debian). */
export const INSTALLED_CONFIG_PATH = '/etc/sello/sello.yaml';

/** The paths looked at, in order, when neither --config nor $SELLO_CONFIG names a file. */
export const CONFIG_SEARCH_PATH = [INSTALLED_CONFIG_PATH, DEFAULT_CONFIG_PATH] as const;

export function configPath(flag: string | undefined, environment: NodeJS.ProcessEnv, exists: (file: string) => boolean = existsSync): string {
  if (flag !== undefined) return flag;
  if (environment.SELLO_CONFIG) return environment.SELLO_CONFIG;
  const found = CONFIG_SEARCH_PATH.find((candidate) => exists(candidate));
  if (found) return found;
  const tried = CONFIG_SEARCH_PATH.map((candidate) => (path.isAbsolute(candidate) ? candidate : `${candidate} (${path.resolve(candidate)})`));
  throw new ConfigError('', `no configuration file: $SELLO_CONFIG is not set, and there is no ${tried.join(' nor ')}; give --config FILE`);
}

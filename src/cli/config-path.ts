// Which config file a command reads: --config, else $SELLO_CONFIG, else config/sello.yaml.
// Must not: read the file (config/load.ts does).

import { DEFAULT_CONFIG_PATH } from '../config/load.ts';

export function configPath(flag: string | undefined, environment: NodeJS.ProcessEnv): string {
  return flag ?? (environment.SELLO_CONFIG || DEFAULT_CONFIG_PATH);
}

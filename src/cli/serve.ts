// `sello serve [--config FILE]`: run the listeners until SIGTERM/SIGINT.
// Owns: process signals for the server. Must not: hold server logic (app.ts).

import { parseArgs } from 'node:util';
import { startSello } from '../app.ts';
import { loadConfig } from '../config/load.ts';
import { UsageError } from '../errors.ts';
import { createLogger } from '../observability/logger.ts';
import { configPath } from './config-path.ts';
import type { Command } from './io.ts';

const usage = 'usage: sello serve [--config FILE]   (default: $SELLO_CONFIG or config/sello.yaml)\n';

export const serveCommand: Command = async (args, io) => {
  let values;
  try {
    ({ values } = parseArgs({ args, options: { config: { type: 'string' }, help: { type: 'boolean' } }, strict: true }));
  } catch (error) {
    throw new UsageError(`${(error as Error).message}\n${usage}`);
  }
  if (values.help) {
    io.stdout(usage);
    return 0;
  }
  const config = await loadConfig(configPath(values.config, io.env), io.env);
  const logger = createLogger(config.logging.level);
  const running = await startSello(config, logger);
  for (const [name, address] of running.addresses) io.stderr(`sello: ${name} listening on ${address.host}:${address.port}\n`);

  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      logger.info({ signal }, 'stopping');
      resolve();
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  await running.close();
  logger.flush();
  return 0;
};

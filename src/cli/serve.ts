// `sello serve [--config FILE]`: run the listeners and the operations endpoint until SIGTERM/SIGINT,
// in this process (`workers: 1`) or in worker processes under a primary (src/cluster/).
// Owns: process signals for the server — SIGHUP reloads the config file and keys (app.ts swaps
// them atomically or keeps the old ones), SIGTERM/SIGINT drain within shutdown.deadline and a
// second one stops at once. Must not: hold server logic (app.ts).

import cluster from 'node:cluster';
import { startSello, type RunningSello } from '../app.ts';
import { workerCount } from '../cluster/messages.ts';
import { runPrimary } from '../cluster/primary.ts';
import { runWorker } from '../cluster/worker.ts';
import { inConfigFile, loadConfig } from '../config/load.ts';
import { createLogger } from '../observability/logger.ts';
import { configPath } from './config-path.ts';
import { parseCommandArgs } from './args.ts';
import type { Command } from './io.ts';

const usage = 'usage: sello serve [--config FILE]   (default: $SELLO_CONFIG, else /etc/sello/sello.yaml or config/sello.yaml, the first that exists)\n';

export const serveCommand: Command = async (args, io) => {
  const { values } = parseCommandArgs('serve', { args, options: { config: { type: 'string' } } });
  if (values.help) {
    io.stdout(usage);
    return 0;
  }
  // A worker of `workers` > 1 takes its config from the primary (src/cluster/).
  if (cluster.isWorker) return runWorker();
  const file = configPath(values.config, io.env);
  const config = await loadConfig(file, io.env);
  // The level is fixed at start: a reload does not re-create the logger.
  const logger = createLogger(config.logging.level, undefined, config.logging.format);
  const workers = workerCount(config.workers);
  if (workers > 1) return runPrimary({ config, workers, logger, load: () => loadConfig(file, io.env), stderr: io.stderr });
  // Caught from the start: SIGHUP's default action would end the process. One that arrives
  // while starting is carried out once sello runs.
  let running: RunningSello | undefined;
  let reloadPending = false;
  const reload = () => {
    if (!running) {
      reloadPending = true;
      return;
    }
    logger.info({ signal: 'SIGHUP', file }, 'reloading the configuration');
    void running.reload(() => loadConfig(file, io.env));
  };
  process.on('SIGHUP', reload);
  try {
    running = await inConfigFile(file, () => startSello(config, logger, { operationsEndpoint: true }));
  } catch (error) {
    process.off('SIGHUP', reload);
    throw error;
  }
  for (const [name, address] of running.addresses) io.stderr(`sello: ${name} listening on ${address.host}:${address.port}\n`);
  const operations = running.operationsAddress;
  if (operations) io.stderr(`sello: metrics on http://${operations.host}:${operations.port}/metrics\n`);
  if (reloadPending) reload();

  const started = running;
  try {
    await new Promise<void>((resolve) => {
      let stopping = false;
      const stop = (signal: string) => {
        if (stopping) {
          // A second signal: the operator does not want to wait for the deadline.
          logger.warn({ signal }, 'stopping now');
          void started.close();
          return;
        }
        stopping = true;
        logger.info({ signal, deadlineMs: started.config.shutdown.deadline }, 'stopping');
        started.shutdown().then(resolve, resolve);
      };
      process.on('SIGTERM', stop);
      process.on('SIGINT', stop);
    });
  } finally {
    process.off('SIGHUP', reload);
  }
  logger.flush();
  return 0;
};

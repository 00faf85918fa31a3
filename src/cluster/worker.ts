// One worker process of `sello serve` with `workers` > 1: the whole of sello (listeners,
// pipeline, relay pool) on listening sockets node:cluster shares with the other workers.
// Owns: taking the primary's config, starting, and carrying out the primary's reload, shutdown
// and readiness requests; offering its metrics registry to the primary's aggregation.
// Must not: act on signals itself (the primary decides: a SIGTERM sent to the whole process
// group must not make every process drain on its own), or read the config file.

import cluster from 'node:cluster';
import { AggregatorRegistry } from 'prom-client';
import { startSello, type RunningSello } from '../app.ts';
import { createLogger } from '../observability/logger.ts';
import { isSelloMessage, type FromWorker, type ToWorker } from './messages.ts';

function send(message: FromWorker): void {
  process.send?.(message);
}

/** Runs until the primary says stop (or goes away); resolves with the exit code. */
export async function runWorker(): Promise<number> {
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, () => {});
  const messages: ToWorker[] = [];
  let wake: (() => void) | undefined;
  let primaryGone = false;
  process.on('message', (message: unknown) => {
    if (!isSelloMessage(message)) return; // prom-client's metrics requests have their own listener
    messages.push(message as ToWorker);
    wake?.();
  });
  process.on('disconnect', () => {
    primaryGone = true;
    wake?.();
  });
  const next = async (): Promise<ToWorker | undefined> => {
    while (messages.length === 0 && !primaryGone) await new Promise<void>((resolve) => (wake = resolve));
    return messages.shift();
  };
  send({ type: 'sello:hello' });

  const start = await next();
  if (start?.type !== 'sello:start') return 1;
  const workerId = cluster.worker?.id ?? 0;
  const logger = createLogger(start.config.logging.level, undefined, start.config.logging.format).child({ worker: workerId, pid: process.pid });
  let running: RunningSello;
  try {
    running = await startSello(start.config, logger, { operationsEndpoint: false, ...(start.selfSignedTls ? { selfSignedTls: start.selfSignedTls } : {}) });
  } catch (error) {
    const failure = error instanceof Error ? error : new Error(String(error));
    send({ type: 'sello:start-failed', name: failure.name, message: failure.message });
    logger.flush();
    process.disconnect();
    return 1;
  }
  // The primary's AggregatorRegistry asks every worker for these (prom-client's cluster module).
  AggregatorRegistry.setRegistries([running.metrics.registry]);
  new AggregatorRegistry();
  send({ type: 'sello:listening', addresses: [...running.addresses] });

  for (;;) {
    const message = await next();
    if (!message) {
      // The primary died: nobody will restart or stop this worker; drain as for SIGTERM.
      logger.warn('the primary process is gone: stopping');
      await running.shutdown();
      break;
    }
    if (message.type === 'sello:reload') {
      const config = message.config;
      void running.reload(async () => config);
    } else if (message.type === 'sello:reload-failed') {
      running.metrics.configReload('failure');
    } else if (message.type === 'sello:readiness') {
      const id = message.id;
      void running.readiness().then((report) => send({ type: 'sello:readiness', id, report }));
    } else if (message.type === 'sello:shutdown') {
      if (message.now) {
        await running.close();
        break;
      }
      // A second signal may come while draining: close() then hurries the drain along.
      const drained = running.shutdown();
      const hurry = (async () => {
        for (let again = await next(); again; again = await next()) {
          if (again.type === 'sello:shutdown' && again.now) return running.close();
        }
      })();
      await Promise.race([drained, hurry]);
      await drained;
      break;
    }
  }
  logger.flush();
  if (process.connected) process.disconnect();
  return 0;
}

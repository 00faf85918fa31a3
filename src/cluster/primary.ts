// The primary process of `sello serve` with `workers` > 1 (node:cluster): it starts the workers
// and keeps them running, and owns every signal and the operations endpoint.
// Owns: forking and restarting workers, validating a reloaded config once and handing it to
// every worker, draining every worker within shutdown.deadline, /metrics aggregated over all
// workers (prom-client's AggregatorRegistry), /readyz over all workers.
// Must not: accept mail or touch a message (workers do), or give a worker a config it did not
// validate.

import cluster, { type Worker } from 'node:cluster';
import { AggregatorRegistry, Registry } from 'prom-client';
import { loadCredentials, loadSigning } from '../app.ts';
import type { Config } from '../config/schema.ts';
import { BindError, ConfigError } from '../errors.ts';
import { startOperationsEndpoint, type OperationsEndpoint, type ReadinessReport } from '../observability/http.ts';
import type { Logger } from '../observability/logger.ts';
import { selfSignedCertificate } from '../smtp/tls.ts';
import { isSelloMessage, type FromWorker, type ToWorker } from './messages.ts';

export interface PrimaryOptions {
  config: Config;
  workers: number;
  logger: Logger;
  /** Reads and validates the config file again (SIGHUP). */
  load: () => Promise<Config>;
  stderr: (text: string) => void;
}

/** A worker that dies sooner than this after starting is restarted after a growing pause. */
const quickDeathMs = 2000;
const maxRestartPauseMs = 30_000;
/** After shutdown.deadline the workers send their 421s and exit; this much more, then SIGKILL. */
const killGraceMs = 10_000;
/** How long /readyz waits for a worker's answer. */
const readinessAnswerMs = 6000;

/** The aggregated metrics of every worker, as the operations endpoint serves a Registry. */
class ClusterRegistry extends AggregatorRegistry<typeof Registry.PROMETHEUS_CONTENT_TYPE> {
  override metrics(): Promise<string> {
    return this.clusterMetrics();
  }
}

function sendTo(worker: Worker, message: ToWorker): void {
  if (worker.isConnected()) worker.send(message);
}

/** Runs the workers until SIGTERM/SIGINT has drained them all; resolves with the exit code. */
export async function runPrimary(options: PrimaryOptions): Promise<number> {
  const { logger, workers: wanted } = options;
  let config = options.config;
  // Each worker accepts on the shared listening socket itself (SCHED_NONE). node:cluster's default
  // on Linux, round robin, has the primary accept every connection and pass it over IPC: on 2
  // cores that costs the primary more than the workers gain (docs/performance.md, "Every core").
  // NODE_CLUSTER_SCHED_POLICY=rr (Node's own variable) still chooses round robin.
  if (process.env.NODE_CLUSTER_SCHED_POLICY === undefined) cluster.schedulingPolicy = cluster.SCHED_NONE;
  // Structured clone: a Config crosses the IPC channel as the same data.
  cluster.setupPrimary({ serialization: 'advanced' });
  // One certificate for every worker: made per worker, a client would meet a different one on
  // each connection. The private key goes to the workers over IPC only, never to disk or a log.
  const selfSignedTls = config.listeners.some((listener) => listener.tls && listener.tls.mode !== 'none' && !listener.tls.cert) ? selfSignedCertificate(config.hostname) : undefined;
  const listening = new Set<Worker>();
  const startedAt = new Map<Worker, number>();
  let stopping = false;
  let restartPauseMs = 0;
  let readinessRequest = 0;
  const readinessWaiters = new Map<number, (report: ReadinessReport) => void>();
  let onListening: ((worker: Worker, addresses: [string, { host: string; port: number }][]) => void) | undefined;
  // Caught from the start, as in single-process mode: SIGHUP's default action would end the
  // primary. One that arrives while the workers start is carried out once they listen.
  let onHangup: (() => void) | undefined;
  let hangupPending = false;
  const hangup = () => {
    if (onHangup) onHangup();
    else hangupPending = true;
  };
  process.on('SIGHUP', hangup);
  let onStartFailed: ((error: Error) => void) | undefined;

  const fork = (): Worker => {
    const worker = cluster.fork();
    startedAt.set(worker, performance.now());
    worker.on('message', (message: unknown) => {
      if (!isSelloMessage(message)) return;
      const fromWorker = message as FromWorker;
      if (fromWorker.type === 'sello:hello') sendTo(worker, { type: 'sello:start', config, ...(selfSignedTls ? { selfSignedTls } : {}) });
      else if (fromWorker.type === 'sello:listening') {
        listening.add(worker);
        logger.info({ worker: worker.id, pid: worker.process.pid }, 'worker started');
        onListening?.(worker, fromWorker.addresses);
      } else if (fromWorker.type === 'sello:start-failed') {
        const error = Object.assign(new Error(fromWorker.message), { name: fromWorker.name });
        logger.error({ worker: worker.id, pid: worker.process.pid, err: fromWorker.message }, 'worker could not start');
        onStartFailed?.(error);
      } else if (fromWorker.type === 'sello:readiness') {
        readinessWaiters.get(fromWorker.id)?.(fromWorker.report);
      }
    });
    return worker;
  };

  const live = () => Object.values(cluster.workers ?? {}).filter((worker): worker is Worker => worker !== undefined);
  const broadcast = (message: ToWorker) => {
    for (const worker of live()) sendTo(worker, message);
  };

  // A dead worker is replaced: its sessions are gone (clients saw the connection drop before any
  // 250 they did not get, and retry), the other workers go on serving.
  const restart = (worker: Worker, code: number | null, signal: string | null) => {
    listening.delete(worker);
    const lived = performance.now() - (startedAt.get(worker) ?? 0);
    startedAt.delete(worker);
    if (stopping) return;
    restartPauseMs = lived < quickDeathMs ? Math.min(maxRestartPauseMs, Math.max(500, restartPauseMs * 2)) : 0;
    logger.error({ worker: worker.id, pid: worker.process.pid, code, signal, restartInMs: restartPauseMs }, 'worker died: starting a new one');
    setTimeout(() => {
      if (!stopping) fork();
    }, restartPauseMs).unref();
  };

  // ── Start: every worker listening, or none ──────────────────────────────────────────────
  let addresses: [string, { host: string; port: number }][] = [];
  let cleanUp = () => {};
  try {
    await new Promise<void>((resolve, reject) => {
      onListening = (_worker, workerAddresses) => {
        addresses = workerAddresses;
        if (listening.size === wanted) resolve();
      };
      onStartFailed = reject;
      const early = (worker: Worker, code: number | null) => {
        if (!listening.has(worker)) reject(new Error(`worker ${worker.id} exited with code ${code} while starting`));
      };
      cluster.on('exit', early);
      cleanUp = () => cluster.off('exit', early);
      for (let index = 0; index < wanted; index++) fork();
    });
  } catch (error) {
    stopping = true;
    process.off('SIGHUP', hangup);
    for (const worker of live()) worker.process.kill('SIGKILL');
    throw error;
  } finally {
    onListening = undefined;
    onStartFailed = undefined;
    cleanUp();
  }
  cluster.on('exit', restart);

  // ── Operations endpoint: metrics of all workers, readiness of all workers ───────────────
  const readiness = async (): Promise<ReadinessReport> => {
    if (stopping) return { ready: false, checks: { listeners: 'shutting down' } };
    const running = live().filter((worker) => listening.has(worker));
    const reports = await Promise.all(
      running.map(
        (worker) =>
          new Promise<ReadinessReport>((resolve) => {
            const id = ++readinessRequest;
            const timer = setTimeout(() => answer({ ready: false, checks: { [`worker ${worker.id}`]: 'no answer' } }), readinessAnswerMs);
            const answer = (report: ReadinessReport) => {
              clearTimeout(timer);
              readinessWaiters.delete(id);
              resolve(report);
            };
            readinessWaiters.set(id, answer);
            sendTo(worker, { type: 'sello:readiness', id });
          }),
      ),
    );
    // Every worker runs the same config: a check is ok only when it is ok in every worker.
    const checks: Record<string, string> = {};
    for (const report of reports) {
      for (const [name, outcome] of Object.entries(report.checks)) if (checks[name] === undefined || checks[name] === 'ok') checks[name] = outcome;
    }
    checks.workers = running.length === wanted ? 'ok' : `${running.length} of ${wanted} running`;
    return { ready: running.length === wanted && reports.every((report) => report.ready), checks };
  };
  let endpoint: OperationsEndpoint;
  try {
    endpoint = await startOperationsEndpoint({ listen: config.metrics.listen, registry: new ClusterRegistry() as unknown as Registry, readiness, logger }).catch((error: unknown) =>
      Promise.reject(new BindError('metrics.listen', config.metrics.listen, error)),
    );
  } catch (error) {
    stopping = true;
    process.off('SIGHUP', hangup);
    for (const worker of live()) worker.process.kill('SIGKILL');
    throw error;
  }
  logger.info({ workers: wanted, address: endpoint.address }, 'workers listening; operations endpoint (/metrics, /healthz, /readyz) on the primary');
  for (const [name, address] of addresses) options.stderr(`sello: ${name} listening on ${address.host}:${address.port}\n`);
  options.stderr(`sello: metrics on http://${endpoint.address.host}:${endpoint.address.port}/metrics\n`);

  // ── SIGHUP: validate once, then every worker swaps in the same config ───────────────────
  const reload = async () => {
    if (stopping) return;
    let next: Config;
    try {
      next = await options.load();
      // What check-config checks besides certificates: the keys and the credentials files.
      await loadSigning(next);
      await loadCredentials(next);
    } catch (error) {
      logger.error(
        { err: error instanceof Error ? error.message : String(error), ...(error instanceof ConfigError && error.path ? { path: error.path } : {}) },
        'config reload failed: the running configuration stays in effect',
      );
      broadcast({ type: 'sello:reload-failed' });
      return;
    }
    config = next;
    broadcast({ type: 'sello:reload', config });
  };
  let reloads: Promise<void> = Promise.resolve();
  onHangup = () => {
    logger.info({ signal: 'SIGHUP' }, 'reloading the configuration in every worker');
    reloads = reloads.then(reload);
  };
  if (hangupPending) onHangup();

  // ── SIGTERM/SIGINT: every worker drains within shutdown.deadline ────────────────────────
  await new Promise<void>((resolve) => {
    let killTimer: NodeJS.Timeout | undefined;
    const stopped = () => {
      if (!stopping || live().length > 0) return;
      clearTimeout(killTimer);
      resolve();
    };
    cluster.on('exit', stopped);
    const stop = (signal: string) => {
      if (stopping) {
        logger.warn({ signal }, 'stopping now');
        broadcast({ type: 'sello:shutdown', now: true });
        return;
      }
      stopping = true;
      const deadlineMs = config.shutdown.deadline;
      logger.info({ signal, deadlineMs, workers: live().length }, 'stopping every worker');
      broadcast({ type: 'sello:shutdown', now: false });
      killTimer = setTimeout(() => {
        for (const worker of live()) {
          logger.error({ worker: worker.id, pid: worker.process.pid }, 'worker still running after shutdown.deadline: killed');
          worker.process.kill('SIGKILL');
        }
      }, deadlineMs + killGraceMs);
      stopped();
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
  process.off('SIGHUP', hangup);
  await endpoint.close();
  logger.info('stopped');
  logger.flush();
  return 0;
}

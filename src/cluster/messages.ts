// What the primary and the workers of `sello serve` say to each other over the cluster's IPC
// channel (structured clone: a Config crosses as data). Owns: the message shapes and the worker
// count. Must not: hold behaviour (primary.ts, worker.ts).

import os from 'node:os';
import type { Config } from '../config/schema.ts';
import type { ReadinessReport } from '../observability/http.ts';
import type { TlsMaterial } from '../smtp/tls.ts';

/** Primary → worker. */
export type ToWorker =
  /**
   * The config to start with: the one the primary validated, never the file read again; and the
   * self-signed certificate for listeners with TLS but no cert/key, the same in every worker.
   */
  | { type: 'sello:start'; config: Config; selfSignedTls?: TlsMaterial }
  /** SIGHUP: a config the primary validated (schema, keys, credentials); the worker swaps it in. */
  | { type: 'sello:reload'; config: Config }
  /** SIGHUP with a config the primary refused: counted in every worker's reload metric. */
  | { type: 'sello:reload-failed' }
  /** SIGTERM/SIGINT: drain within shutdown.deadline (`now`: a second signal, 421 at once). */
  | { type: 'sello:shutdown'; now: boolean }
  | { type: 'sello:readiness'; id: number };

/** Worker → primary. */
export type FromWorker =
  /** The worker listens for messages now (one sent earlier would be lost): send the config. */
  | { type: 'sello:hello' }
  | { type: 'sello:listening'; addresses: [name: string, address: { host: string; port: number }][] }
  | { type: 'sello:start-failed'; name: string; message: string }
  | { type: 'sello:readiness'; id: number; report: ReadinessReport };

export function isSelloMessage(message: unknown): message is { type: string } {
  return typeof message === 'object' && message !== null && typeof (message as { type?: unknown }).type === 'string' && (message as { type: string }).type.startsWith('sello:');
}

/** `workers: auto` is one process per CPU the machine offers this process. */
export function workerCount(setting: Config['workers']): number {
  return setting === 'auto' ? Math.max(1, os.availableParallelism()) : setting;
}

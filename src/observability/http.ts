// The operations HTTP endpoint on its own port: /metrics (Prometheus text format), /healthz (the
// process runs) and /readyz (sello can do its job: see ReadinessCheck), nothing else.
// Owns: the HTTP surface and caching of readiness answers. Must not: decide what "ready" means
// (app.ts composes the checks), or expose anything but metrics and check outcomes.

import http from 'node:http';
import type { Registry } from 'prom-client';
import type { Logger } from './logger.ts';

/** One readiness condition; `check` resolves when it holds and rejects (with a reason) when not. */
export interface ReadinessCheck {
  name: string;
  check(): Promise<void>;
  /** Shown in the report but never makes sello unready (e.g. a pending rotation key's record). */
  advisory?: boolean;
}

export interface ReadinessReport {
  ready: boolean;
  /** name → "ok" or why not. */
  checks: Record<string, string>;
}

/** Each check gets at most this long; a probe that hangs is as bad as one that fails. */
export const READINESS_CHECK_TIMEOUT_MS = 5000;

/**
 * Runs `checks()` (asked again each time: a reload may change them) in parallel, each bounded
 * by `timeoutMs`. The answer is cached for `cacheMs` so a probe every second does not open a
 * connection to the MTA every second, and concurrent requests share one evaluation.
 */
export function cachedReadiness(
  checks: () => readonly ReadinessCheck[],
  options: { cacheMs: number; timeoutMs?: number; now?: () => number },
): () => Promise<ReadinessReport> {
  const now = options.now ?? (() => performance.now());
  const timeoutMs = options.timeoutMs ?? READINESS_CHECK_TIMEOUT_MS;
  let cached: { at: number; report: ReadinessReport } | undefined;
  let inFlight: Promise<ReadinessReport> | undefined;

  async function evaluate(): Promise<ReadinessReport> {
    const list = checks();
    const outcomes = await Promise.all(list.map((entry) => withTimeout(entry.check(), timeoutMs).then(() => 'ok', (error: unknown) => reason(error))));
    const report: ReadinessReport = { ready: outcomes.every((outcome, index) => outcome === 'ok' || list[index]?.advisory === true), checks: {} };
    list.forEach((entry, index) => (report.checks[entry.name] = outcomes[index] as string));
    cached = { at: now(), report };
    return report;
  }

  return () => {
    if (cached && now() - cached.at < options.cacheMs) return Promise.resolve(cached.report);
    inFlight ??= evaluate().finally(() => (inFlight = undefined));
    return inFlight;
  };
}

function reason(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text || 'failed';
}

function withTimeout(promise: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export interface OperationsEndpointOptions {
  listen: { host: string; port: number };
  registry: Registry;
  readiness: () => Promise<ReadinessReport>;
  logger: Logger;
}

export interface OperationsEndpoint {
  /** The bound address (port 0 in config → the port chosen). */
  readonly address: { host: string; port: number };
  close(): Promise<void>;
}

export async function startOperationsEndpoint(options: OperationsEndpointOptions): Promise<OperationsEndpoint> {
  const server = http.createServer((request, response) => {
    handle(request, response, options).catch((error: unknown) => {
      options.logger.error({ err: error, path: request.url }, 'operations endpoint error');
      if (!response.headersSent) response.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
      response.end('internal error\n');
    });
  });
  // A scraper's keep-alive connection must not hold up shutdown.
  server.keepAliveTimeout = 5000;
  const { host, port } = options.listen;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = server.address();
  return {
    address: { host, port: typeof bound === 'object' && bound ? bound.port : port },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function handle(request: http.IncomingMessage, response: http.ServerResponse, options: OperationsEndpointOptions): Promise<void> {
  const path = new URL(request.url ?? '/', 'http://sello').pathname;
  const send = (status: number, type: string, body: string) => {
    response.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
    response.end(request.method === 'HEAD' ? undefined : body);
  };
  if (request.method !== 'GET' && request.method !== 'HEAD') {
    response.setHeader('allow', 'GET, HEAD');
    return send(405, 'text/plain; charset=utf-8', 'method not allowed\n');
  }
  switch (path) {
    case '/metrics':
      return send(200, options.registry.contentType, await options.registry.metrics());
    case '/healthz':
      // Alive: the event loop runs and answers. Nothing else (a dead MTA is not sello's death).
      return send(200, 'text/plain; charset=utf-8', 'ok\n');
    case '/readyz': {
      const report = await options.readiness();
      return send(report.ready ? 200 : 503, 'application/json', `${JSON.stringify({ status: report.ready ? 'ready' : 'not ready', checks: report.checks })}\n`);
    }
    default:
      return send(404, 'text/plain; charset=utf-8', 'not found\n');
  }
}

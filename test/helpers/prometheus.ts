// A real Prometheus server (Debian prometheus) as a child process, scraping targets on loopback,
// and promtool. Each server has a private temp dir (prometheus.yml + TSDB), listens on
// 127.0.0.1:<free port> and is queried over its HTTP API (/api/v1/query).
// Owns: generating the config, starting/readiness/stopping, PromQL instant queries, waiting for a
// scrape, running promtool. Must not: scrape or listen anywhere but loopback, touch the system
// Prometheus (/etc/prometheus, /var/lib/prometheus, port 9090), or leave a process behind (killed on
// stop() and on process exit). Gate tests with requireTool(t, checkPrometheus(), checkPromtool()).

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';
import { freePort, removeTempDir, tempDir, type CleanupHooks } from './tools.ts';

export const PROMETHEUS = '/usr/bin/prometheus';
export const PROMTOOL = '/usr/bin/promtool';

/** One element of an instant vector: labels (with __name__) and its value. */
export type Sample = { metric: Record<string, string>; value: number; timestamp: number };

export type PrometheusOptions = {
  /** host:port targets of the default job (static_configs); scraped at /metrics. */
  targets?: string[];
  /** Name of the default job; default "sello". */
  job?: string;
  /** Global scrape (and evaluation) interval; default "1s". */
  scrapeInterval?: string;
  /** Complete scrape_configs to use instead of the default job (e.g. from deploy/). */
  scrapeConfigs?: Record<string, unknown>[];
};

export interface PrometheusServer {
  /** http://127.0.0.1:<port> */
  readonly url: string;
  readonly dir: string;
  readonly configFile: string;
  /** PromQL instant query at "now"; resolves to the vector (a scalar comes back as one sample without labels). */
  query(promql: string): Promise<Sample[]>;
  /** The single value of a query that must return exactly one sample. */
  value(promql: string): Promise<number>;
  /**
   * Waits until `job` (default: the default job) was scraped successfully by a scrape that
   * started at or after `after` (ms since epoch; default now), so everything the target counted
   * before `after` is in Prometheus.
   */
  waitForScrape(options?: { job?: string; after?: number; timeoutMs?: number }): Promise<void>;
  /** Waits until `promql` returns at least one sample. */
  waitForSeries(promql: string, timeoutMs?: number): Promise<Sample[]>;
  /** /api/v1/targets: the active targets. */
  targets(): Promise<ActiveTarget[]>;
  /** What Prometheus logged so far (stderr), for failure messages. */
  log(): string;
  stop(): Promise<void>;
}

export type ActiveTarget = {
  labels: Record<string, string>;
  discoveredLabels: Record<string, string>;
  scrapePool: string;
  scrapeUrl: string;
  health: 'up' | 'down' | 'unknown';
  lastError: string;
};

/** prometheus.yml for `options` (YAML text). */
export function prometheusConfig(options: PrometheusOptions): string {
  const interval = options.scrapeInterval ?? '1s';
  const scrapeConfigs = options.scrapeConfigs ?? [{ job_name: options.job ?? 'sello', static_configs: [{ targets: options.targets ?? [] }] }];
  return stringify({
    global: { scrape_interval: interval, scrape_timeout: interval, evaluation_interval: interval },
    scrape_configs: scrapeConfigs,
  });
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of live) child.kill('SIGKILL');
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Starts Prometheus with a private config and TSDB in a temp dir, on 127.0.0.1:<free port>, and
 * waits for /-/ready. With hooks (a TestContext or suite context) it is stopped after the test.
 */
export async function startPrometheus(hooks: CleanupHooks | undefined, options: PrometheusOptions = {}): Promise<PrometheusServer> {
  const dir = await tempDir(undefined, 'sello-prometheus-');
  const configFile = path.join(dir, 'prometheus.yml');
  await writeFile(configFile, prometheusConfig(options));
  const server = await launchRetrying(dir, configFile, options.job ?? 'sello').catch(async (error: unknown) => {
    await removeTempDir(dir);
    throw error;
  });
  hooks?.after(() => server.stop());
  return server;
}

/** freePort leaves a small race: another process may take the port first. Try again then. */
async function launchRetrying(dir: string, configFile: string, defaultJob: string): Promise<PrometheusServer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await launch(dir, configFile, defaultJob, await freePort());
    } catch (error) {
      if (attempt >= 3 || !/address already in use/.test(String(error))) throw error;
    }
  }
}

async function launch(dir: string, configFile: string, defaultJob: string, port: number): Promise<PrometheusServer> {
  installExitHook();
  const url = `http://127.0.0.1:${port}`;
  let log = '';
  const child = spawn(
    PROMETHEUS,
    [
      `--config.file=${configFile}`,
      `--storage.tsdb.path=${path.join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      // Nothing from /etc/prometheus: the console templates are not used.
      `--web.console.templates=${path.join(dir, 'consoles')}`,
      `--web.console.libraries=${path.join(dir, 'console_libraries')}`,
      '--log.level=info',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  live.add(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  void exited.then(() => live.delete(child));
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (log += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (log += chunk));
  const running = () => child.exitCode === null && child.signalCode === null;

  let stopped = false;
  async function stop(): Promise<void> {
    if (stopped) return;
    stopped = true;
    if (running()) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    await removeTempDir(dir);
  }

  // Ready: /-/ready answers 200 once the TSDB is open and the config loaded (503 before).
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (!running()) {
      await exited;
      throw new Error(`prometheus exited during startup (${child.exitCode ?? child.signalCode})\n${log}`);
    }
    const ready = await fetch(`${url}/-/ready`).then(
      (response) => response.status === 200,
      () => false,
    );
    if (ready) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`prometheus not ready on ${url} after 15 s\n${log}`);
    }
    await sleep(50);
  }

  async function query(promql: string): Promise<Sample[]> {
    const response = await fetch(`${url}/api/v1/query`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ query: promql }),
    });
    const body = (await response.json()) as {
      status: string;
      error?: string;
      data?: { resultType: string; result: unknown };
    };
    if (body.status !== 'success' || !body.data) throw new Error(`PromQL ${promql}: ${body.error ?? `HTTP ${response.status}`}`);
    const { resultType, result } = body.data;
    if (resultType === 'scalar') {
      const [timestamp, value] = result as [number, string];
      return [{ metric: {}, value: Number(value), timestamp }];
    }
    if (resultType !== 'vector') throw new Error(`PromQL ${promql}: a ${resultType}, not an instant vector`);
    return (result as { metric: Record<string, string>; value: [number, string] }[]).map((sample) => ({
      metric: sample.metric,
      value: Number(sample.value[1]),
      timestamp: sample.value[0],
    }));
  }

  async function value(promql: string): Promise<number> {
    const samples = await query(promql);
    if (samples.length !== 1) throw new Error(`PromQL ${promql}: ${samples.length} samples, expected exactly one: ${JSON.stringify(samples)}`);
    return samples[0]!.value;
  }

  async function waitForSeries(promql: string, timeoutMs = 10_000): Promise<Sample[]> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const samples = await query(promql);
      if (samples.length > 0) return samples;
      if (Date.now() > until) throw new Error(`no series for ${promql} after ${timeoutMs} ms\n${log}`);
      await sleep(100);
    }
  }

  async function waitForScrape(options: { job?: string; after?: number; timeoutMs?: number } = {}): Promise<void> {
    const job = options.job ?? defaultJob;
    const after = (options.after ?? Date.now()) / 1000;
    const timeoutMs = options.timeoutMs ?? 15_000;
    const until = Date.now() + timeoutMs;
    // timestamp(up) is the start of the target's last scrape; the scrape's samples are committed
    // together with `up`, so once it is visible, all of them are.
    const promql = `timestamp(up{job="${job}"} == 1) >= ${after}`;
    for (;;) {
      if ((await query(promql)).length > 0) return;
      if (Date.now() > until) {
        const targets = await targetsOf();
        throw new Error(`no successful scrape of job ${job} after ${new Date(after * 1000).toISOString()} within ${timeoutMs} ms: ${JSON.stringify(targets)}\n${log}`);
      }
      await sleep(100);
    }
  }

  async function targetsOf(): Promise<ActiveTarget[]> {
    const response = await fetch(`${url}/api/v1/targets?state=active`);
    const body = (await response.json()) as { data: { activeTargets: ActiveTarget[] } };
    return body.data.activeTargets;
  }

  return { url, dir, configFile, query, value, waitForScrape, waitForSeries, targets: targetsOf, log: () => log, stop };
}

export type PromtoolResult = { status: number | null; stdout: string; stderr: string };

/** Runs promtool with `args`, `input` on stdin. */
export function promtool(args: string[], input?: string): PromtoolResult {
  const result = spawnSync(PROMTOOL, args, { input: input ?? '', encoding: 'utf8', timeout: 30_000 });
  if (result.error) throw result.error;
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/**
 * `promtool check metrics` on exposition text. promtool exits 0 when clean, 3 when it only found
 * lint problems (one per line, "<metric> <problem>"), 1 when the text does not parse.
 */
export function checkMetricsText(text: string): PromtoolResult & { problems: string[] } {
  const result = promtool(['check', 'metrics'], text);
  const problems = `${result.stdout}\n${result.stderr}`
    .split('\n')
    .map((line) => line.trim())
    .filter(Boolean);
  return { ...result, problems };
}

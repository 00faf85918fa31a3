// sello under test, run as its own process so its memory and CPU are its own: a config object
// (JSON in argv[2]) → parseConfig → startSello with a silent logger, exactly as serve would
// run it minus the log output. Reports the bound port of the listener named in argv[3].
// With argv[4] = N > 1 it runs as `sello serve` does with `workers: N`: this process is the
// primary of src/cluster/ (node:cluster forks this same script as the workers), and its usage
// is its own plus every worker's, read from /proc (Linux).
// Must not: change sello's behaviour or configuration beyond what the parent passed in.
// Usage (forked by bench/child.ts): node bench/sello-process.ts '<config json>' <listener> [workers]

import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import { startSello } from '../src/app.ts';
import { runPrimary } from '../src/cluster/primary.ts';
import { runWorker } from '../src/cluster/worker.ts';
import { parseConfig } from '../src/config/load.ts';
import { silentLogger } from '../src/observability/logger.ts';
import { ownUsage, serveParent, type ChildToParent, type ChildUsage } from './child.ts';

const [configJson = '', listener = '', workersArgument = '1'] = process.argv.slice(2);
const workers = Number(workersArgument);

/** /proc/<pid>/stat utime + stime are in clock ticks; Linux uses 100 per second. */
const ticksPerSecond = 100;

/** A worker's CPU time and memory from /proc (zeros once it is gone). */
function procUsage(pid: number): ChildUsage {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]);
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kib = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024;
    return { cpuMicros: (ticks / ticksPerSecond) * 1e6, maxRssBytes: kib('VmHWM'), rssBytes: kib('VmRSS') };
  } catch {
    return { cpuMicros: 0, maxRssBytes: 0, rssBytes: 0 };
  }
}

/** The primary's usage plus every worker's: the process under test is all of them. */
function clusterUsage(): ChildUsage {
  const total = ownUsage();
  for (const worker of Object.values(cluster.workers ?? {})) {
    const pid = worker?.process.pid;
    if (pid === undefined) continue;
    const usage = procUsage(pid);
    total.cpuMicros += usage.cpuMicros;
    total.maxRssBytes += usage.maxRssBytes;
    total.rssBytes += usage.rssBytes;
  }
  return total;
}

const fail = (error: unknown) => {
  process.send?.({ type: 'failed', error: error instanceof Error ? error.message : String(error) } satisfies ChildToParent);
  process.exitCode = 1;
  process.disconnect?.();
};

if (cluster.isWorker) {
  await runWorker();
} else if (workers > 1) {
  const config = parseConfig(JSON.parse(configJson));
  let announced = '';
  let ready = false;
  runPrimary({
    config,
    workers,
    logger: silentLogger(),
    load: async () => config,
    stderr: (text) => {
      announced += text;
      const port = new RegExp(`sello: ${listener} listening on [^\\n]*:(\\d+)\\n`).exec(announced)?.[1];
      if (ready || !port) return;
      ready = true;
      serveParent(clusterUsage);
      process.send?.({ type: 'ready', port: Number(port), usage: clusterUsage() } satisfies ChildToParent);
    },
  }).catch(fail);
} else {
  try {
    const running = await startSello(parseConfig(JSON.parse(configJson)), silentLogger());
    const address = running.addresses.get(listener);
    if (!address) throw new Error(`no listener named ${JSON.stringify(listener)} in the config`);
    serveParent(() => ownUsage());
    process.send?.({ type: 'ready', port: address.port, usage: ownUsage() } satisfies ChildToParent);
  } catch (error) {
    fail(error);
  }
}

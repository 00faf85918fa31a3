// `npm run bench`: messages through sello to a downstream SMTP sink, against the proxy shape and
// the sink alone, in one run. Setups: a = sello dual-signing (RSA-2048 + Ed25519), a-rsa =
// RSA-2048 only, b = sello relaying unsigned (From domain not in the signing table), a-workers =
// a with `workers` = the number of cores (node:cluster, as `sello serve` runs it), p = the proxy
// shape (smtp-server + pooled nodemailer relay, no crypto: the baseline every sello figure is a
// ratio to), c = the sink directly. Load modes: session (persistent client connections) and
// connection (one message per connection, as MTAs and mail clients mostly send).
// Each measurement runs in fresh child processes (sink, sello) so their memory and CPU are their
// own; the load generator (this process) is the same code for every setup. Repeats interleave
// the setups so slow drift on a noisy machine hits them alike; the report gives medians.
// Owns: flags, keys, the measurement schedule and the consistency checks. Must not: change
// anything in src/ or time anything that is not in the report.
//
// Flags: --messages N (timed per run, default 2000)  --warmup N (default 1000)
//        --concurrency C (default 20)  --repeat R (default 3)  --sizes 2048,102400
//        --min-seconds S (a timed run goes on past N messages until S seconds have passed,
//        default 1, so the fastest setups are not timed over a fraction of a second)
//        --no-rsa-only (skip setup a-rsa)  --no-workers (skip setup a-workers)
//        --modes session,connection (default both)  --json (the report as JSON on stdout)
//        --no-memory (skip the memory phase, bench/memory.ts)  --memory-only (only that phase)
//        --cpu-prof DIR (sink and sello write V8 CPU profiles there, for finding where time goes;
//        profiling slows them, so the numbers of such a run are not the benchmark's)

import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { generateKey, writeKey } from '../src/signing/keys.ts';
import { Child, type ChildUsage } from './child.ts';
import { buildMessage } from './messages.ts';
import { LoadGenerator, PerConnectionLoad } from './load.ts';
import { formatMemory, measureMemory, type MemoryReport } from './memory.ts';
import { formatReport, loadModes, percentile, ratios, sizeLabel, summarize, type LoadMode, type Report, type Run, type Setup, type SetupId } from './report.ts';

const runDeadlineMs = 300_000;

function integerFlag(name: string, value: string | undefined, fallback: number, minimum: number): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < minimum) throw new Error(`--${name} must be an integer ≥ ${minimum}, got ${JSON.stringify(value)}`);
  return parsed;
}

function numberFlag(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed < 0) throw new Error(`--${name} must be a number ≥ 0, got ${JSON.stringify(value)}`);
  return parsed;
}

function parseFlags() {
  const { values } = parseArgs({
    options: {
      messages: { type: 'string' },
      warmup: { type: 'string' },
      'min-seconds': { type: 'string' },
      concurrency: { type: 'string' },
      repeat: { type: 'string' },
      sizes: { type: 'string' },
      'no-rsa-only': { type: 'boolean', default: false },
      'no-workers': { type: 'boolean', default: false },
      modes: { type: 'string' },
      json: { type: 'boolean', default: false },
      'no-memory': { type: 'boolean', default: false },
      'memory-only': { type: 'boolean', default: false },
      'cpu-prof': { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  });
  const sizes = (values.sizes ?? '2048,102400').split(',').map((size) => integerFlag('sizes', size.trim(), 0, 512));
  const modes = (values.modes ?? loadModes.join(',')).split(',').map((mode) => {
    const known = loadModes.find((candidate) => candidate === mode.trim());
    if (!known) throw new Error(`--modes takes ${loadModes.join(', ')}, got ${JSON.stringify(mode)}`);
    return known;
  });
  return {
    messages: integerFlag('messages', values.messages, 2000, 1),
    warmup: integerFlag('warmup', values.warmup, 1000, 0),
    minimumSeconds: numberFlag('min-seconds', values['min-seconds'], 1),
    concurrency: integerFlag('concurrency', values.concurrency, 20, 1),
    repeat: integerFlag('repeat', values.repeat, 3, 1),
    sizes,
    rsaOnly: !values['no-rsa-only'],
    workers: !values['no-workers'] && os.availableParallelism() > 1,
    modes: [...new Set(modes)],
    json: values.json,
    memory: !values['no-memory'],
    memoryOnly: values['memory-only'],
    cpuProfileDir: values['cpu-prof'],
  };
}

type Flags = ReturnType<typeof parseFlags>;

const cores = os.availableParallelism();

const allSetups: Setup[] = [
  { id: 'c', label: 'sink directly, no proxy', under: 'sink', fromDomain: 'dual.example', signaturesPerMessage: 0 },
  { id: 'p', label: 'proxy shape: smtp-server + pooled nodemailer relay in step, no crypto (the baseline)', under: 'proxy', fromDomain: 'dual.example', signaturesPerMessage: 0 },
  { id: 'b', label: 'sello, signing off (From domain not in the signing table, relayed unsigned)', under: 'sello', fromDomain: 'unsigned.example', signaturesPerMessage: 0 },
  { id: 'a-rsa', label: 'sello, signing with RSA-2048 only', under: 'sello', fromDomain: 'rsa.example', signaturesPerMessage: 1 },
  { id: 'a', label: 'sello, dual signing RSA-2048 + Ed25519', under: 'sello', fromDomain: 'dual.example', signaturesPerMessage: 2 },
  { id: 'a-workers', label: `sello, dual signing, workers: auto (${cores} processes)`, under: 'sello', workers: cores, fromDomain: 'dual.example', signaturesPerMessage: 2 },
];

/** Every sello setup against the proxy-shape baseline first, then the older comparisons. */
const ratioPairs: [SetupId, SetupId][] = [
  ['a', 'p'],
  ['a-rsa', 'p'],
  ['b', 'p'],
  ['a-workers', 'p'],
  ['a-workers', 'a'],
  ['p', 'c'],
  ['a', 'c'],
  ['b', 'c'],
  ['a', 'b'],
  ['a-rsa', 'b'],
  ['a', 'a-rsa'],
];

/** One sello config for every sello setup: only the From domain decides what is signed. */
function selloConfig(sinkPort: number, keysDir: string, concurrency: number) {
  return {
    hostname: 'sello.bench.test',
    listeners: [{ name: 'filter', role: 'filter', listen: '127.0.0.1:0', sign: true }],
    relay: { target: `smtp://127.0.0.1:${sinkPort}`, starttls: 'never' },
    signing: { keysDir, domains: { 'dual.example': ['rsa', 'ed'], 'rsa.example': ['rsa'] } },
    limits: { maxConnections: Math.max(1000, concurrency * 2), maxConnectionsPerIp: Math.max(50, concurrency * 2) },
    logging: { level: 'silent' },
    // Only the workers setup serves it (on the primary); port 0 keeps runs from clashing.
    metrics: { listen: '127.0.0.1:0' },
  };
}

async function makeKeys(): Promise<string> {
  const keysDir = await mkdtemp(path.join(os.tmpdir(), 'sello-bench-keys-'));
  const rsa = generateKey('rsa', 2048);
  const ed = generateKey('ed25519');
  await writeKey(keysDir, 'dual.example', 'rsa', rsa);
  await writeKey(keysDir, 'dual.example', 'ed', ed);
  await writeKey(keysDir, 'rsa.example', 'rsa', rsa);
  return keysDir;
}

const perMessage = (after: ChildUsage, before: ChildUsage, messages: number) => (after.cpuMicros - before.cpuMicros) / messages;

async function measure(setup: Setup, mode: LoadMode, size: number, message: Buffer, repeat: number, flags: Flags, keysDir: string): Promise<Run> {
  const profile = { cpuProfileDir: flags.cpuProfileDir };
  const sink = await Child.start('sink', './sink-process.ts', [], profile);
  // The process under test: sello (all its workers) or the proxy-shape baseline.
  let sello: Child | undefined;
  let load: LoadGenerator | PerConnectionLoad | undefined;
  try {
    if (setup.under === 'sello') {
      const args = [JSON.stringify(selloConfig(sink.port, keysDir, flags.concurrency)), 'filter', String(setup.workers ?? 1)];
      sello = await Child.start('sello', './sello-process.ts', args, profile);
    } else if (setup.under === 'proxy') {
      sello = await Child.start('proxy', './proxy-process.ts', [String(sink.port), String(flags.concurrency)], profile);
    }
    const port = sello?.port ?? sink.port;
    load = mode === 'session' ? await LoadGenerator.open(port, flags.concurrency) : new PerConnectionLoad(port, flags.concurrency);
    const envelope = { from: `alice@${setup.fromDomain}`, to: ['bob@example.net'] };
    const warm = flags.warmup > 0 ? await load.run(flags.warmup, envelope, message, { deadlineMs: runDeadlineMs }) : undefined;
    const [sinkBefore, selloBefore] = await Promise.all([sink.usage(), sello?.usage()]);
    const timed = await load.run(flags.messages, envelope, message, { minimumMs: flags.minimumSeconds * 1000, deadlineMs: runDeadlineMs });
    const [sinkAfter, selloAfter] = await Promise.all([sink.usage(), sello?.usage()]);

    // The sink must hold every accepted message, each with exactly the signatures expected.
    const delivered = (warm?.latenciesMs.length ?? 0) + timed.latenciesMs.length;
    const expectedSignatures = delivered * setup.signaturesPerMessage;
    const checks: string[] = [];
    if (sinkAfter.messages !== delivered) checks.push(`the sink holds ${sinkAfter.messages} messages, the client had ${delivered} accepted`);
    if (sinkAfter.signatures !== expectedSignatures) checks.push(`the sink found ${sinkAfter.signatures} DKIM-Signature fields, expected ${expectedSignatures}`);

    const sorted = Float64Array.from(timed.latenciesMs).sort();
    const count = timed.latenciesMs.length;
    return {
      setup: setup.id,
      mode,
      size,
      repeat,
      messages: count,
      messagesPerSecond: (count / timed.wallMs) * 1000,
      latencyMs: { p50: percentile(sorted, 0.5), p90: percentile(sorted, 0.9), p99: percentile(sorted, 0.99), max: sorted[count - 1] ?? Number.NaN },
      errors: (warm?.errors ?? 0) + timed.errors + checks.length,
      errorSamples: [...(warm?.errorSamples ?? []), ...timed.errorSamples, ...checks],
      cpuMicrosPerMessage: {
        client: timed.clientCpuMicros / timed.sent,
        ...(sello && selloBefore && selloAfter ? { underTest: perMessage(selloAfter, selloBefore, timed.sent) } : {}),
        sink: perMessage(sinkAfter, sinkBefore, timed.sent),
      },
      memory: {
        ...(sello && selloAfter ? { underTestPeakBytes: selloAfter.maxRssBytes, underTestStartBytes: sello.startUsage.rssBytes, underTestEndBytes: selloAfter.rssBytes } : {}),
        sinkPeakBytes: sinkAfter.maxRssBytes,
        sinkStartBytes: sink.startUsage.rssBytes,
      },
    };
  } finally {
    load?.close();
    await sello?.stop();
    await sink.stop();
  }
}

const usage = `usage: npm run bench -- [--messages N] [--warmup N] [--min-seconds S] [--concurrency C]
                       [--repeat R] [--sizes BYTES,BYTES] [--modes session,connection]
                       [--no-rsa-only] [--no-workers] [--no-memory | --memory-only] [--json] [--cpu-prof DIR]`;

async function main(): Promise<void> {
  if (process.argv.includes('--help')) {
    process.stdout.write(`${usage}\n`);
    return;
  }
  let flags: Flags;
  try {
    flags = parseFlags();
  } catch (error) {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n${usage}\n`);
    process.exitCode = 2;
    return;
  }
  const started = performance.now();
  const cpus = os.cpus();
  const machine = {
    cores: os.availableParallelism(),
    cpu: cpus[0]?.model.trim() ?? 'unknown',
    memoryBytes: os.totalmem(),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    loadAverageAtStart: os.loadavg(),
  };
  const setups = allSetups.filter((setup) => (flags.rsaOnly || setup.id !== 'a-rsa') && (flags.workers || setup.id !== 'a-workers'));
  const messages = new Map(flags.sizes.flatMap((size) => [...new Set(setups.map((setup) => setup.fromDomain))].map((domain) => [`${size}/${domain}`, buildMessage(size, domain)] as const)));
  const keysDir = await makeKeys();
  const runs: Run[] = [];
  const total = flags.repeat * flags.modes.length * flags.sizes.length * setups.length;
  let memory: MemoryReport | undefined;
  const measureSelloMemory = () => measureMemory((sinkPort) => selloConfig(sinkPort, keysDir, flags.concurrency), 'dual.example', (line) => process.stderr.write(`${line}\n`));
  try {
    if (flags.memoryOnly) {
      memory = await measureSelloMemory();
      process.stdout.write(flags.json ? `${JSON.stringify({ machine, memory }, null, 2)}\n` : `${formatMemory(memory)}\n`);
      if (memory.errors.length > 0) process.exitCode = 1;
      return;
    }
    for (let repeat = 1; repeat <= flags.repeat; repeat++) {
      for (const mode of flags.modes) for (const size of flags.sizes) {
        // Rotate the order each repeat, so no setup always runs first (cold machine) or last.
        const order = setups.map((_, index) => setups[(index + repeat - 1) % setups.length] as Setup);
        for (const setup of order) {
          const run = await measure(setup, mode, size, messages.get(`${size}/${setup.fromDomain}`) as Buffer, repeat, flags, keysDir);
          runs.push(run);
          process.stderr.write(
            `[${runs.length}/${total}] repeat ${repeat} ${mode} ${sizeLabel(size)} ${setup.id}: ${run.messagesPerSecond.toFixed(0)} msg/s, p50 ${run.latencyMs.p50.toFixed(2)} ms, p99 ${run.latencyMs.p99.toFixed(2)} ms` +
              `${run.errors ? `, ${run.errors} ERRORS: ${run.errorSamples.join(' | ')}` : ''}\n`,
          );
        }
      }
    }
    if (flags.memory) memory = await measureSelloMemory();
  } finally {
    await rm(keysDir, { recursive: true, force: true });
  }

  const summaries = flags.modes.flatMap((mode) => flags.sizes.flatMap((size) => setups.map((setup) => summarize(runs, setup.id, mode, size))));
  const report: Report = {
    machine,
    parameters: {
      messages: flags.messages,
      minimumSeconds: flags.minimumSeconds,
      warmup: flags.warmup,
      concurrency: flags.concurrency,
      repeat: flags.repeat,
      sizes: flags.sizes,
      modes: flags.modes,
      client:
        `nodemailer SMTPConnection (the client of its pooled transport), ${flags.concurrency} at once; session mode: each sends one message ` +
        'after another over its own connection; connection mode: a new connection per message, QUIT after it (PIPELINING of MAIL/RCPT/DATA, as offered)',
      latency: 'per message, from writing MAIL FROM (connection mode: from connecting) to reading the 250 after the final dot',
      sello: 'one filter listener on 127.0.0.1 (trusted loopback, sign: true), relay smtp:// to the sink without STARTTLS (relay.pool defaults), silent logger, own process (a-workers: a primary and its workers)',
    },
    setups,
    runs,
    summaries,
    ratios: flags.modes.flatMap((mode) => flags.sizes.flatMap((size) => ratios(summaries, mode, size, ratioPairs))),
    ...(memory ? { memory } : {}),
    durationSeconds: (performance.now() - started) / 1000,
  };
  process.stdout.write(flags.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatReport(report)}${memory ? formatMemory(memory) : ''}\n`);
  if (runs.some((run) => run.errors > 0) || (memory?.errors.length ?? 0) > 0) process.exitCode = 1;
}

await main();

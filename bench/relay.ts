// `npm run bench`: messages through sello to a downstream SMTP sink, against the sink alone, in
// one run. Setups: a = sello dual-signing (RSA-2048 + Ed25519), a-rsa = RSA-2048 only, b = sello
// relaying unsigned (From domain not in the signing table), c = the sink directly (baseline).
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
//        --no-rsa-only (skip setup a-rsa)  --json (the report as JSON on stdout)
//        --cpu-prof DIR (sink and sello write V8 CPU profiles there, for finding where time goes;
//        profiling slows them, so the numbers of such a run are not the benchmark's)

import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { generateKey, writeKey } from '../src/signing/keys.ts';
import { Child, type ChildUsage } from './child.ts';
import { LoadGenerator } from './load.ts';
import { buildMessage } from './messages.ts';
import { formatReport, percentile, ratios, sizeLabel, summarize, type Report, type Run, type Setup, type SetupId } from './report.ts';

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
      json: { type: 'boolean', default: false },
      'cpu-prof': { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  });
  const sizes = (values.sizes ?? '2048,102400').split(',').map((size) => integerFlag('sizes', size.trim(), 0, 512));
  return {
    messages: integerFlag('messages', values.messages, 2000, 1),
    warmup: integerFlag('warmup', values.warmup, 1000, 0),
    minimumSeconds: numberFlag('min-seconds', values['min-seconds'], 1),
    concurrency: integerFlag('concurrency', values.concurrency, 20, 1),
    repeat: integerFlag('repeat', values.repeat, 3, 1),
    sizes,
    rsaOnly: !values['no-rsa-only'],
    json: values.json,
    cpuProfileDir: values['cpu-prof'],
  };
}

type Flags = ReturnType<typeof parseFlags>;

const allSetups: Setup[] = [
  { id: 'c', label: 'sink directly, no sello (baseline)', viaSello: false, fromDomain: 'dual.example', signaturesPerMessage: 0 },
  { id: 'b', label: 'sello, signing off (From domain not in the signing table, relayed unsigned)', viaSello: true, fromDomain: 'unsigned.example', signaturesPerMessage: 0 },
  { id: 'a-rsa', label: 'sello, signing with RSA-2048 only', viaSello: true, fromDomain: 'rsa.example', signaturesPerMessage: 1 },
  { id: 'a', label: 'sello, dual signing RSA-2048 + Ed25519', viaSello: true, fromDomain: 'dual.example', signaturesPerMessage: 2 },
];

const ratioPairs: [SetupId, SetupId][] = [
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

async function measure(setup: Setup, size: number, message: Buffer, repeat: number, flags: Flags, keysDir: string): Promise<Run> {
  const profile = { cpuProfileDir: flags.cpuProfileDir };
  const sink = await Child.start('sink', './sink-process.ts', [], profile);
  let sello: Child | undefined;
  let load: LoadGenerator | undefined;
  try {
    if (setup.viaSello) sello = await Child.start('sello', './sello-process.ts', [JSON.stringify(selloConfig(sink.port, keysDir, flags.concurrency)), 'filter'], profile);
    load = await LoadGenerator.open(sello?.port ?? sink.port, flags.concurrency);
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
      size,
      repeat,
      messages: count,
      messagesPerSecond: (count / timed.wallMs) * 1000,
      latencyMs: { p50: percentile(sorted, 0.5), p90: percentile(sorted, 0.9), p99: percentile(sorted, 0.99), max: sorted[count - 1] ?? Number.NaN },
      errors: (warm?.errors ?? 0) + timed.errors + checks.length,
      errorSamples: [...(warm?.errorSamples ?? []), ...timed.errorSamples, ...checks],
      cpuMicrosPerMessage: {
        client: timed.clientCpuMicros / timed.sent,
        ...(sello && selloBefore && selloAfter ? { sello: perMessage(selloAfter, selloBefore, timed.sent) } : {}),
        sink: perMessage(sinkAfter, sinkBefore, timed.sent),
      },
      memory: {
        ...(sello && selloAfter ? { selloPeakBytes: selloAfter.maxRssBytes, selloStartBytes: sello.startUsage.rssBytes } : {}),
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
                       [--repeat R] [--sizes BYTES,BYTES] [--no-rsa-only] [--json] [--cpu-prof DIR]`;

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
  const setups = allSetups.filter((setup) => flags.rsaOnly || setup.id !== 'a-rsa');
  const messages = new Map(flags.sizes.flatMap((size) => [...new Set(setups.map((setup) => setup.fromDomain))].map((domain) => [`${size}/${domain}`, buildMessage(size, domain)] as const)));
  const keysDir = await makeKeys();
  const runs: Run[] = [];
  const total = flags.repeat * flags.sizes.length * setups.length;
  try {
    for (let repeat = 1; repeat <= flags.repeat; repeat++) {
      for (const size of flags.sizes) {
        // Rotate the order each repeat, so no setup always runs first (cold machine) or last.
        const order = setups.map((_, index) => setups[(index + repeat - 1) % setups.length] as Setup);
        for (const setup of order) {
          const run = await measure(setup, size, messages.get(`${size}/${setup.fromDomain}`) as Buffer, repeat, flags, keysDir);
          runs.push(run);
          process.stderr.write(
            `[${runs.length}/${total}] repeat ${repeat} ${sizeLabel(size)} ${setup.id}: ${run.messagesPerSecond.toFixed(0)} msg/s, p50 ${run.latencyMs.p50.toFixed(2)} ms, p99 ${run.latencyMs.p99.toFixed(2)} ms` +
              `${run.errors ? `, ${run.errors} ERRORS: ${run.errorSamples.join(' | ')}` : ''}\n`,
          );
        }
      }
    }
  } finally {
    await rm(keysDir, { recursive: true, force: true });
  }

  const summaries = flags.sizes.flatMap((size) => setups.map((setup) => summarize(runs, setup.id, size)));
  const report: Report = {
    machine,
    parameters: {
      messages: flags.messages,
      minimumSeconds: flags.minimumSeconds,
      warmup: flags.warmup,
      concurrency: flags.concurrency,
      repeat: flags.repeat,
      sizes: flags.sizes,
      client:
        `nodemailer SMTPConnection (the client of its pooled transport), ${flags.concurrency} persistent sessions, ` +
        'each sending one message after another over its own connection (PIPELINING of MAIL/RCPT/DATA, as offered)',
      latency: 'per message, from writing MAIL FROM to reading the 250 after the final dot',
      sello: 'one filter listener on 127.0.0.1 (trusted loopback, sign: true), relay smtp:// to the sink without STARTTLS, silent logger, own process',
    },
    setups,
    runs,
    summaries,
    ratios: flags.sizes.flatMap((size) => ratios(summaries, size, ratioPairs)),
    durationSeconds: (performance.now() - started) / 1000,
  };
  process.stdout.write(flags.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatReport(report)}\n`);
  if (runs.some((run) => run.errors > 0)) process.exitCode = 1;
}

await main();

// The benchmark's numbers and how they are shown: percentiles of one run, medians over repeats,
// ratios between setups (every sello setup against the proxy-shape baseline p, per load mode),
// and the text table (or JSON) printed at the end.
// Owns: statistics and formatting. Must not: run anything or decide what is measured.

export type SetupId = 'c' | 'p' | 'b' | 'a-rsa' | 'a' | 'a-workers';

/** session: persistent client connections; connection: one message per connection (load.ts). */
export type LoadMode = 'session' | 'connection';
export const loadModes: readonly LoadMode[] = ['session', 'connection'];

export interface Setup {
  id: SetupId;
  label: string;
  /** What the client talks to: the sink itself, sello, or the proxy-shape baseline (proxy-process.ts). */
  under: 'sink' | 'sello' | 'proxy';
  /** sello only: worker processes (`workers`); 1 = sello's single-process mode. */
  workers?: number;
  fromDomain: string;
  /** DKIM-Signature fields the sink must find on every message. */
  signaturesPerMessage: number;
}

/** One measurement: one setup, one size, one repeat, in fresh processes. */
export interface Run {
  setup: SetupId;
  mode: LoadMode;
  size: number;
  repeat: number;
  messages: number;
  messagesPerSecond: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number };
  errors: number;
  errorSamples: string[];
  /** CPU time per timed message, µs, of each process (warm-up excluded); underTest: sello or the proxy, all its processes. */
  cpuMicrosPerMessage: { client: number; underTest?: number; sink: number };
  /**
   * Of the process under test (sello, all workers summed, or the proxy): RSS right after
   * start-up, peak RSS over its life (start-up, warm-up, run), RSS after the timed run.
   */
  memory: { underTestPeakBytes?: number; underTestStartBytes?: number; underTestEndBytes?: number; sinkPeakBytes: number; sinkStartBytes: number };
}

export interface Summary {
  setup: SetupId;
  mode: LoadMode;
  size: number;
  /** Medians over the repeats, field by field. */
  messages: number;
  messagesPerSecond: number;
  /** (max − min) / median of messages/s over the repeats. */
  throughputSpread: number;
  latencyMs: { p50: number; p90: number; p99: number };
  cpuMicrosPerMessage: { client: number; underTest?: number; sink: number };
  memory: { underTestPeakBytes?: number; underTestStartBytes?: number; underTestEndBytes?: number; sinkPeakBytes: number };
  errors: number;
}

export interface Ratio {
  mode: LoadMode;
  size: number;
  /** e.g. "a/c": numerator setup / denominator setup. */
  name: string;
  /** messages/s ratio: < 1 means the numerator setup is slower. */
  throughput: number;
  /** latency ratios: > 1 means the numerator setup is slower. */
  p50: number;
  p99: number;
  /** CPU time per message of the process under test, ratio (the least noisy measure). */
  cpu?: number;
  /** The same as a difference: ms per message more than the denominator's process. */
  cpuDeltaMs?: number;
}

export interface Report {
  machine: { cores: number; cpu: string; memoryBytes: number; os: string; node: string; loadAverageAtStart: number[] };
  parameters: {
    messages: number;
    minimumSeconds: number;
    warmup: number;
    concurrency: number;
    repeat: number;
    sizes: number[];
    modes: LoadMode[];
    client: string;
    latency: string;
    sello: string;
  };
  setups: Setup[];
  runs: Run[];
  summaries: Summary[];
  ratios: Ratio[];
  durationSeconds: number;
}

/** Nearest-rank percentile of sorted values. */
export function percentile(sorted: Float64Array, fraction: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(fraction * sorted.length) - 1))] as number;
}

export function median(values: readonly number[]): number {
  const sorted = values.filter((value) => Number.isFinite(value)).sort((x, y) => x - y);
  if (sorted.length === 0) return Number.NaN;
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? (sorted[middle] as number) : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

function optionalMedian(values: readonly (number | undefined)[]): number | undefined {
  const present = values.filter((value): value is number => value !== undefined);
  return present.length ? median(present) : undefined;
}

export function summarize(runs: readonly Run[], setup: SetupId, mode: LoadMode, size: number): Summary {
  const own = runs.filter((run) => run.setup === setup && run.mode === mode && run.size === size);
  const throughput = own.map((run) => run.messagesPerSecond);
  const middle = median(throughput);
  const underTestCpu = optionalMedian(own.map((run) => run.cpuMicrosPerMessage.underTest));
  const underTestPeak = optionalMedian(own.map((run) => run.memory.underTestPeakBytes));
  const underTestStart = optionalMedian(own.map((run) => run.memory.underTestStartBytes));
  const underTestEnd = optionalMedian(own.map((run) => run.memory.underTestEndBytes));
  return {
    setup,
    mode,
    size,
    messages: median(own.map((run) => run.messages)),
    messagesPerSecond: middle,
    throughputSpread: (Math.max(...throughput) - Math.min(...throughput)) / middle,
    latencyMs: {
      p50: median(own.map((run) => run.latencyMs.p50)),
      p90: median(own.map((run) => run.latencyMs.p90)),
      p99: median(own.map((run) => run.latencyMs.p99)),
    },
    cpuMicrosPerMessage: {
      client: median(own.map((run) => run.cpuMicrosPerMessage.client)),
      ...(underTestCpu === undefined ? {} : { underTest: underTestCpu }),
      sink: median(own.map((run) => run.cpuMicrosPerMessage.sink)),
    },
    memory: {
      ...(underTestPeak === undefined ? {} : { underTestPeakBytes: underTestPeak }),
      ...(underTestStart === undefined ? {} : { underTestStartBytes: underTestStart }),
      ...(underTestEnd === undefined ? {} : { underTestEndBytes: underTestEnd }),
      sinkPeakBytes: median(own.map((run) => run.memory.sinkPeakBytes)),
    },
    errors: own.reduce((sum, run) => sum + run.errors, 0),
  };
}

/** Ratios of medians (same run, setups interleaved), for each pair that exists. */
export function ratios(summaries: readonly Summary[], mode: LoadMode, size: number, pairs: readonly [SetupId, SetupId][]): Ratio[] {
  const find = (setup: SetupId) => summaries.find((summary) => summary.setup === setup && summary.mode === mode && summary.size === size);
  return pairs.flatMap(([top, bottom]) => {
    const numerator = find(top);
    const denominator = find(bottom);
    if (!numerator || !denominator) return [];
    const topCpu = numerator.cpuMicrosPerMessage.underTest;
    const bottomCpu = denominator.cpuMicrosPerMessage.underTest;
    return [{
      mode,
      size,
      name: `${top}/${bottom}`,
      throughput: numerator.messagesPerSecond / denominator.messagesPerSecond,
      p50: numerator.latencyMs.p50 / denominator.latencyMs.p50,
      p99: numerator.latencyMs.p99 / denominator.latencyMs.p99,
      ...(topCpu !== undefined && bottomCpu !== undefined ? { cpu: topCpu / bottomCpu, cpuDeltaMs: (topCpu - bottomCpu) / 1000 } : {}),
    }];
  });
}

const mib = (bytes: number | undefined) => (bytes === undefined ? '-' : (bytes / 1048576).toFixed(0));
const fixed = (value: number | undefined, digits: number) => (value === undefined || !Number.isFinite(value) ? '-' : value.toFixed(digits));
export const sizeLabel = (bytes: number) => (bytes % 1024 === 0 ? `${bytes / 1024} KiB` : `${bytes} B`);

function table(header: string[], rows: string[][], leftColumns = 1): string {
  const widths = header.map((cell, index) => Math.max(cell.length, ...rows.map((row) => (row[index] ?? '').length)));
  const line = (cells: string[]) =>
    cells.map((cell, index) => (index < leftColumns ? cell.padEnd(widths[index] ?? 0) : cell.padStart(widths[index] ?? 0))).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

export function formatReport(report: Report): string {
  const { machine, parameters } = report;
  const out: string[] = [];
  out.push('sello relay benchmark');
  out.push(`machine     ${machine.cores} cores (${machine.cpu}), ${(machine.memoryBytes / 2 ** 30).toFixed(1)} GiB, ${machine.os}, Node ${machine.node}, load average at start ${machine.loadAverageAtStart.map((load) => load.toFixed(2)).join(' ')}`);
  out.push(`parameters  ${parameters.messages} timed messages per run (more if they take under ${parameters.minimumSeconds} s) after ${parameters.warmup} warm-up, concurrency ${parameters.concurrency}, ${parameters.repeat} repeats (setups interleaved, fresh processes per run), sizes ${parameters.sizes.join(', ')} bytes, modes ${parameters.modes.join(', ')}`);
  out.push(`client      ${parameters.client}`);
  out.push(`latency     ${parameters.latency}`);
  out.push(`sello       ${parameters.sello}`);
  out.push('setups      ' + report.setups.map((setup) => `${setup.id}: ${setup.label}`).join('\n            '));
  out.push(`all figures are medians over the ${parameters.repeat} repeats; spread = (max - min) / median of msg/s`);

  for (const mode of parameters.modes) for (const size of parameters.sizes) {
    out.push('');
    out.push(`── ${sizeLabel(size)} messages (${size} bytes), ${mode === 'connection' ? 'one message per connection' : 'persistent sessions'} ──`);
    const rows = report.setups.map((setup) => {
      const summary = report.summaries.find((entry) => entry.setup === setup.id && entry.mode === mode && entry.size === size);
      if (!summary) return [setup.id];
      return [
        setup.id,
        fixed(summary.messages, 0),
        fixed(summary.messagesPerSecond, 0),
        `${fixed(summary.throughputSpread * 100, 0)}%`,
        fixed(summary.latencyMs.p50, 2),
        fixed(summary.latencyMs.p90, 2),
        fixed(summary.latencyMs.p99, 2),
        summary.memory.underTestPeakBytes === undefined ? '-' : `${mib(summary.memory.underTestStartBytes)} → ${mib(summary.memory.underTestPeakBytes)} → ${mib(summary.memory.underTestEndBytes)}`,
        mib(summary.memory.sinkPeakBytes),
        fixed(summary.cpuMicrosPerMessage.client, 0),
        fixed(summary.cpuMicrosPerMessage.underTest, 0),
        fixed(summary.cpuMicrosPerMessage.sink, 0),
        String(summary.errors),
      ];
    });
    out.push(
      table(
        ['setup', 'timed', 'msg/s', 'spread', 'p50 ms', 'p90 ms', 'p99 ms', 'under test RSS MiB start → peak → after', 'sink peak MiB', 'CPU µs/msg client', 'under test', 'sink', 'errors'],
        rows,
      ),
    );
    const sizeRatios = report.ratios.filter((ratio) => ratio.mode === mode && ratio.size === size);
    if (sizeRatios.length) {
      out.push('');
      out.push(
        table(
          ['ratio', 'msg/s (<1 slower)', 'p50 latency (>1 slower)', 'p99 latency', 'CPU µs/msg under test', 'CPU ms/msg more'],
          sizeRatios.map((ratio) => [ratio.name, fixed(ratio.throughput, 2), fixed(ratio.p50, 2), fixed(ratio.p99, 2), fixed(ratio.cpu, 2), fixed(ratio.cpuDeltaMs, 2)]),
        ),
      );
    }
  }
  const errors = report.runs.filter((run) => run.errors > 0);
  if (errors.length) {
    out.push('');
    out.push('ERRORS (these runs are not trustworthy):');
    for (const run of errors) out.push(`  ${run.setup} ${run.mode} ${sizeLabel(run.size)} repeat ${run.repeat}: ${run.errors} failed: ${run.errorSamples.join(' | ')}`);
  }
  out.push('');
  out.push(`took ${report.durationSeconds.toFixed(0)} s`);
  return out.join('\n');
}

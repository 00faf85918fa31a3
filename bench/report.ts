// The benchmark's numbers and how they are shown: percentiles of one run, medians over repeats,
// ratios between setups, and the text table (or JSON) printed at the end.
// Owns: statistics and formatting. Must not: run anything or decide what is measured.

export type SetupId = 'c' | 'b' | 'a-rsa' | 'a';

export interface Setup {
  id: SetupId;
  label: string;
  /** false: the client talks to the sink directly (the baseline). */
  viaSello: boolean;
  fromDomain: string;
  /** DKIM-Signature fields the sink must find on every message. */
  signaturesPerMessage: number;
}

/** One measurement: one setup, one size, one repeat, in fresh processes. */
export interface Run {
  setup: SetupId;
  size: number;
  repeat: number;
  messages: number;
  messagesPerSecond: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number };
  errors: number;
  errorSamples: string[];
  /** CPU time per timed message, µs, of each process (warm-up excluded). */
  cpuMicrosPerMessage: { client: number; sello?: number; sink: number };
  /** Peak RSS over the process's life (start-up, warm-up, run), and RSS right after start-up. */
  memory: { selloPeakBytes?: number; selloStartBytes?: number; sinkPeakBytes: number; sinkStartBytes: number };
}

export interface Summary {
  setup: SetupId;
  size: number;
  /** Medians over the repeats, field by field. */
  messages: number;
  messagesPerSecond: number;
  /** (max − min) / median of messages/s over the repeats. */
  throughputSpread: number;
  latencyMs: { p50: number; p90: number; p99: number };
  cpuMicrosPerMessage: { client: number; sello?: number; sink: number };
  memory: { selloPeakBytes?: number; selloStartBytes?: number; sinkPeakBytes: number };
  errors: number;
}

export interface Ratio {
  size: number;
  /** e.g. "a/c": numerator setup / denominator setup. */
  name: string;
  /** messages/s ratio: < 1 means the numerator setup is slower. */
  throughput: number;
  /** latency ratios: > 1 means the numerator setup is slower. */
  p50: number;
  p99: number;
  /** sello CPU time per message ratio, when both setups run sello (the least noisy measure). */
  selloCpu?: number;
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

export function summarize(runs: readonly Run[], setup: SetupId, size: number): Summary {
  const own = runs.filter((run) => run.setup === setup && run.size === size);
  const throughput = own.map((run) => run.messagesPerSecond);
  const middle = median(throughput);
  const selloCpu = optionalMedian(own.map((run) => run.cpuMicrosPerMessage.sello));
  const selloPeak = optionalMedian(own.map((run) => run.memory.selloPeakBytes));
  const selloStart = optionalMedian(own.map((run) => run.memory.selloStartBytes));
  return {
    setup,
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
      ...(selloCpu === undefined ? {} : { sello: selloCpu }),
      sink: median(own.map((run) => run.cpuMicrosPerMessage.sink)),
    },
    memory: {
      ...(selloPeak === undefined ? {} : { selloPeakBytes: selloPeak }),
      ...(selloStart === undefined ? {} : { selloStartBytes: selloStart }),
      sinkPeakBytes: median(own.map((run) => run.memory.sinkPeakBytes)),
    },
    errors: own.reduce((sum, run) => sum + run.errors, 0),
  };
}

/** Ratios of medians (same run, setups interleaved), for each pair that exists. */
export function ratios(summaries: readonly Summary[], size: number, pairs: readonly [SetupId, SetupId][]): Ratio[] {
  const find = (setup: SetupId) => summaries.find((summary) => summary.setup === setup && summary.size === size);
  return pairs.flatMap(([top, bottom]) => {
    const numerator = find(top);
    const denominator = find(bottom);
    if (!numerator || !denominator) return [];
    const topCpu = numerator.cpuMicrosPerMessage.sello;
    const bottomCpu = denominator.cpuMicrosPerMessage.sello;
    return [{
      size,
      name: `${top}/${bottom}`,
      throughput: numerator.messagesPerSecond / denominator.messagesPerSecond,
      p50: numerator.latencyMs.p50 / denominator.latencyMs.p50,
      p99: numerator.latencyMs.p99 / denominator.latencyMs.p99,
      ...(topCpu !== undefined && bottomCpu !== undefined ? { selloCpu: topCpu / bottomCpu } : {}),
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
  out.push(`parameters  ${parameters.messages} timed messages per run (more if they take under ${parameters.minimumSeconds} s) after ${parameters.warmup} warm-up, concurrency ${parameters.concurrency}, ${parameters.repeat} repeats (setups interleaved, fresh processes per run), sizes ${parameters.sizes.join(', ')} bytes`);
  out.push(`client      ${parameters.client}`);
  out.push(`latency     ${parameters.latency}`);
  out.push(`sello       ${parameters.sello}`);
  out.push('setups      ' + report.setups.map((setup) => `${setup.id}: ${setup.label}`).join('\n            '));
  out.push(`all figures are medians over the ${parameters.repeat} repeats; spread = (max - min) / median of msg/s`);

  for (const size of parameters.sizes) {
    out.push('');
    out.push(`── ${sizeLabel(size)} messages (${size} bytes) ──`);
    const rows = report.setups.map((setup) => {
      const summary = report.summaries.find((entry) => entry.setup === setup.id && entry.size === size);
      if (!summary) return [setup.id];
      return [
        setup.id,
        fixed(summary.messages, 0),
        fixed(summary.messagesPerSecond, 0),
        `${fixed(summary.throughputSpread * 100, 0)}%`,
        fixed(summary.latencyMs.p50, 2),
        fixed(summary.latencyMs.p90, 2),
        fixed(summary.latencyMs.p99, 2),
        summary.memory.selloPeakBytes === undefined ? '-' : `${mib(summary.memory.selloStartBytes)} → ${mib(summary.memory.selloPeakBytes)}`,
        mib(summary.memory.sinkPeakBytes),
        fixed(summary.cpuMicrosPerMessage.client, 0),
        fixed(summary.cpuMicrosPerMessage.sello, 0),
        fixed(summary.cpuMicrosPerMessage.sink, 0),
        String(summary.errors),
      ];
    });
    out.push(
      table(
        ['setup', 'timed', 'msg/s', 'spread', 'p50 ms', 'p90 ms', 'p99 ms', 'sello RSS MiB start → peak', 'sink peak MiB', 'CPU µs/msg client', 'sello', 'sink', 'errors'],
        rows,
      ),
    );
    const sizeRatios = report.ratios.filter((ratio) => ratio.size === size);
    if (sizeRatios.length) {
      out.push('');
      out.push(
        table(
          ['ratio', 'msg/s (<1 slower)', 'p50 latency (>1 slower)', 'p99 latency', 'sello CPU µs/msg'],
          sizeRatios.map((ratio) => [ratio.name, fixed(ratio.throughput, 2), fixed(ratio.p50, 2), fixed(ratio.p99, 2), fixed(ratio.selloCpu, 2)]),
        ),
      );
    }
  }
  const errors = report.runs.filter((run) => run.errors > 0);
  if (errors.length) {
    out.push('');
    out.push('ERRORS (these runs are not trustworthy):');
    for (const run of errors) out.push(`  ${run.setup} ${sizeLabel(run.size)} repeat ${run.repeat}: ${run.errors} failed: ${run.errorSamples.join(' | ')}`);
  }
  out.push('');
  out.push(`took ${report.durationSeconds.toFixed(0)} s`);
  return out.join('\n');
}

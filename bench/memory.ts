// The memory phase of `npm run bench` (issue 9's memory targets): sello in its own process as
// shipped (default V8 flags, `workers: 1`, dual signing), the bench sink behind it, and its
// resident set read from /proc/<pid>/status by this process. Peaks are VmHWM after resetting it
// (writing 5 to /proc/<pid>/clear_refs, proc(5)) just before the measured messages.
// In order, on one sello process:
// 1. idle before: the resident set after start-up, 200 small messages and one spilled 8 MiB
//    message, then 1 s of quiet (a running server's idle, not a cold one's);
// 2. one 50 MiB message relayed; 3. four at once; 4. a 100 MiB message against the 60 MiB limit
//    (552 5.3.4): the peak over idle of each;
// 5. a burst (20 clients, one message per connection, 2000 of 2 KiB then 1000 of 100 KiB), then
//    10 s of quiet (sello gives memory back after 5 s without message traffic): idle after.
// Owns: that schedule and the memory table (the big-message sender and the /proc readings are
// the memory test's, test/helpers/big-message.ts). Must not: change sello's flags or config beyond the limit the big messages need.

import { parseConfig } from '../src/config/load.ts';
import { growthDuring, resetPeak, residentBytes, sendStreamed } from '../test/helpers/big-message.ts';
import { Child } from './child.ts';
import { PerConnectionLoad } from './load.ts';
import { buildMessage } from './messages.ts';

const MiB = 1024 * 1024;
const idleRatioBound = 1.2;
/** Quiet after the burst before idle after is read. */
const quietSeconds = 10;

export interface MemoryReport {
  /** data.spillThreshold of the sello measured: what an oversized message may cost. */
  spillThresholdBytes: number;
  startupBytes: number;
  idleBeforeBytes: number;
  oneBigGrowthBytes: number;
  fourBigGrowthBytes: number;
  oversizedGrowthBytes: number;
  burstPeakBytes: number;
  idleAfterBytes: number;
  errors: string[];
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs the memory phase against a fresh sink and sello; `config(sinkPort)` is the bench's sello config. */
export async function measureMemory(config: (sinkPort: number) => object, fromDomain: string, progress: (line: string) => void): Promise<MemoryReport> {
  const sink = await Child.start('sink', './sink-process.ts', []);
  const errors: string[] = [];
  let sello: Child | undefined;
  try {
    const base = config(sink.port) as { limits?: object };
    const selloConfig = { ...base, limits: { ...base.limits, maxMessageSize: '60MiB' } };
    const spillThresholdBytes = parseConfig(selloConfig).data.spillThreshold;
    sello = await Child.start('sello', './sello-process.ts', [JSON.stringify(selloConfig), 'filter', '1']);
    const pid = sello.pid;
    const from = `alice@${fromDomain}`;
    const envelope = { from, to: ['bob@example.net'] };
    const expect = (what: string, reply: string, pattern: RegExp) => {
      if (!pattern.test(reply)) errors.push(`${what}: ${reply}`);
    };
    const startupBytes = sello.startUsage.rssBytes;

    const warm = new PerConnectionLoad(sello.port, 20);
    const warmed = await warm.run(200, envelope, buildMessage(2048, fromDomain), { deadlineMs: 120_000 });
    warm.close();
    if (warmed.errors) errors.push(`warm-up: ${warmed.errorSamples.join(' | ')}`);
    expect('warm-up 8 MiB', await sendStreamed(sello.port, 8 * MiB, from), /^250 /);
    await pause(1000);
    const idleBeforeBytes = await residentBytes(pid, 'VmRSS');
    progress(`memory: idle ${(idleBeforeBytes / MiB).toFixed(1)} MiB; one 50 MiB message`);

    const oneBigGrowthBytes = await growthDuring(pid, async () => expect('50 MiB', await sendStreamed(sello!.port, 50 * MiB, from), /^250 /));
    await pause(500);
    progress('memory: four 50 MiB messages at once');
    const fourBigGrowthBytes = await growthDuring(pid, async () => {
      for (const reply of await Promise.all([1, 2, 3, 4].map(() => sendStreamed(sello!.port, 50 * MiB, from)))) expect('four 50 MiB', reply, /^250 /);
    });
    await pause(500);
    progress('memory: a 100 MiB message against the 60 MiB limit');
    const oversizedGrowthBytes = await growthDuring(pid, async () => expect('100 MiB over the limit', await sendStreamed(sello!.port, 100 * MiB, from), /^552 5\.3\.4 /));

    progress('memory: a burst of 3000 messages, then quiet');
    await pause(1000);
    await resetPeak(pid);
    for (const [count, size] of [
      [2000, 2048],
      [1000, 100 * 1024],
    ] as const) {
      const burst = new PerConnectionLoad(sello.port, 20);
      const result = await burst.run(count, envelope, buildMessage(size, fromDomain), { deadlineMs: 300_000 });
      burst.close();
      if (result.errors) errors.push(`burst: ${result.errorSamples.join(' | ')}`);
    }
    const burstPeakBytes = await residentBytes(pid, 'VmHWM');
    await pause(quietSeconds * 1000);
    const idleAfterBytes = await residentBytes(pid, 'VmRSS');
    return {
      spillThresholdBytes,
      startupBytes,
      idleBeforeBytes,
      oneBigGrowthBytes,
      fourBigGrowthBytes,
      oversizedGrowthBytes,
      burstPeakBytes,
      idleAfterBytes,
      errors,
    };
  } finally {
    await sello?.stop();
    await sink.stop();
  }
}

export function formatMemory(memory: MemoryReport): string {
  const mib = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`;
  const verdict = (met: boolean) => (met ? 'met' : 'NOT MET');
  const ratio = memory.idleAfterBytes / memory.idleBeforeBytes;
  const rows: [string, string, string, string][] = [
    ['one 50 MiB message, relayed and signed: peak over idle', mib(memory.oneBigGrowthBytes), '≤ 8 MiB', verdict(memory.oneBigGrowthBytes <= 8 * MiB)],
    ['four 50 MiB messages at once: peak over idle', mib(memory.fourBigGrowthBytes), '≤ 32 MiB', verdict(memory.fourBigGrowthBytes <= 32 * MiB)],
    ['100 MiB against the 60 MiB limit (552 5.3.4): peak over idle', mib(memory.oversizedGrowthBytes), `≤ one spill threshold (${mib(memory.spillThresholdBytes)})`, verdict(memory.oversizedGrowthBytes <= memory.spillThresholdBytes)],
    [
      `idle ${quietSeconds} s after a burst of 3000 messages (peak ${mib(memory.burstPeakBytes)})`,
      `${mib(memory.idleAfterBytes)} = ${ratio.toFixed(2)} × idle before (${(memory.idleAfterBytes / memory.startupBytes).toFixed(2)} × start-up)`,
      '≤ 1.2 ×',
      verdict(ratio <= idleRatioBound),
    ],
  ];
  const widths = [0, 1, 2].map((column) => Math.max(...rows.map((row) => row[column]!.length)));
  const lines = [
    '',
    `Memory (sello as shipped, workers: 1; resident set at start-up ${mib(memory.startupBytes)}, idle before ${mib(memory.idleBeforeBytes)}):`,
    ...rows.map((row) => `  ${row[0].padEnd(widths[0]!)}  ${row[1].padEnd(widths[1]!)}  ${row[2].padEnd(widths[2]!)}  ${row[3]}`),
    ...memory.errors.map((error) => `  ERROR: ${error}`),
  ];
  return lines.join('\n');
}

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
// Owns: that schedule, a raw SMTP sender that streams a big message with backpressure, the
// memory table. Must not: change sello's flags or config beyond the limit the big messages need.

import { readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { Child } from './child.ts';
import { PerConnectionLoad } from './load.ts';
import { buildMessage } from './messages.ts';

const MiB = 1024 * 1024;
/** data.spillThreshold's default: an oversized message may cost this much. */
const spillThreshold = 2 * MiB;
const idleRatioBound = 1.2;
/** Quiet after the burst before idle after is read. */
const quietSeconds = 10;

export interface MemoryReport {
  startupBytes: number;
  idleBeforeBytes: number;
  oneBigGrowthBytes: number;
  fourBigGrowthBytes: number;
  oversizedGrowthBytes: number;
  burstPeakBytes: number;
  idleAfterBytes: number;
  errors: string[];
}

async function status(pid: number, field: 'VmRSS' | 'VmHWM'): Promise<number> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8');
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
  if (!match) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(match[1]) * 1024;
}

/** The peak resident set while `work` runs, less the resident set before it. */
async function growthDuring(pid: number, work: () => Promise<void>): Promise<number> {
  const before = await status(pid, 'VmRSS');
  await writeFile(`/proc/${pid}/clear_refs`, '5');
  await work();
  return (await status(pid, 'VmHWM')) - before;
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One message of `size` octets in 1000-octet lines, streamed with backpressure; the reply to its final dot. */
async function sendBig(port: number, from: string, size: number): Promise<string> {
  const socket = net.connect({ port, host: '127.0.0.1' });
  socket.setEncoding('latin1');
  let received = '';
  let wake: (() => void) | undefined;
  socket.on('data', (text: string) => {
    received += text;
    wake?.();
  });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('error', () => undefined);
  const reply = async (): Promise<string> => {
    for (;;) {
      const end = /^\d{3} [^\r\n]*\r\n/m.exec(received);
      if (end) {
        const text = received.slice(0, end.index + end[0].length - 2);
        received = received.slice(end.index + end[0].length);
        return text.split('\r\n').at(-1) as string;
      }
      const woken = new Promise<void>((resolve) => (wake = resolve));
      await Promise.race([woken, closed]);
      if (socket.destroyed && !/^\d{3} /m.test(received)) throw new Error(`connection closed; read ${JSON.stringify(received.slice(0, 200))}`);
    }
  };
  const write = async (data: Buffer | string) => {
    if (!socket.write(data)) await new Promise((resolve) => socket.once('drain', resolve));
  };
  try {
    await reply(); // greeting
    for (const command of ['EHLO memory.bench.test', `MAIL FROM:<${from}>`, 'RCPT TO:<bob@example.net>', 'DATA']) {
      await write(`${command}\r\n`);
      const answer = await reply();
      if (!/^(250|354)/.test(answer)) throw new Error(`${command}: ${answer}`);
    }
    const header = Buffer.from(`From: ${from}\r\nTo: bob@example.net\r\nSubject: big\r\n\r\n`);
    await write(header);
    const block = Buffer.from(`${'m'.repeat(998)}\r\n`.repeat(64));
    for (let sent = header.length; sent < size; sent += block.length) await write(block);
    await write('.\r\n');
    const answer = await reply();
    await write('QUIT\r\n');
    return answer;
  } finally {
    socket.end();
    await Promise.race([closed, pause(2000)]);
    socket.destroy();
  }
}

/** Runs the memory phase against a fresh sink and sello; `config(sinkPort)` is the bench's sello config. */
export async function measureMemory(config: (sinkPort: number) => object, fromDomain: string, progress: (line: string) => void): Promise<MemoryReport> {
  const sink = await Child.start('sink', './sink-process.ts', []);
  const errors: string[] = [];
  let sello: Child | undefined;
  try {
    const selloConfig = { ...config(sink.port), limits: { ...(config(sink.port) as { limits?: object }).limits, maxMessageSize: '60MiB' } };
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
    expect('warm-up 8 MiB', await sendBig(sello.port, from, 8 * MiB), /^250 /);
    await pause(1000);
    const idleBeforeBytes = await status(pid, 'VmRSS');
    progress(`memory: idle ${(idleBeforeBytes / MiB).toFixed(1)} MiB; one 50 MiB message`);

    const oneBigGrowthBytes = await growthDuring(pid, async () => expect('50 MiB', await sendBig(sello!.port, from, 50 * MiB), /^250 /));
    await pause(500);
    progress('memory: four 50 MiB messages at once');
    const fourBigGrowthBytes = await growthDuring(pid, async () => {
      for (const reply of await Promise.all([1, 2, 3, 4].map(() => sendBig(sello!.port, from, 50 * MiB)))) expect('four 50 MiB', reply, /^250 /);
    });
    await pause(500);
    progress('memory: a 100 MiB message against the 60 MiB limit');
    const oversizedGrowthBytes = await growthDuring(pid, async () => expect('100 MiB over the limit', await sendBig(sello!.port, from, 100 * MiB), /^552 5\.3\.4 /));

    progress('memory: a burst of 3000 messages, then quiet');
    await pause(1000);
    await writeFile(`/proc/${pid}/clear_refs`, '5');
    for (const [count, size] of [
      [2000, 2048],
      [1000, 100 * 1024],
    ] as const) {
      const burst = new PerConnectionLoad(sello.port, 20);
      const result = await burst.run(count, envelope, buildMessage(size, fromDomain), { deadlineMs: 300_000 });
      burst.close();
      if (result.errors) errors.push(`burst: ${result.errorSamples.join(' | ')}`);
    }
    const burstPeakBytes = await status(pid, 'VmHWM');
    await pause(quietSeconds * 1000);
    const idleAfterBytes = await status(pid, 'VmRSS');
    return {
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
    ['100 MiB against the 60 MiB limit (552 5.3.4): peak over idle', mib(memory.oversizedGrowthBytes), `≤ one spill threshold (${mib(spillThreshold)})`, verdict(memory.oversizedGrowthBytes <= spillThreshold)],
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

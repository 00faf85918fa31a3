// What the memory test (test/component/streaming-memory.test.ts) and the bench's memory phase
// (bench/memory.ts) share: a big message streamed over SMTP with backpressure, and a process's
// resident set read from /proc (Linux), with its peak while some work runs.
// Owns: those two measurements. Must not: decide bounds or targets (the callers do).

import { readFile, writeFile } from 'node:fs/promises';
import { SmtpDialog } from './smtp-dialog.ts';

/** One message of `size` octets (1000-octet lines) from `from`, streamed with backpressure; the reply to the final dot. */
export async function sendStreamed(port: number, size: number, from = 'alice@example.com'): Promise<string> {
  const dialog = await SmtpDialog.connect(port);
  try {
    for (const [command, expected] of [
      ['EHLO client.test', /^250/],
      [`MAIL FROM:<${from}>`, /^250/],
      ['RCPT TO:<bob@example.net>', /^250/],
      ['DATA', /^354/],
    ] as const) {
      const reply = await dialog.command(command);
      if (!expected.test(reply)) throw new Error(`${command}: ${reply}`);
    }
    const header = Buffer.from(`From: ${from}\r\nTo: bob@example.net\r\nSubject: big\r\n\r\n`);
    await dialog.writeDrained(header);
    const block = Buffer.from(`${'m'.repeat(998)}\r\n`.repeat(64));
    for (let sent = header.length; sent < size; sent += block.length) await dialog.writeDrained(block);
    dialog.write('.\r\n');
    return await dialog.readReply(120_000);
  } finally {
    await dialog.close();
  }
}

/** VmRSS (the resident set now) or VmHWM (its peak) of `pid`, in bytes. */
export async function residentBytes(pid: number, field: 'VmRSS' | 'VmHWM'): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
  if (!match) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(match[1]) * 1024;
}

/** Writing 5 to clear_refs resets the peak (VmHWM) to the current resident set (proc(5)). */
export function resetPeak(pid: number): Promise<void> {
  return writeFile(`/proc/${pid}/clear_refs`, '5');
}

/** Resident-set growth of `pid` while `work` runs, in bytes: the peak during it less the resident set before. */
export async function growthDuring(pid: number, work: () => Promise<void>): Promise<number> {
  const before = await residentBytes(pid, 'VmRSS');
  await resetPeak(pid);
  await work();
  return (await residentBytes(pid, 'VmHWM')) - before;
}

// Memory that traffic leaves behind, given back (docs/performance.md "Memory"). Three parts:
// - The dead buffers of big messages, collected while the message passes. Every socket read is a
//   new 64 KiB buffer, smtp-server copies each DATA chunk once more, and a spilled body is read
//   back in new 64 KiB buffers. V8 frees such a buffer only when it collects the small object
//   that points to it. With default flags its young generation is large and collected rarely, so
//   tens of MiB of dead buffers piled up while a big message streamed, although sello held none
//   of them. Now: a young-generation collection (a scavenge: it costs what is alive, not what is
//   dead) every `collectEveryOctets` of big-message traffic. A message smaller than
//   `bigMessageFrom` never triggers one, so ordinary traffic runs on V8's own schedule.
// - The body a message held in memory before it spilled. By the time it reaches
//   data.spillThreshold it has outlived a few scavenges, so V8 moved it to the old generation,
//   which only a full collection frees: it stayed allocated for as long as the message streamed
//   on (an oversized message cost 2.5-3 MiB, over its 2 MiB threshold). Now: once it is in the
//   spill file, one full collection (about 20 ms), at most once per `spillCollectionIntervalMs`,
//   so a stream of big messages costs at most 2 % of a core.
// - What a burst of traffic grew, given back when the traffic stops. Under load V8 grows its heap
//   (to 150 MiB and more at 20 clients), and once the burst is over it keeps the freed pages in
//   its pool: the resident set stayed where the burst left it. Now: after `idleMs` with no
//   message activity, if the resident set grew by `idleGrowthBytes` since the last time, V8's
//   last-resort collection (what it runs on a low-memory notification: full collections until
//   nothing more is freed, then its pooled pages go back to the system).
// Owns: when to ask V8 for which collection. Must not: hold or inspect message bytes.

import v8 from 'node:v8';
import vm from 'node:vm';

/** A message's octets count once more than this of it has arrived. */
export const bigMessageFrom = 1024 * 1024;
/** Octets of big-message traffic (all messages together) between two young-generation collections. */
export const collectEveryOctets = 1024 * 1024;
/** At most one full collection after a spill per this long. */
export const spillCollectionIntervalMs = 1000;

type Collect = (options: { type: 'minor' | 'major'; execution: 'sync' | 'async'; flavor?: 'regular' | 'last-resort' }) => void;

let collect: Collect | null | undefined;
let sinceCollection = 0;
const collections = { scavenges: 0, full: 0 };
let lastSpillCollection = Number.NEGATIVE_INFINITY;
/** Counts message activity (a sink made, a chunk in or out); the idle release watches it move. */
let activity = 0;

/**
 * V8's gc(): the global one when Node runs with --expose-gc, else from a context made after the
 * flag is set (V8 installs gc() in every context made while the flag is on). null when this
 * runtime offers neither: big messages then cost what V8's own schedule leaves.
 */
function collector(): Collect | null {
  if (collect !== undefined) return collect;
  const global = (globalThis as { gc?: unknown }).gc;
  if (typeof global === 'function') return (collect = global as Collect);
  try {
    v8.setFlagsFromString('--expose-gc');
    const exposed: unknown = vm.runInNewContext('gc');
    collect = typeof exposed === 'function' ? (exposed as Collect) : null;
  } catch {
    collect = null;
  }
  return collect;
}

/** A message was begun, or some of its bytes moved: the process is not idle. */
export function messageActivity(): void {
  activity++;
}

/** `octets` of a big message passed: received past bigMessageFrom (kept, spilled or discarded) or read back from a spill file. */
export function bigMessageOctets(octets: number): void {
  sinceCollection += octets;
  if (sinceCollection < collectEveryOctets) return;
  sinceCollection = 0;
  const run = collector();
  if (!run) return;
  run({ type: 'minor', execution: 'sync' });
  collections.scavenges++;
}

/** A body of more than bigMessageFrom held in memory went to its spill file: what held it is dead, in the old generation. */
export function bodySpilled(): void {
  const now = performance.now();
  if (now - lastSpillCollection < spillCollectionIntervalMs) return;
  lastSpillCollection = now;
  const run = collector();
  if (!run) return;
  run({ type: 'major', execution: 'sync' });
  collections.full++;
}

/** Collections asked for so far for big messages (tests). */
export function bigMessageCollections(): { scavenges: number; full: number } {
  return { ...collections };
}

export interface IdleReleaseOptions {
  /** No message activity for this long counts as idle. */
  idleMs: number;
  /** Only a resident set this much larger than after the last release (or start-up) is worth one. */
  idleGrowthBytes: number;
  /** How often the timer looks. */
  checkEveryMs?: number;
  /** Called after each release with the resident set before and after, and how long it took (logs). */
  released?: (before: number, after: number, durationMs: number) => void;
}

/**
 * Starts the idle release; returns its stop. The timer does not keep the process alive. At most
 * one release per idle period, and none while the resident set has not grown by idleGrowthBytes
 * since the last one: a server that sees a message every few seconds is not collected after
 * each of them.
 */
export function releaseMemoryWhenIdle(options: IdleReleaseOptions): () => void {
  let baseline = process.memoryUsage.rss();
  let seen = activity;
  let quietSince = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    if (activity !== seen) {
      seen = activity;
      quietSince = now;
      return;
    }
    if (now - quietSince < options.idleMs) return;
    const before = process.memoryUsage.rss();
    if (before - baseline < options.idleGrowthBytes) return;
    const run = collector();
    if (!run) return;
    const started = performance.now();
    run({ type: 'major', execution: 'sync', flavor: 'last-resort' });
    baseline = process.memoryUsage.rss();
    options.released?.(before, baseline, performance.now() - started);
  }, options.checkEveryMs ?? 1000);
  timer.unref();
  return () => clearInterval(timer);
}

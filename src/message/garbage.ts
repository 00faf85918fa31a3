// The dead buffers of big messages, collected while the message passes (docs/performance.md
// "Memory"). Every socket read is a new 64 KiB buffer, smtp-server copies each DATA chunk once
// more, and a spilled body is read back in new 64 KiB buffers. V8 frees such a buffer only when it
// collects the small object that points to it. With default flags its young generation is large
// and collected rarely, so tens of MiB of dead buffers pile up while a big message streams,
// although sello holds none of them.
// Owns: asking V8 for a young-generation collection (a scavenge: it costs what is alive in the
// young generation, not what is dead) every `collectEveryOctets` of big-message traffic. A message
// smaller than `bigMessageFrom` never triggers one, so the small messages of ordinary traffic
// run on V8's own schedule. Must not: hold or inspect message bytes.

import v8 from 'node:v8';
import vm from 'node:vm';

/** A message's octets count once more than this of it has arrived. */
export const bigMessageFrom = 1024 * 1024;
/** Octets of big-message traffic (all messages together) between two young-generation collections. */
export const collectEveryOctets = 1024 * 1024;

type Collect = (options: { type: 'minor' | 'major'; execution: 'sync' | 'async' }) => void;

let collect: Collect | null | undefined;
let sinceCollection = 0;
let collections = 0;

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

/** `octets` of a big message passed: received past bigMessageFrom (kept, spilled or discarded) or read back from a spill file. */
export function bigMessageOctets(octets: number): void {
  sinceCollection += octets;
  if (sinceCollection < collectEveryOctets) return;
  sinceCollection = 0;
  const run = collector();
  if (!run) return;
  run({ type: 'minor', execution: 'sync' });
  collections++;
}

/** Collections asked for so far (tests). */
export function bigMessageCollections(): number {
  return collections;
}

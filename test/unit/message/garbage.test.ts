// The idle release (src/message/garbage.ts): after a quiet period, and only after the resident
// set grew by the configured amount, V8's last-resort collection runs once and gives memory
// back; message activity keeps it off, and small growth never triggers it.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MessageSink, releaseMemoryWhenIdle } from '../../../src/message/index.ts';

const MiB = 1024 * 1024;
const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Grows the heap by about `mib` MiB of small objects, all garbage once it returns (V8 keeps the pages). */
function churn(mib: number): number {
  const garbage: string[] = [];
  for (let index = 0; index < mib * 8000; index++) garbage.push(`${'x'.repeat(100)}${index}`);
  return garbage.length;
}

function sink(): MessageSink {
  return new MessageSink({ maxMessageSize: MiB, maxHeaderSize: 4096, bareLineEndings: 'normalize', nul: 'reject', spillThreshold: Number.POSITIVE_INFINITY, spillDirectory: '/nonexistent' });
}

test('after a quiet period, grown memory is released once and the resident set shrinks', async () => {
  const releases: { before: number; after: number }[] = [];
  const stop = releaseMemoryWhenIdle({ idleMs: 200, idleGrowthBytes: 8 * MiB, checkEveryMs: 50, released: (before, after) => releases.push({ before, after }) });
  try {
    churn(100);
    await pause(800);
    assert.equal(releases.length, 1, 'one release after the quiet period');
    const [release] = releases as [{ before: number; after: number }];
    assert.ok(release.before - release.after >= 8 * MiB, `the resident set went from ${(release.before / MiB).toFixed(1)} to ${(release.after / MiB).toFixed(1)} MiB`);
    await pause(500);
    assert.equal(releases.length, 1, 'no second release without new growth');
  } finally {
    stop();
  }
});

test('message activity keeps the release off; growth under idleGrowthBytes never triggers it', async () => {
  let released = 0;
  const stop = releaseMemoryWhenIdle({ idleMs: 300, idleGrowthBytes: 8 * MiB, checkEveryMs: 50, released: () => released++ });
  try {
    churn(100);
    // A message begun every 100 ms: never 300 ms of quiet.
    for (let round = 0; round < 10; round++) {
      void sink().dispose();
      await pause(100);
    }
    assert.equal(released, 0, 'no release while messages keep coming');
  } finally {
    stop();
  }
  let small = 0;
  const stopSmall = releaseMemoryWhenIdle({ idleMs: 100, idleGrowthBytes: 1024 * MiB, checkEveryMs: 50, released: () => small++ });
  try {
    churn(20);
    await pause(500);
    assert.equal(small, 0, 'growth under idleGrowthBytes: no release');
  } finally {
    stopSmall();
  }
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ClientDeadline, type ConnectionView, type DeadlineExpiry } from '../../../src/smtp/client-deadlines.ts';

// Short limits; the waits that expect an expiry leave hundreds of ms for a loaded machine.
const limits = { commandTimeoutMs: 150, stressTimeoutMs: 50, minDataRate: 1000 };
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function watch(view: Partial<ConnectionView>) {
  const expired: DeadlineExpiry[] = [];
  const started = performance.now();
  let at = 0;
  const deadline = new ClientDeadline(
    { waitingForSello: () => false, inData: () => false, dataBytes: () => 0, stressed: () => false, ...view },
    () => limits,
    (expiry) => {
      at = performance.now() - started;
      expired.push(expiry);
    },
  );
  return { deadline, expired, at: () => at };
}

test('a command line gets commandTimeout from the previous command; a new command starts it again', async () => {
  const { deadline, expired, at } = watch({});
  await sleep(100);
  deadline.commandReceived();
  await sleep(100);
  assert.deepEqual(expired, [], 'the command at 100 ms gave a new 150 ms');
  await sleep(600);
  assert.deepEqual(expired, [{ kind: 'command', stress: false, timeoutMs: 150 }]);
  assert.ok(at() >= 240, `expired at ${Math.round(at())} ms`);
});

test('time sello spends deciding does not count; stress shortens the deadline', async () => {
  let busy = true;
  const waiting = watch({ waitingForSello: () => busy });
  await sleep(300);
  assert.deepEqual(waiting.expired, []);
  busy = false;
  await sleep(1500);
  assert.equal(waiting.expired.length, 1);
  const stressed = watch({ stressed: () => true });
  await sleep(400);
  assert.deepEqual(stressed.expired, [{ kind: 'command', stress: true, timeoutMs: 50 }]);
  waiting.deadline.stop();
});

test('DATA may run past the deadline by what its bytes would take at minDataRate', async () => {
  let bytes = 0;
  const { expired } = watch({ inData: () => true, dataBytes: () => bytes });
  // 1000 B/s: each 100 bytes buy 100 ms more.
  for (let step = 0; step < 5; step++) {
    await sleep(100);
    bytes += 200;
  }
  assert.deepEqual(expired, [], 'a sender above the rate goes on');
  await sleep(1600);
  assert.deepEqual(expired, [{ kind: 'data', stress: false, timeoutMs: 150 }]);
});

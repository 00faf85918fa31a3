// Memory while big messages pass (issue 9 part 2, issue 10 defect 5): sello runs as a real
// process (`sello serve`, default V8 flags, as shipped), and its resident set is read from /proc
// while clients stream messages in. The peak (VmHWM, reset just before the messages) minus the
// resident set before them is the growth. Before the measured messages sello has passed one big
// message already, so the growth is what a message costs a running server, not the first-use
// costs of the streaming path (its compiled code, the spill directory).
// Issue 9's targets: one 50 MiB message ≤ 8 MiB, four at once ≤ 32 MiB, an oversized message no
// more than one data.spillThreshold (2 MiB). The fourth, idle resident set after the bench within
// 20 % of its value before, is measured by the bench (bench/memory.ts): how much of a burst V8
// itself gives back varies from run to run (all of it, or none for 30 s), so no bound on it can
// tell a working release from luck. The release itself is tested in test/unit/message/garbage.test.ts. Before streaming (the message held whole), a relayed
// 50 MiB message grew sello by 107 MiB and a refused 100 MiB one by 105 MiB; streaming without
// collecting the dead socket buffers of big messages (src/message/garbage.ts), by 24 to 69 MiB.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { makeKeys } from '../helpers/sello.ts';
import { growthDuring, sendStreamed } from '../helpers/big-message.ts';
import { startSink } from '../helpers/smtp-sink.ts';
import { freePort, tempDir } from '../helpers/tools.ts';

const MiB = 1024 * 1024;
const bin = path.join(import.meta.dirname, '../../bin/sello.js');

async function startSelloProcess(t: TestContext, limits: { maxMessageSize: string }) {
  const sink = await startSink();
  t.after(() => sink.close());
  const dir = await tempDir(t, 'sello-memory-');
  const { keysDir } = await makeKeys([{ domain: 'example.com', selector: 'rsa1', algorithm: 'rsa' }], path.join(dir, 'keys'));
  const port = await freePort();
  const configFile = path.join(dir, 'sello.yaml');
  await writeFile(
    configFile,
    JSON.stringify({
      hostname: 'sello.test',
      // One process: with workers (the default is one per CPU) the message passes through a
      // worker and the pid measured, the primary's, would show no growth whatever sello held.
      workers: 1,
      listeners: [{ name: 'submission', role: 'submission', listen: `127.0.0.1:${port}`, trustedNetworks: ['127.0.0.1/32'] }],
      relay: { target: sink.url, starttls: 'never' },
      signing: { keysDir, domains: { 'example.com': ['rsa1'] } },
      data: { spillDirectory: path.join(dir, 'spill') },
      limits,
      logging: { level: 'warn' },
    }),
  );
  const child = spawn(process.execPath, [bin, 'serve', '--config', configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  const exited = once(child, 'exit');
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
  });
  const deadline = Date.now() + 20_000;
  for (;;) {
    const connected = await new Promise<boolean>((resolve) => {
      const socket = net.connect({ port, host: '127.0.0.1' }, () => {
        socket.destroy();
        resolve(true);
      });
      socket.on('error', () => resolve(false));
    });
    if (connected) break;
    assert.equal(child.exitCode, null, `sello exited: ${stderr}`);
    if (Date.now() > deadline) throw new Error(`sello did not listen: ${stderr}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return { pid: child.pid as number, port, sink };
}

const threshold = 2 * MiB; // data.spillThreshold's default

/** sello has passed one big (spilled) message and is idle again. */
async function warmUp(port: number): Promise<void> {
  assert.match(await sendStreamed(port, 8 * MiB), /^250 /, 'warm-up message');
  await new Promise((resolve) => setTimeout(resolve, 200));
}

const mib = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`;

test('a 100 MiB message against a 25 MiB limit is answered 552 5.3.4 and costs sello no more than one spill threshold', async (t) => {
  const sello = await startSelloProcess(t, { maxMessageSize: '25MiB' });
  await warmUp(sello.port);
  const growth = await growthDuring(sello.pid, async () => {
    assert.equal(await sendStreamed(sello.port, 100 * MiB), '552 5.3.4 Message size exceeds fixed maximum message size');
  });
  t.diagnostic(`resident set growth for a refused 100 MiB message: ${mib(growth)}`);
  assert.ok(growth <= threshold, `grew by ${mib(growth)}; bound: one data.spillThreshold (2 MiB)`);
  assert.equal(sello.sink.messages.length, 1, 'only the warm-up message was relayed');
});

test('a 50 MiB message is signed and relayed with resident-set growth of at most 8 MiB', async (t) => {
  const sello = await startSelloProcess(t, { maxMessageSize: '60MiB' });
  await warmUp(sello.port);
  const growth = await growthDuring(sello.pid, async () => {
    assert.match(await sendStreamed(sello.port, 50 * MiB), /^250 2\.0\.0 OK/);
  });
  t.diagnostic(`resident set growth for a relayed 50 MiB message: ${mib(growth)}`);
  assert.ok(growth <= 8 * MiB, `grew by ${mib(growth)}; bound 8 MiB (the message is 50 MiB)`);
  const relayed = sello.sink.messages[1]?.data;
  assert.ok(relayed && relayed.length > 50 * MiB, 'the whole message reached the MTA');
  assert.match(relayed.subarray(0, 2000).toString('latin1'), /^DKIM-Signature: v=1; a=rsa-sha256;/);
});

test('four 50 MiB messages at once are relayed with resident-set growth of at most 32 MiB', async (t) => {
  const sello = await startSelloProcess(t, { maxMessageSize: '60MiB' });
  await warmUp(sello.port);
  const growth = await growthDuring(sello.pid, async () => {
    const replies = await Promise.all([1, 2, 3, 4].map(() => sendStreamed(sello.port, 50 * MiB)));
    for (const reply of replies) assert.match(reply, /^250 2\.0\.0 OK/);
  });
  t.diagnostic(`resident set growth for four 50 MiB messages at once: ${mib(growth)}`);
  assert.ok(growth <= 32 * MiB, `grew by ${mib(growth)}; bound 32 MiB (the messages are 200 MiB)`);
  assert.equal(sello.sink.messages.filter((message) => message.data.length > 50 * MiB).length, 4, 'all four reached the MTA whole');
});

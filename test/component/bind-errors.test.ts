// Bind failures (issue 10, defect 6): `sello serve` with a port in use, a privileged port without
// the right, or the metrics port in use prints one line naming the listener, the address and the
// reason, and exits 1 (never a stack trace); `check-config --bind` finds the same before a start.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile, chmod } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { main } from '../../src/cli/run.ts';
import { runCommand } from '../helpers/cli.ts';
import { withoutCapabilities } from '../helpers/capabilities.ts';
import { freePort } from '../helpers/tools.ts';

const bin = path.resolve(import.meta.dirname, '../../bin/sello.js');

async function squat(t: TestContext, port: number): Promise<void> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
}

async function configFile(t: TestContext, smtp: string, metrics: number): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'sello-bind-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await chmod(dir, 0o755);
  const file = path.join(dir, 'sello.yaml');
  await writeFile(
    file,
    [
      'hostname: sello.test',
      'listeners:',
      `  - { name: submission, role: submission, listen: "${smtp}", trustedNetworks: ["127.0.0.1/32"] }`,
      `relay: { target: "dir:${path.join(dir, 'mail')}" }`,
      `signing: { keysDir: "${path.join(dir, 'keys')}" }`,
      `metrics: { listen: "127.0.0.1:${metrics}" }`,
    ].join('\n'),
  );
  await chmod(file, 0o644);
  return file;
}

async function serve(file: string, dropCapabilities: readonly string[] = []): Promise<{ code: number | null; stderr: string }> {
  const [command, args] = withoutCapabilities(dropCapabilities, process.execPath, [bin, 'serve', '--config', file]);
  const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(timer);
  return { code, stderr };
}

test('a listener port in use: one line naming listener, address and EADDRINUSE; exit 1', async (t) => {
  const port = await freePort();
  await squat(t, port);
  const result = await serve(await configFile(t, `127.0.0.1:${port}`, await freePort()));
  assert.equal(result.code, 1);
  assert.equal(result.stderr, `sello serve: listeners[0] (submission) cannot listen on 127.0.0.1:${port}: EADDRINUSE (address already in use)\n`);
});

test('the metrics port in use: one line naming metrics.listen; exit 1', async (t) => {
  const metrics = await freePort();
  await squat(t, metrics);
  const result = await serve(await configFile(t, `127.0.0.1:${await freePort()}`, metrics));
  assert.equal(result.code, 1);
  assert.equal(result.stderr, `sello serve: metrics.listen cannot listen on 127.0.0.1:${metrics}: EADDRINUSE (address already in use)\n`);
});

test('port 25 without the right to bind it: EACCES with the remedy; exit 1', async (t) => {
  // As root the child runs without CAP_NET_BIND_SERVICE; anyone else already lacks it.
  const result = await serve(await configFile(t, '127.0.0.1:25', await freePort()), ['net_bind_service']);
  assert.equal(result.code, 1);
  assert.equal(
    result.stderr,
    'sello serve: listeners[0] (submission) cannot listen on 127.0.0.1:25: EACCES (permission denied; use a port ≥ 1024 or grant CAP_NET_BIND_SERVICE)\n',
  );
});

test('check-config --bind tries every bind: OK when free, the same one line and exit 1 when not', async (t) => {
  const [port, metrics] = [await freePort(), await freePort()];
  const file = await configFile(t, `127.0.0.1:${port}`, metrics);
  const free = await runCommand(main, ['check-config', '--config', file, '--bind']);
  assert.equal(free.code, 0, free.err);
  assert.match(free.out, /: OK \(1 listener\(s\), 0 signing key\(s\)\), 2 address\(es\) bound and released\n$/);
  const plain = await runCommand(main, ['check-config', '--config', file]);
  assert.doesNotMatch(plain.out, /bound/, 'without --bind nothing is bound');
  await squat(t, metrics);
  const taken = await runCommand(main, ['check-config', '--config', file, '--bind']);
  assert.equal(taken.code, 1);
  assert.equal(taken.err, `sello check-config: metrics.listen cannot listen on 127.0.0.1:${metrics}: EADDRINUSE (address already in use)\n`);
});

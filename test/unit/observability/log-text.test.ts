// Tests for logging.format: text (src/observability/log-text.ts, logger.ts, serve.ts): one line
// per record, fixed prefix (time LEVEL msg), nested fields flattened, values that could break the
// line or the key=value grammar quoted; and a real `sello serve` writing text lines to stdout.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { formatTextRecord } from '../../../src/observability/log-text.ts';
import { createLogger } from '../../../src/observability/logger.ts';

const repository = join(import.meta.dirname, '..', '..', '..');

test('a record becomes "time LEVEL msg key=value …" with nested fields dotted', () => {
  const line = formatTextRecord(
    JSON.stringify({ level: 30, time: Date.UTC(2026, 11, 4, 16, 50), service: 'sello', session: 'a1b2', spf: { result: 'fail', domain: 'example.com' }, recipients: ['b@example.net'], relay: { code: 250 }, msg: 'transaction' }),
  );
  assert.equal(line, '2026-12-04T16:50:00.000Z INFO transaction session=a1b2 spf.result=fail spf.domain=example.com recipients=["b@example.net"] relay.code=250');
});

test('values with spaces, quotes, "=" or line breaks are JSON-quoted: one record stays one line', () => {
  const line = formatTextRecord(JSON.stringify({ level: 50, time: 0, msg: 'reload failed', error: 'bad\r\nINFO forged=1', path: 'a=b', empty: '' }));
  assert.equal(line, '1970-01-01T00:00:00.000Z ERROR "reload failed" error="bad\\r\\nINFO forged=1" path="a=b" empty=""');
  assert.ok(!line.includes('\n'));
  assert.equal(formatTextRecord('not json'), 'not json', 'a foreign line is passed on, not lost');
});

test('createLogger(…, "text") writes one text line per record, secrets still redacted', () => {
  const chunks: string[] = [];
  const sink = new Writable({
    write(chunk, _encoding, callback) {
      chunks.push(String(chunk));
      callback();
    },
  });
  const logger = createLogger('info', sink, 'text');
  logger.info({ listener: 'mx', password: 'hunter2' }, 'first');
  logger.warn({ warning: 'key mode' }, 'second');
  logger.debug('below the level');
  return new Promise<void>((resolve) =>
    setImmediate(() => {
      const lines = chunks.join('').split('\n');
      assert.equal(lines.length, 3);
      assert.match(lines[0] ?? '', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO first listener=mx password=\[redacted\]$/);
      assert.match(lines[1] ?? '', /^\S+ WARN second warning="key mode"$/);
      assert.equal(lines[2], '');
      resolve();
    }),
  );
});

test('sello serve with logging.format: text logs text lines on stdout', { timeout: 30_000 }, async (t) => {
  const directory = await mkdtemp(join(tmpdir(), 'sello-log-text-'));
  t.after(() => rm(directory, { recursive: true, force: true }));
  const config = join(directory, 'sello.yaml');
  await writeFile(
    config,
    `listeners:\n  - {name: filter, role: filter, listen: "127.0.0.1:0"}\nrelay: {target: "dir:${directory}/mail"}\nmetrics: {listen: "127.0.0.1:0"}\nlogging: {format: text}\n`,
  );
  const child = spawn(process.execPath, [join(repository, 'bin', 'sello.js'), 'serve', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => child.kill('SIGKILL'));
  let stdout = '';
  child.stdout.on('data', (chunk) => (stdout += String(chunk)));
  let stderr = '';
  const metricsUrl = new Promise<string>((resolve, reject) => {
    child.stderr.on('data', (chunk) => {
      stderr += String(chunk);
      const url = /metrics on (http:\S+)\/metrics/.exec(stderr)?.[1];
      if (url) resolve(url);
    });
    child.on('exit', (code) => reject(new Error(`sello exited ${String(code)}: ${stderr}`)));
  });
  // An answer from /healthz means serve.ts has returned to the event loop, so its SIGTERM
  // handler is in place (the line on stderr alone comes a moment before it).
  const health = await fetch(`${await metricsUrl}/healthz`);
  assert.equal(health.status, 200);
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  child.kill('SIGTERM');
  assert.equal(await exited, 0, stderr);
  const lines = stdout.trim().split('\n');
  assert.ok(lines.length >= 2, stdout);
  for (const line of lines) assert.match(line, /^\d{4}-\d\d-\d\dT[\d:.]+Z (INFO|WARN|ERROR|DEBUG) /, `not a text line: ${line}`);
  // One process says "stopping"; with workers (the default: one per core) the primary says it stops them all.
  assert.ok(lines.some((line) => / INFO (stopping|"stopping every worker") signal=SIGTERM /.test(line)), stdout);
});

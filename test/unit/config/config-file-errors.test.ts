// Config errors name the file they came from, then the key path (src/config/load.ts inConfigFile):
// for every command that reads a config file — check-config, serve, keycheck, dns-zone, rotate,
// sign — whether the file was named with --config, $SELLO_CONFIG or found by the lookup, for schema
// errors (each line of a list), and for errors found after loading (a missing key file).

import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { main } from '../../../src/cli/run.ts';
import { runCommand } from '../../helpers/cli.ts';

async function configFile(t: TestContext, text: string): Promise<{ dir: string; file: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'sello-config-errors-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'sello.yaml');
  await writeFile(file, text);
  return { dir, file };
}

const NO_LISTENERS = 'listeners: []\n';

test('each command that loads a config file puts the file before the key path', async (t) => {
  const { file } = await configFile(t, NO_LISTENERS);
  const runs: [string, string[]][] = [
    ['check-config', ['--config', file]],
    ['serve', ['--config', file]],
    ['keycheck', ['--config', file]],
    ['dns-zone', ['--config', file]],
    ['rotate', ['example.com', '--config', file]],
    ['sign', ['--config', file]],
  ];
  for (const [command, args] of runs) {
    const run = await runCommand(main, [command, ...args]);
    assert.deepEqual([run.code, run.out, run.err], [1, '', `sello ${command}: ${file}: listeners: at least one listener is needed\n`], command);
  }
});

test('a file found through $SELLO_CONFIG is named too; every line of a list of errors carries it', async (t) => {
  const { file } = await configFile(t, 'listeners: []\nsigning: { expiry: soon }\n');
  const run = await runCommand(main, ['check-config'], { env: { SELLO_CONFIG: file } });
  assert.equal(run.code, 1);
  const lines = run.err.split('\n');
  assert.equal(lines.length, 3, run.err);
  assert.equal(lines[0], `sello check-config: ${file}: listeners: at least one listener is needed`);
  assert.ok(lines[1]?.startsWith(`${file}: signing.expiry: `), run.err);
});

test('errors found after loading (a missing key file) name the file and the key path, once', async (t) => {
  const { dir, file } = await configFile(t, '');
  await writeFile(file, `listeners:\n  - { name: filter, role: filter, listen: "127.0.0.1:10025" }\nsigning:\n  keysDir: ${join(dir, 'keys')}\n  domains: { example.com: sel }\n`);
  for (const command of ['check-config', 'sign']) {
    const run = await runCommand(main, [command, '--config', file]);
    assert.equal(run.code, 1, command);
    assert.equal(run.err.split(`${file}: `).length, 2, `the file once: ${run.err}`);
    assert.match(run.err, new RegExp(`^sello ${command}: ${file.replaceAll('.', '\\.')}: signing\\.domains\\["example\\.com"\\]: selector "sel": .*no such key file`), command);
  }
});

test('a YAML error and an unreadable file keep their one mention of the file', async (t) => {
  const { dir, file } = await configFile(t, 'listeners: [\n');
  const yamlError = await runCommand(main, ['check-config', '--config', file]);
  assert.equal(yamlError.code, 1);
  assert.match(yamlError.err, new RegExp(`^sello check-config: ${file.replaceAll('.', '\\.')}: YAML error: `));
  assert.equal(yamlError.err.split(file).length, 2, yamlError.err);
  const missing = await runCommand(main, ['check-config', '--config', join(dir, 'absent.yaml')]);
  assert.deepEqual([missing.code, missing.err], [1, `sello check-config: cannot read config file ${join(dir, 'absent.yaml')}: ENOENT\n`]);
});

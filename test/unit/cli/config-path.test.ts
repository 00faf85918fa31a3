// Tests for the config lookup (src/cli/config-path.ts) and `sello version` / `sello --version`
// (src/cli/version.ts, src/cli/run.ts): the order --config, $SELLO_CONFIG, /etc/sello/sello.yaml,
// config/sello.yaml, and an error naming every path tried when none exists.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { configPath, INSTALLED_CONFIG_PATH } from '../../../src/cli/config-path.ts';
import { main } from '../../../src/cli/run.ts';
import { ConfigError } from '../../../src/errors.ts';
import { runCommand } from '../../helpers/cli.ts';

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const execFileAsync = promisify(execFile);
const only = (...files: string[]) => (file: string) => files.includes(file);

test('config lookup: --config first, then $SELLO_CONFIG, whether or not the files exist', () => {
  const everything = () => true;
  assert.equal(configPath('/srv/a.yaml', { SELLO_CONFIG: '/srv/b.yaml' }, everything), '/srv/a.yaml');
  assert.equal(configPath(undefined, { SELLO_CONFIG: '/srv/b.yaml' }, everything), '/srv/b.yaml');
  assert.equal(configPath(undefined, { SELLO_CONFIG: '/srv/missing.yaml' }, () => false), '/srv/missing.yaml');
});

test('config lookup: /etc/sello/sello.yaml when it exists (installed), else ./config/sello.yaml (a checkout)', () => {
  assert.equal(INSTALLED_CONFIG_PATH, '/etc/sello/sello.yaml');
  assert.equal(configPath(undefined, {}, only('/etc/sello/sello.yaml', 'config/sello.yaml')), '/etc/sello/sello.yaml');
  assert.equal(configPath(undefined, { SELLO_CONFIG: '' }, only('config/sello.yaml')), 'config/sello.yaml');
});

test('config lookup: no file anywhere is a ConfigError naming every path tried', () => {
  assert.throws(
    () => configPath(undefined, {}, () => false),
    (error: unknown) =>
      error instanceof ConfigError &&
      error.message.includes('$SELLO_CONFIG is not set') &&
      error.message.includes('/etc/sello/sello.yaml') &&
      error.message.includes(`config/sello.yaml (${join(process.cwd(), 'config/sello.yaml')})`) &&
      error.message.includes('--config FILE'),
  );
});

test('sello check-config from a directory without config/: /etc/sello/sello.yaml if installed, else one line naming the paths', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sello-config-path-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const environment = { ...process.env };
  delete environment['SELLO_CONFIG'];
  const checkConfig = (...args: string[]) =>
    execFileAsync(process.execPath, [join(repoRoot, 'bin/sello.js'), 'check-config', ...args], { cwd: dir, env: environment }).then(
      ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
      (error: { code: number; stdout: string; stderr: string }) => ({ code: error.code, stdout: error.stdout, stderr: error.stderr }),
    );
  const run = await checkConfig();
  if (existsSync(INSTALLED_CONFIG_PATH)) {
    // A machine with the package installed: the lookup takes its conffile, valid or not.
    assert.deepEqual(run, await checkConfig('--config', INSTALLED_CONFIG_PATH));
    return;
  }
  assert.equal(run.code, 1);
  assert.equal(run.stdout, '');
  const lines = run.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, run.stderr);
  assert.match(lines[0] as string, /^sello check-config: no configuration file: \$SELLO_CONFIG is not set, and there is no \/etc\/sello\/sello\.yaml nor config\/sello\.yaml \(.*\/config\/sello\.yaml\); give --config FILE$/);
});

test('sello version and sello --version print the package.json version and the Node.js runtime', async () => {
  const { version } = JSON.parse(await readFile(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
  const expected = `sello ${version} (Node.js ${process.version})\n`;
  for (const argv of [['version'], ['--version'], ['-V']]) {
    const run = await runCommand(main, argv);
    assert.deepEqual(run, { code: 0, out: expected, err: '' }, argv.join(' '));
  }
  const usage = await runCommand(main, ['--help']);
  assert.match(usage.out, /^ {2}version {8}print sello's version/m);
});

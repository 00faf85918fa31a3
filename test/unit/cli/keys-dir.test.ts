// keygen's and rotate's keys directory without --keys-dir (src/cli/keys-dir.ts): signing.keysDir
// of the config the lookup finds, said on stderr; keygen's built-in `keys` when there is no config;
// an invalid config found is an error naming the file. The packaged case (/etc/sello/sello.yaml →
// /var/lib/sello/keys, as the sello user) is test/package/debian.test.ts.

import assert from 'node:assert/strict';
import { access, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { defaultKeysDir } from '../../../src/cli/keys-dir.ts';
import { main } from '../../../src/cli/run.ts';
import { runCommand } from '../../helpers/cli.ts';
import { tempDir } from '../../helpers/tools.ts';

const exists = (path: string) => access(path).then(() => true, () => false);

function captureIo(env: NodeJS.ProcessEnv) {
  const io = { err: '', io: { stdout: () => {}, stderr: (text: string) => (io.err += text), stdin: process.stdin, env } };
  return io;
}

async function configWithKeysDir(dir: string, keysDir: string, domains = '{}'): Promise<string> {
  const file = join(dir, 'sello.yaml');
  await writeFile(file, `listeners:\n  - { name: filter, role: filter, listen: "127.0.0.1:10025" }\nsigning:\n  keysDir: ${keysDir}\n  domains: ${domains}\n`);
  return file;
}

test('keygen without --keys-dir writes under the signing.keysDir of $SELLO_CONFIG and says so on stderr', async (t) => {
  const dir = await tempDir(t);
  const keysDir = join(dir, 'var-lib-sello-keys');
  const file = await configWithKeysDir(dir, keysDir);
  const run = await runCommand(main, ['keygen', 'example.com', '--selector', 'cfg', '--format', 'value'], { env: { SELLO_CONFIG: file } });
  assert.equal(run.code, 0, run.err);
  assert.equal(run.err.split('\n')[0], `keys directory: ${keysDir} (signing.keysDir of ${file})`);
  assert.equal((await stat(join(keysDir, 'example.com', 'cfg.pem'))).mode & 0o777, 0o600);
  assert.equal(await exists(join(dir, 'keys')), false);

  // $SELLO_KEYS_DIR overrides the file's keysDir, as for sello serve.
  const override = join(dir, 'override');
  const overridden = await runCommand(main, ['keygen', 'example.com', '--selector', 'env'], { env: { SELLO_CONFIG: file, SELLO_KEYS_DIR: override } });
  assert.equal(overridden.code, 0, overridden.err);
  assert.ok(await exists(join(override, 'example.com', 'env.pem')));

  // --keys-dir wins, and then nothing about the directory is said.
  const flagged = join(dir, 'flag');
  const explicit = await runCommand(main, ['keygen', 'example.com', '--selector', 'flag', '--keys-dir', flagged], { env: { SELLO_CONFIG: file } });
  assert.equal(explicit.code, 0, explicit.err);
  assert.ok(await exists(join(flagged, 'example.com', 'flag.pem')));
  assert.ok(!explicit.err.includes('keys directory:'), explicit.err);
});

test('the lookup: config/sello.yaml of a checkout is asked; no config at all gives keygen\'s "keys", said as the default', async () => {
  const checkout = captureIo({});
  assert.equal(await defaultKeysDir(checkout.io, (file) => file === 'config/sello.yaml'), 'keys'); // the repository's config/sello.yaml says keys
  assert.equal(checkout.err, 'keys directory: keys (signing.keysDir of config/sello.yaml)\n');
  const none = captureIo({});
  assert.equal(await defaultKeysDir(none.io, () => false), 'keys');
  assert.equal(none.err, 'keys directory: keys (the default: no config file found)\n');
});

test('a config that is found but invalid stops keygen with the file and key path, no key written', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'sello.yaml');
  await writeFile(file, 'listeners: []\n');
  const run = await runCommand(main, ['keygen', 'example.com', '--selector', 'bad'], { env: { SELLO_CONFIG: file } });
  assert.deepEqual([run.code, run.out, run.err], [1, '', `sello keygen: ${file}: listeners: at least one listener is needed\n`]);
});

test('rotate without --keys-dir uses the config\'s signing.keysDir and names it on stderr', async (t) => {
  const dir = await tempDir(t);
  const keysDir = join(dir, 'keys-from-config');
  const file = await configWithKeysDir(dir, keysDir, '{ example.com: old }');
  assert.equal((await runCommand(main, ['keygen', 'example.com', '--selector', 'old', '--keys-dir', keysDir])).code, 0);
  const run = await runCommand(main, ['rotate', 'example.com', '--selector', 'new', '--format', 'value'], { env: { SELLO_CONFIG: file } });
  assert.equal(run.code, 0, run.err);
  assert.equal(run.err.split('\n')[0], `keys directory: ${keysDir} (signing.keysDir of ${file})`);
  assert.ok(await exists(join(keysDir, 'example.com', 'new.pem')));
  assert.ok(await exists(join(keysDir, 'example.com', 'rotation.yaml')));
});

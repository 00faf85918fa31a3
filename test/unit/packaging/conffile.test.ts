// The Debian package's conffile (packaging/sello.yaml, installed as /etc/sello/sello.yaml): it
// passes check-config as shipped, and listens on loopback only until the admin enables more.

import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { main } from '../../../src/cli/run.ts';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { checkConfigCommand } from '../../../src/cli/check-config.ts';
import { loadConfig, parseConfig } from '../../../src/config/load.ts';
import { runCommand } from '../../helpers/cli.ts';

const conffile = fileURLToPath(new URL('../../../packaging/sello.yaml', import.meta.url));

test('the shipped /etc/sello/sello.yaml passes check-config', async () => {
  assert.deepEqual(await runCommand(checkConfigCommand, ['--config', conffile]), { code: 0, out: `${conffile}: OK (1 listener(s), 0 signing key(s))\n`, err: '' });
});

test('the shipped config listens on loopback only, keeps keys under /var/lib/sello, and its comments name real keys', async () => {
  const config = await loadConfig(conffile, {});
  for (const listener of config.listeners) assert.match(listener.listen.host, /^127\./, listener.name);
  assert.equal(config.metrics.listen.host, '127.0.0.1');
  assert.equal(config.signing.keysDir, '/var/lib/sello/keys');
  assert.equal(config.logging.format, 'text', 'the unit logs to the journal');
  // The commented-out listeners and inbound block are what an admin enables: uncommented, the
  // config must still be valid (schema only: the snakeoil certificate need not exist here).
  const text = await readFile(conffile, 'utf8');
  const uncommented = text
    .replace(/^ {2}# (- name: (?:milter|mx|submission)\n(?: {2}# {3}.*\n)+)/gm, (block: string) => block.replace(/^ {2}# /gm, '  '))
    .replace(/^# (inbound:.*\n)# (.*\n)/m, '$1$2');
  const enabled = parseConfig(parse(uncommented));
  assert.deepEqual(enabled.listeners.map((listener) => [listener.name, listener.role, listener.listen.port]), [['filter', 'filter', 10025], ['milter', 'milter', 8891], ['mx', 'mx', 25], ['submission', 'submission', 587]]);
  assert.deepEqual(enabled.inbound.localDomains, ['example.com']);
});

test('the commented milter listener, uncommented as docs/milter.md says, passes check-config on the loopback port Postfix is told', async (t) => {
  const text = await readFile(conffile, 'utf8');
  const block = /^ {2}# (- name: milter\n(?: {2}# {3}.*\n)+)/m.exec(text)?.[0];
  assert.ok(block, 'a commented milter listener');
  assert.match(text, /smtpd_milters = inet:127\.0\.0\.1:8891/, 'the Postfix line in the comment names the same socket');
  const dir = await mkdtemp(join(tmpdir(), 'sello-conffile-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'sello.yaml');
  await writeFile(file, text.replace(block, block.replace(/^ {2}# /gm, '  ')));
  assert.deepEqual(await runCommand(main, ['check-config', '--config', file]), { code: 0, out: `${file}: OK (2 listener(s), 0 signing key(s))\n`, err: '' });
  const milter = (await loadConfig(file, {})).listeners.find((listener) => listener.role === 'milter');
  assert.deepEqual([milter?.listen, milter?.trustedNetworks, milter?.sign, milter?.verify], [{ host: '127.0.0.1', port: 8891 }, ['127.0.0.1/32'], undefined, undefined]);
});

// The Debian package's conffile (packaging/sello.yaml, installed as /etc/sello/sello.yaml): it
// passes check-config as shipped, and listens on loopback only until the admin enables more.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
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
    .replace(/^ {2}# (- name: (?:mx|submission)\n(?: {2}# {3}.*\n)+)/gm, (block: string) => block.replace(/^ {2}# /gm, '  '))
    .replace(/^# (inbound:.*\n)# (.*\n)/m, '$1$2');
  const enabled = parseConfig(parse(uncommented));
  assert.deepEqual(enabled.listeners.map((listener) => [listener.name, listener.role, listener.listen.port]), [['filter', 'filter', 10025], ['mx', 'mx', 25], ['submission', 'submission', 587]]);
  assert.deepEqual(enabled.inbound.localDomains, ['example.com']);
});

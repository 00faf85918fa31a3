// Tests for numeric selectors in YAML (src/config/load.ts, schema.ts): keygen's default selector
// `202611` written unquoted is a YAML integer; it must load as the selector "202611", with its
// exact digits (a leading zero kept), in the signing table and in inbound.arc.seal.

import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadConfig, parseConfig } from '../../../src/config/load.ts';

test('unquoted numeric selectors load as their digits', async (t) => {
  const directory = await mkdtemp(join(tmpdir(), 'sello-selectors-'));
  t.after(() => rm(directory, { recursive: true, force: true }));
  const file = join(directory, 'sello.yaml');
  await writeFile(
    file,
    [
      'listeners:',
      '  - {name: mx, role: mx, listen: "127.0.0.1:2500"}',
      'signing:',
      '  domains:',
      '    example.com: 202611',
      '    example.org: [0123, 202611-ed25519]',
      'inbound:',
      '  localDomains: [example.net]',
      '  arc:',
      '    seal: {domain: example.com, selector: 202612}',
      '',
    ].join('\n'),
  );
  const config = await loadConfig(file);
  assert.deepEqual(config.signing.domains, { 'example.com': '202611', 'example.org': ['0123', '202611-ed25519'] });
  assert.equal(config.inbound.arc.seal?.selector, '202612');
});

test('a number given to parseConfig is a selector too; a negative one is refused by name', () => {
  const listeners = [{ name: 'filter', role: 'filter', listen: '127.0.0.1:10025' }];
  assert.deepEqual(parseConfig({ listeners, signing: { domains: { 'example.com': 202611 } } }).signing.domains, { 'example.com': '202611' });
  assert.throws(() => parseConfig({ listeners, signing: { domains: { 'example.com': -1 } } }), /signing\.domains\["example\.com"\]: not a valid DKIM selector/);
});

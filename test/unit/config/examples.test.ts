// Every config file shipped in config/ must pass `sello check-config` (with keys made for the
// selectors it names, in a temp dir via SELLO_KEYS_DIR): a template that no test reads rots.

import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { main } from '../../../src/cli/run.ts';
import { keysForSigningTable, makeKeys } from '../../helpers/sello.ts';
import { runCommand } from '../../helpers/cli.ts';

const root = path.join(import.meta.dirname, '../../../config');
const files = [
  ...(await readdir(root)).filter((name) => name.endsWith('.yaml')).map((name) => path.join(root, name)),
  ...(await readdir(path.join(root, 'examples'))).filter((name) => name.endsWith('.yaml')).map((name) => path.join(root, 'examples', name)),
];

test('there are config files to check', () => assert.ok(files.length >= 3, files.join(', ')));

for (const file of files) {
  test(`check-config accepts ${path.relative(root, file)}`, async (t) => {
    const raw = parse(await readFile(file, 'utf8')) as { signing?: { domains?: Record<string, string | string[]> } };
    const keysDir = await mkdtemp(path.join(tmpdir(), 'sello-example-keys-'));
    t.after(() => rm(keysDir, { recursive: true, force: true }));
    const unique = keysForSigningTable(raw.signing?.domains ?? {});
    await makeKeys(unique, keysDir);
    const { code, out, err } = await runCommand(main, ['check-config', '--config', file], { env: { SELLO_KEYS_DIR: keysDir } });
    assert.equal(code, 0, err);
    assert.match(out, /: OK \(\d+ listener\(s\), \d+ signing key\(s\)\)/);
  });
}

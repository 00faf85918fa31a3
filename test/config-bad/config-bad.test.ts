// Deliberately broken configs (chasquid's config-bad idea): each file's first line says the
// error `sello check-config` must report; each must fail fast, with exit 1, for that reason.

import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { main } from '../../src/cli/run.ts';
import { runCommand } from '../helpers/cli.ts';

const directory = import.meta.dirname;

for (const file of (await readdir(directory)).filter((name) => name.endsWith('.yaml')).sort()) {
  test(`config-bad/${file}`, async () => {
    const text = await readFile(path.join(directory, file), 'utf8');
    const expected = /^# expect: (.*)$/m.exec(text)?.[1];
    assert.ok(expected, `${file} must start with "# expect: <error>"`);
    const { code, out, err } = await runCommand(main, ['check-config', '--config', path.join(directory, file)]);
    assert.equal(code, 1, `exit code; stdout ${out}`);
    assert.ok(err.includes(expected), `expected ${JSON.stringify(expected)} in:\n${err}`);
  });
}

// Tests for the man pages and the bash completion of the Debian package (packaging/manpages.ts,
// packaging/completion.ts): the roff renderer's escaping, that every key of the README's
// configuration reference and every command of `sello --help` reaches the pages, and that groff
// renders them without a warning.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { optionsOf, renderCompletion } from '../../../packaging/completion.ts';
import { commandHelp, commandNames, escapeRoff, readmeSection, renderInline, renderManPages, renderMarkdown, tableCells } from '../../../packaging/manpages.ts';
import { requireTool, tempDir } from '../../helpers/tools.ts';

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const readme = await readFile(path.join(repoRoot, 'README.md'), 'utf8');

test('roff escaping: backslashes, hyphens, glyphs, and no request at a line start', () => {
  assert.equal(escapeRoff('a\\b'), 'a\\eb');
  assert.equal(escapeRoff('--config'), '\\-\\-config');
  assert.equal(escapeRoff('fail → 550 … ≥ 2 — §3'), 'fail \\(-> 550 ... \\(>= 2 \\(em \\(sc3');
  assert.equal(escapeRoff('.TH injected\n\'also'), '\\&.TH injected\n\\&\'also');
  assert.equal(renderInline('use `sello keygen` and **`/metrics`**, see [docs](docs/x.md)'), 'use \\fBsello keygen\\fR and \\fB/metrics\\fR, see docs');
});

test('table cells: a bar inside a code span or escaped as \\| is text', () => {
  assert.deepEqual(tableCells('| `logging.format` | `json` | `json \\| text`: one of `a|b` |'), ['`logging.format`', '`json`', '`json | text`: one of `a|b`']);
});

test('markdown blocks: paragraph, bullets with continuation lines, fenced code, reference table', () => {
  const roff = renderMarkdown(['One', 'paragraph.', '', '- first', '  continued', '- second', '', '```', '.dot first', '```', '', '| key | default | meaning |', '|---|---|---|', '| `a.b` | `1` | what |', '| `c` | (required) | must |'].join('\n'));
  assert.equal(roff, ['.PP', 'One paragraph.', '.IP \\(bu 2', 'first continued', '.IP \\(bu 2', 'second', '.PP', '.RS 4', '.nf', '\\&.dot first', '.fi', '.RE', '.TP', '\\fBa.b\\fR', 'what', '.br', 'Default: \\fB1\\fR.', '.TP', '\\fBc\\fR', 'must', '.br', 'Required.'].join('\n'));
});

test('sello.yaml(5) has every key of the README configuration reference; sello(8) every command and its flags', async () => {
  const pages = await renderManPages(readme, '2026-12-04');
  const keys = readmeSection(readme, 'Configuration reference')
    .split('\n')
    .filter((line) => line.startsWith('| `'))
    .map((line) => tableCells(line)[0] as string);
  assert.ok(keys.length > 40, `${keys.length} keys`);
  for (const key of keys) assert.ok(pages['sello.yaml.5'].includes(`.TP\n${renderInline(key)}\n`), key);
  const help = await commandHelp();
  assert.deepEqual([...help.keys()], await commandNames());
  assert.ok(help.has('version') && help.has('serve') && help.has('keygen'));
  for (const [name, text] of help) {
    assert.ok(pages['sello.8'].includes(`.SS ${escapeRoff(name)}\n`), name);
    for (const option of optionsOf(text)) assert.ok(pages['sello.8'].includes(escapeRoff(option)), `${name} ${option}`);
  }
  assert.match(pages['sello.8'], /^\.TH SELLO 8 "2026-12-04" "sello \d+\.\d+\.\d+" "System Administration"$/m);
});

test('bash completion lists every command, and each command\'s flags', async () => {
  const help = await commandHelp();
  const script = renderCompletion(help);
  assert.match(script, new RegExp(`compgen -W '${[...help.keys()].join(' ')} --help --version'`));
  for (const [name, text] of help) assert.ok(script.includes(`\n    ${name}) options='${optionsOf(text).join(' ')}' ;;\n`), name);
  const keygenOptions = optionsOf(help.get('keygen') ?? '');
  for (const option of ['--algorithm', '--bits', '--format', '--help', '--if-missing', '--keys-dir', '--selector']) assert.ok(keygenOptions.includes(option), option);
  assert.equal(spawnSync('bash', ['-n'], { input: script }).status, 0, 'bash -n');
});

test('groff renders both pages without a warning', async (t) => {
  const check = spawnSync('sh', ['-c', 'command -v man']).status === 0 ? undefined : 'no man on PATH';
  if (!requireTool(t, { name: 'man', missing: check, install: 'man-db' })) return;
  const dir = await tempDir(t);
  const pages = await renderManPages(readme, '2026-12-04');
  for (const [name, text] of Object.entries(pages)) {
    await writeFile(path.join(dir, name), text);
    const man = spawnSync('man', ['--warnings', '-E', 'UTF-8', '-l', path.join(dir, name)], { encoding: 'utf8', env: { ...process.env, MANWIDTH: '80', MANPAGER: 'cat' } });
    assert.equal(man.status, 0, man.stderr);
    assert.equal(man.stderr, '', name);
    assert.ok(man.stdout.length > 2000, name);
  }
});

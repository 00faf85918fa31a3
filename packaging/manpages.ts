// The man pages sello(8) and sello.yaml(5), rendered from the sources users already read: the
// README's "Configuration reference" (every key, one table row each) and "Operations" sections,
// and each command's own --help text (src/cli). Generated at package build time, so a key or a
// flag added to those sources is in the next package's man pages: they cannot drift.
// Owns: that selection and a roff renderer for the Markdown the README uses (paragraphs, bullet
// lists, tables, fenced code, `code`, **bold**, [links](…)). Must not: change what it renders.
//
//   node packaging/manpages.ts OUTPUT_DIR    writes OUTPUT_DIR/sello.8 and OUTPUT_DIR/sello.yaml.5

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { main } from '../src/cli/run.ts';
import { CONFIG_SEARCH_PATH } from '../src/cli/config-path.ts';
import { selloVersion } from '../src/cli/version.ts';

const repoRoot = fileURLToPath(new URL('../', import.meta.url));

/** Characters groff's man macros do not take as they are, as roff escapes. */
const ROFF_GLYPHS: Record<string, string> = {
  '→': '\\(->',
  '←': '\\(<-',
  '…': '...',
  '≥': '\\(>=',
  '≤': '\\(<=',
  '—': '\\(em',
  '–': '\\(en',
  '×': '\\(mu',
  '§': '\\(sc',
  '≈': '\\(~~',
  '“': '\\(lq',
  '”': '\\(rq',
  '’': "'",
};

/** Plain text → roff text: backslashes, glyphs, and no control character at a line start. */
export function escapeRoff(text: string): string {
  // Hyphens first: the glyph escapes below contain some.
  const escaped = text
    .replaceAll('\\', '\\e')
    .replaceAll('-', '\\-')
    .replace(/[→←…≥≤—–×§≈“”’]/g, (glyph) => ROFF_GLYPHS[glyph] ?? glyph);
  return escaped.replace(/^([.'])/gm, '\\&$1');
}

/** One line of Markdown inline syntax → roff: `code` and **bold** in bold, links as their text. */
export function renderInline(markdown: string): string {
  const parts: string[] = [];
  // Code spans first: nothing inside them is Markdown.
  const pattern = /`([^`]+)`|\*\*([^*]+)\*\*|\[([^\]]+)\]\([^)]*\)/g;
  let last = 0;
  for (const match of markdown.matchAll(pattern)) {
    parts.push(escapeRoff(markdown.slice(last, match.index)));
    if (match[1] !== undefined) parts.push(`\\fB${escapeRoff(match[1])}\\fR`);
    // Bold text is bold already: a code span inside it loses only its backticks.
    else if (match[2] !== undefined) parts.push(`\\fB${escapeRoff(match[2].replaceAll('`', ''))}\\fR`);
    else parts.push(renderInline(match[3] as string));
    last = match.index + match[0].length;
  }
  parts.push(escapeRoff(markdown.slice(last)));
  return parts.join('');
}

/** Cells of one table row: split on `|` outside code spans; `\|` is a literal bar. */
export function tableCells(row: string): string[] {
  const cells: string[] = [];
  let cell = '';
  let inCode = false;
  const body = row.trim().replace(/^\|/, '').replace(/\|$/, '');
  for (let index = 0; index < body.length; index++) {
    const character = body[index] as string;
    if (character === '\\' && body[index + 1] === '|') {
      cell += '|';
      index++;
    } else if (character === '`') {
      inCode = !inCode;
      cell += character;
    } else if (character === '|' && !inCode) {
      cells.push(cell.trim());
      cell = '';
    } else {
      cell += character;
    }
  }
  cells.push(cell.trim());
  return cells;
}

/**
 * A block of the README's Markdown → man(7) requests. A table with the columns key, default,
 * meaning (the configuration reference) becomes one tagged paragraph per key.
 */
export function renderMarkdown(markdown: string): string {
  const lines = markdown.replace(/\r\n/g, '\n').split('\n');
  const out: string[] = [];
  let index = 0;
  while (index < lines.length) {
    const line = lines[index] as string;
    if (line.trim() === '') {
      index++;
    } else if (line.startsWith('```')) {
      const code: string[] = [];
      for (index++; index < lines.length && !(lines[index] as string).startsWith('```'); index++) code.push(lines[index] as string);
      index++;
      out.push('.PP', '.RS 4', '.nf', ...code.map(escapeRoff), '.fi', '.RE');
    } else if (line.startsWith('#')) {
      out.push(`.SS ${renderInline(line.replace(/^#+\s*/, ''))}`);
      index++;
    } else if (line.startsWith('|')) {
      const rows: string[][] = [];
      for (; index < lines.length && (lines[index] as string).startsWith('|'); index++) rows.push(tableCells(lines[index] as string));
      const [header, , ...body] = rows;
      const isReference = header?.[0] === 'key' && header[1] === 'default';
      for (const cells of body) {
        out.push('.TP', renderInline(cells[0] ?? ''));
        if (!isReference) {
          out.push(renderInline(cells.slice(1).join(' \u2014 ')));
          continue;
        }
        const fallback = cells[1] ?? '';
        out.push(renderInline(cells[2] ?? ''), '.br', fallback === '(required)' ? 'Required.' : `Default: ${renderInline(fallback)}.`);
      }
    } else if (/^\s*- /.test(line)) {
      const indent = (/^(\s*)/.exec(line)?.[1] ?? '').length;
      const item: string[] = [line.trim().slice(2)];
      for (index++; index < lines.length; index++) {
        const next = lines[index] as string;
        if (next.trim() === '' || /^\s*- /.test(next) || (/^\S/.test(next) && indent === 0 && !next.startsWith(' '))) break;
        item.push(next.trim());
      }
      out.push(`.IP \\(bu ${indent > 0 ? 4 : 2}`, renderInline(item.join(' ')));
    } else {
      const paragraph: string[] = [];
      for (; index < lines.length; index++) {
        const next = lines[index] as string;
        if (next.trim() === '' || next.startsWith('```') || next.startsWith('|') || next.startsWith('#') || /^\s*- /.test(next)) break;
        paragraph.push(next.trim());
      }
      out.push('.PP', renderInline(paragraph.join(' ')));
    }
  }
  return out.join('\n');
}

/** The body of the README section whose heading starts with `title` (up to the next `## `). */
export function readmeSection(readme: string, title: string): string {
  const start = readme.split('\n').findIndex((line) => line.startsWith(`## ${title}`));
  if (start < 0) throw new Error(`README.md has no section "## ${title}…"`);
  const rest = readme.split('\n').slice(start + 1);
  const end = rest.findIndex((line) => line.startsWith('## '));
  return rest.slice(0, end < 0 ? undefined : end).join('\n');
}

/** What `sello <args>` prints on stdout, run in-process. */
async function captureStdout(argv: string[]): Promise<string> {
  let text = '';
  const code = await main(argv, {
    stdout: (chunk) => (text += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8')),
    stderr: () => {},
    stdin: process.stdin,
    env: {},
  });
  if (code !== 0) throw new Error(`sello ${argv.join(' ')} exited ${code}`);
  return text;
}

/** The command names of `sello --help`, in its order. */
export async function commandNames(): Promise<string[]> {
  return [...(await captureStdout(['--help'])).matchAll(/^ {2}([a-z][a-z-]*) {2,}/gm)].map((match) => match[1] as string);
}

/** Each command's --help text, as the user sees it. */
export async function commandHelp(): Promise<Map<string, string>> {
  const help = new Map<string, string>();
  for (const name of await commandNames()) help.set(name, await captureStdout([name, '--help']));
  return help;
}

function preformatted(text: string): string[] {
  return ['.PP', '.RS 4', '.nf', ...text.trimEnd().split('\n').map(escapeRoff), '.fi', '.RE'];
}

function header(name: string, section: number, version: string, date: string, manual: string): string[] {
  return [`.\\" Generated by packaging/manpages.ts from README.md and sello's --help texts; do not edit.`, `.TH ${name.toUpperCase()} ${section} "${date}" "sello ${version}" "${manual}"`];
}

export type ManPages = { 'sello.8': string; 'sello.yaml.5': string };

export async function renderManPages(readme: string, date: string): Promise<ManPages> {
  const version = await selloVersion();
  const help = await commandHelp();
  const firstParagraph = readme.split('\n## ')[0]?.split('\n\n')[1] ?? '';
  const lookup = `--config FILE, else $SELLO_CONFIG, else the first of ${CONFIG_SEARCH_PATH.join(', ')} that exists`;

  const sello8 = [
    ...header('sello', 8, version, date, 'System Administration'),
    '.SH NAME',
    'sello \\- DKIM/SPF sidecar for mail servers',
    '.SH SYNOPSIS',
    '.B sello',
    '.I command',
    '.RI [ options ]',
    '.br',
    '.B sello \\-\\-version',
    '.SH DESCRIPTION',
    renderMarkdown(firstParagraph),
    '.PP',
    `The configuration file is ${renderInline(lookup)}; see`,
    '.BR sello.yaml (5).',
    '.SH COMMANDS',
    ...[...help].flatMap(([name, text]) => [`.SS ${escapeRoff(name)}`, ...preformatted(text)]),
    '.SH OPERATION',
    renderMarkdown(readmeSection(readme, 'Operations')),
    '.SH FILES',
    '.TP',
    '.I /etc/sello/sello.yaml',
    'the configuration (a conffile of the Debian package)',
    '.TP',
    '.I /var/lib/sello/keys',
    'DKIM private keys, \\fI<domain>/<selector>.pem\\fR, owned by the sello user, mode 0600 in a 0700 directory',
    '.TP',
    '.I /lib/systemd/system/sello.service',
    'the systemd unit: \\fBsystemctl reload sello\\fR sends SIGHUP',
    '.SH SEE ALSO',
    '.BR sello.yaml (5),',
    '.BR swaks (1),',
    '.BR exim4 (8),',
    '.BR postfix (1)',
  ];

  const selloYaml5 = [
    ...header('sello.yaml', 5, version, date, 'File Formats'),
    '.SH NAME',
    'sello.yaml \\- configuration of the sello DKIM/SPF proxy',
    '.SH SYNOPSIS',
    '.I /etc/sello/sello.yaml',
    '.SH DESCRIPTION',
    renderMarkdown(readmeSection(readme, 'Configuration reference')),
    '.SH SEE ALSO',
    '.BR sello (8)',
  ];
  return { 'sello.8': `${sello8.join('\n')}\n`, 'sello.yaml.5': `${selloYaml5.join('\n')}\n` };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const output = process.argv[2];
  if (!output) {
    process.stderr.write('usage: node packaging/manpages.ts OUTPUT_DIR\n');
    process.exit(2);
  }
  const readme = await readFile(path.join(repoRoot, 'README.md'), 'utf8');
  // The package's date (SOURCE_DATE_EPOCH, set by build-deb.sh from the commit) keeps builds reproducible.
  const epoch = Number(process.env['SOURCE_DATE_EPOCH'] ?? Date.now() / 1000);
  const pages = await renderManPages(readme, new Date(epoch * 1000).toISOString().slice(0, 10));
  await mkdir(output, { recursive: true });
  for (const [name, text] of Object.entries(pages)) await writeFile(path.join(output, name), text);
}

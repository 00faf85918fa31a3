// Reading an OpenDKIM configuration as opendkim.conf(5) describes it: "Name value" lines, and
// the data sets its values name (inline lists, file:, refile:, a bare path). For
// `sello import opendkim`. Owns: OpenDKIM's syntax. Must not: decide what a setting means for
// sello (import-opendkim.ts does), or read anything but the files the configuration names.

import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { ConfigError } from '../errors.ts';

/** Files larger than this are not OpenDKIM configurations or tables (a bound on what is read). */
const MAX_FILE_BYTES = 4 << 20;

export interface OpendkimSetting {
  /** The name as written, e.g. "KeyTable". */
  name: string;
  value: string;
  line: number;
}

/** One parsed configuration: settings by lower-case name (the last one wins, as in OpenDKIM). */
export interface OpendkimConfig {
  path: string;
  settings: Map<string, OpendkimSetting>;
}

/** A data set's entries: each line's first field (the key) and the rest (the value, may be ''). */
export interface DatasetEntry {
  key: string;
  value: string;
  /** Line number in the data set's file (for lists: the configuration line). */
  line: number;
}

export type Dataset =
  | { kind: 'list'; entries: DatasetEntry[] }
  | { kind: 'file'; path: string; entries: DatasetEntry[] }
  | { kind: 'refile'; path: string; entries: DatasetEntry[] }
  | { kind: 'unsupported'; scheme: string };

export async function readBounded(path: string): Promise<string> {
  let text: Buffer;
  try {
    text = await readFile(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (code ?? String(error));
    throw new ConfigError('', `cannot read ${path}: ${reason}`);
  }
  if (text.length > MAX_FILE_BYTES) throw new ConfigError('', `${path} is larger than ${MAX_FILE_BYTES} bytes; not an OpenDKIM file`);
  return text.toString('utf8');
}

/** Lines without comments ("#" to the end of the line) and surrounding white space, with numbers. */
function meaningfulLines(text: string): { text: string; line: number }[] {
  return text
    .split(/\r?\n/)
    .map((raw, index) => ({ text: raw.replace(/(^|\s)#.*$/, '').trim(), line: index + 1 }))
    .filter((entry) => entry.text !== '');
}

/** opendkim.conf(5): "Each line is a parameter name, white space, and the value". */
export async function readOpendkimConfig(path: string): Promise<OpendkimConfig> {
  const settings = new Map<string, OpendkimSetting>();
  for (const { text, line } of meaningfulLines(await readBounded(path))) {
    const match = /^(\S+)\s*(.*)$/.exec(text);
    if (!match) continue;
    const name = match[1] as string;
    settings.set(name.toLowerCase(), { name, value: (match[2] ?? '').trim(), line });
  }
  return { path, settings };
}

/**
 * A data set (opendkim(8) "DATA SETS"): "file:PATH" or a value starting with "/" or "./" is a
 * file of "key value" lines; "refile:PATH" a file of wildcard patterns; "csl:" or any other
 * value without a scheme a comma- or space-separated list. db:, dsn:, ldap: … are not read.
 * Relative paths are taken relative to the configuration file's directory.
 */
export async function readDataset(value: string, configPath: string): Promise<Dataset> {
  const scheme = /^([a-z]+):/.exec(value)?.[1];
  const fileOf = (rest: string) => (isAbsolute(rest) ? rest : resolve(dirname(configPath), rest));
  if (scheme === 'file' || (scheme === undefined && /^\.{0,2}\//.test(value))) {
    const path = fileOf(scheme === 'file' ? value.slice('file:'.length) : value);
    return { kind: 'file', path, entries: entriesOf(await readBounded(path)) };
  }
  if (scheme === 'refile') {
    const path = fileOf(value.slice('refile:'.length));
    return { kind: 'refile', path, entries: entriesOf(await readBounded(path)) };
  }
  if (scheme === 'csl' || scheme === undefined) {
    const list = scheme === 'csl' ? value.slice('csl:'.length) : value;
    return { kind: 'list', entries: list.split(/[\s,]+/).filter(Boolean).map((key) => ({ key, value: '', line: 0 })) };
  }
  return { kind: 'unsupported', scheme };
}

function entriesOf(text: string): DatasetEntry[] {
  return meaningfulLines(text).map(({ text: content, line }) => {
    const match = /^(\S+)\s*(.*)$/.exec(content);
    return { key: match?.[1] ?? content, value: (match?.[2] ?? '').trim(), line };
  });
}

/** opendkim.conf(5) Boolean: "True", "Yes", "1" (any case) are true. */
export function isTrue(value: string): boolean {
  return /^(true|yes|1)$/i.test(value.trim());
}

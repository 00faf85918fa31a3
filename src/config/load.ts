// Loading a config: YAML file + environment overrides → validated, frozen Config.
// Owns: turning YAML and schema failures into ConfigErrors that name the key path, and naming
// the file a config came from in front of them (inConfigFile).
// Must not: touch keys or certificates (validate.ts), or start anything.

import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { isMap, isScalar, isSeq, parseDocument, type Document } from 'yaml';
import type { z } from 'zod';
import { ConfigError } from '../errors.ts';
import { configSchema, type Config } from './schema.ts';

export const DEFAULT_CONFIG_PATH = 'config/sello.yaml';

/**
 * Environment overrides for container use: each names one key path. Applied after the file,
 * before validation, so a bad value is reported under its key path like any other.
 */
export const ENVIRONMENT_OVERRIDES: Record<string, string[]> = {
  SELLO_HOSTNAME: ['hostname'],
  SELLO_RELAY_TARGET: ['relay', 'target'],
  SELLO_KEYS_DIR: ['signing', 'keysDir'],
  SELLO_LOG_LEVEL: ['logging', 'level'],
  // A container's metrics port must listen beyond loopback for Prometheus to scrape it.
  SELLO_METRICS_LISTEN: ['metrics', 'listen'],
};

/** "listeners[0].tls.cert" from ["listeners", 0, "tls", "cert"]. */
export function formatPath(segments: readonly PropertyKey[]): string {
  return segments
    .map((segment, index) => {
      if (typeof segment === 'number') return `[${segment}]`;
      const name = String(segment);
      // Keys that are not identifiers (signing domains) are quoted: signing.domains["example.com"].
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) return `[${JSON.stringify(name)}]`;
      return `${index ? '.' : ''}${name}`;
    })
    .join('');
}

function issueToError(issue: z.core.$ZodIssue): ConfigError {
  if (issue.code === 'unrecognized_keys') {
    const [first] = issue.keys;
    return new ConfigError(formatPath([...issue.path, first ?? '']), `unknown key${issue.keys.length > 1 ? ` (also: ${issue.keys.slice(1).join(', ')})` : ''}`);
  }
  if (issue.code === 'invalid_key') {
    // A record key (signing domain) failed: say why, under the key itself.
    const [inner] = issue.issues;
    return new ConfigError(formatPath(issue.path), inner?.message ?? issue.message);
  }
  return new ConfigError(formatPath(issue.path), issue.message);
}

/** All problems of a config, first one as the error, the rest listed in its message. */
export class ConfigErrors extends ConfigError {
  readonly errors: readonly ConfigError[];
  constructor(errors: ConfigError[]) {
    const [first] = errors as [ConfigError, ...ConfigError[]];
    super(first.path, first.message.slice(first.path ? first.path.length + 2 : 0));
    this.errors = errors;
    if (errors.length > 1) this.message = errors.map((error) => error.message).join('\n');
  }
}

function setPath(target: Record<string, unknown>, keys: string[], value: string): void {
  let node = target;
  for (const key of keys.slice(0, -1)) {
    if (typeof node[key] !== 'object' || node[key] === null) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[keys.at(-1) as string] = value;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

/** Validates an already-parsed object (file contents with overrides applied). */
export function parseConfig(input: unknown, environment: NodeJS.ProcessEnv = {}): Config {
  const raw: Record<string, unknown> = input && typeof input === 'object' ? structuredClone(input as Record<string, unknown>) : {};
  if (input !== null && input !== undefined && (typeof input !== 'object' || Array.isArray(input))) {
    throw new ConfigError('', 'the config must be a YAML mapping of keys');
  }
  for (const [variable, keys] of Object.entries(ENVIRONMENT_OVERRIDES)) {
    const value = environment[variable];
    if (value !== undefined && value !== '') setPath(raw, keys, value);
  }
  const result = configSchema.safeParse(raw);
  if (!result.success) throw new ConfigErrors(result.error.issues.map(issueToError));
  return deepFreeze(result.data);
}

/** Reads and validates a YAML config file; relative paths in it stay relative to the cwd. */
export async function loadConfig(file: string, environment: NodeJS.ProcessEnv = {}): Promise<Config> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw fileNamed(new ConfigError('', `cannot read config file ${path.resolve(file)}: ${(error as NodeJS.ErrnoException).code ?? error}`));
  }
  const document = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (document.errors.length) {
    const [first] = document.errors;
    throw fileNamed(new ConfigError('', `${file}: YAML error: ${first?.message ?? 'unparseable'}`));
  }
  keepSelectorDigits(document);
  return inConfigFile(file, () => parseConfig(document.toJS(), environment));
}

/** Errors whose message names the config file already. */
const namedFile = new WeakSet<Error>();

function fileNamed(error: ConfigError): ConfigError {
  namedFile.add(error);
  return error;
}

/**
 * Runs `work` (loading, validating or starting from the config in `file`); a ConfigError it throws
 * gets the file in front of its key path, each line of a ConfigErrors list too:
 * "/etc/sello/sello.yaml: listeners: at least one listener is needed". Errors that name a file of
 * their own (a rotation.yaml, path with "/") and errors already named are passed on as they are.
 */
export async function inConfigFile<T>(file: string, work: () => T | Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    if (!(error instanceof ConfigError) || namedFile.has(error) || error.path.includes('/')) throw error;
    const lines = error instanceof ConfigErrors ? error.errors.map((each) => each.message) : [error.message];
    error.message = lines.map((line) => `${file}: ${line}`).join('\n');
    namedFile.add(error);
    throw error;
  }
}

/**
 * YAML reads an unquoted selector such as keygen's default `202611` as a number, and `0123` as
 * 123. Selectors are names: a numeric scalar in a selector position becomes its source text.
 */
function keepSelectorDigits(document: Document): void {
  const asWritten = (node: unknown) => {
    if (isScalar(node) && typeof node.value === 'number' && typeof node.source === 'string') node.value = node.source;
  };
  const domains = document.getIn(['signing', 'domains'], true);
  if (isMap(domains)) {
    for (const pair of domains.items) {
      if (isSeq(pair.value)) pair.value.items.forEach(asWritten);
      else asWritten(pair.value);
    }
  }
  asWritten(document.getIn(['inbound', 'arc', 'seal', 'selector'], true));
}

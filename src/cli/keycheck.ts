// `sello keycheck [<domain> [<selector>]]`: compare each local DKIM key with the TXT record
// published at <selector>._domainkey.<domain>, through sello's own resolver, and say for each
// whether it is ok, missing, mismatched, revoked, or could not be checked (DNS error).
// Owns: this command's flags, reading DKIM key records (RFC 6376 §3.6.1, RFC 8463 §4.2) for the
// comparison, its output and exit codes.
// Must not: change key files or DNS, judge anything but the key record, or call process.exit.

import { createPublicKey } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { loadConfig } from '../config/load.ts';
import { parseDuration } from '../config/schema.ts';
import { createResolver, type DnsServerAddress } from '../dns/resolver.ts';
import { KeyError, UsageError } from '../errors.ts';
import { keyPath, loadKey, recordName, validateDomain, validateSelector, type KeyAlgorithm, type LoadedKey } from '../signing/keys.ts';
import { SigningTable } from '../signing/table.ts';
import { configPath } from './config-path.ts';
import { asUsage, parseCommandArgs, parseDnsServerFlag } from './args.ts';
import type { CliIo, Command } from './io.ts';

export const keycheckUsage = `usage: sello keycheck [<domain> [<selector>]] [options]

Looks up <selector>._domainkey.<domain> (TXT) for every local key and compares the published
public key with it. The keys are those of the config's signing table, or with --keys-dir and no
--config every <keys-dir>/<domain>/<selector>.pem; <domain> and <selector> narrow them down.

states:
  ok        the record carries this key (k= and p= match)
  missing   no TXT record at the name, or none that is a DKIM key record
  mismatch  p= or k= differ from the local key, or several key records compete
  revoked   the record has an empty p= (RFC 6376 §3.6.1)
  error     the lookup failed (DNS timeout, SERVFAIL) or the local key cannot be read

options:
  --config FILE       the config whose signing table and signing.keysDir to use
                      (default: $SELLO_CONFIG, /etc/sello/sello.yaml or config/sello.yaml, unless --keys-dir)
  --keys-dir DIR      without --config: check every key under DIR; with it: read keys from DIR
  --dns HOST:PORT     a recursive DNS server ("[v6]:port" for IPv6; a bare address means port
                      53); repeat for several. Default: the config's dns.servers, else the
                      nameservers of /etc/resolv.conf
  --timeout DURATION  per query and server, e.g. 5s (default: the config's dns.timeout, or 5s)
  --format F          text (default) or json (one object: {"ok": …, "keys": […]})
  -h, --help          show this help

exit status:
  0   every key checked is ok
  1   any other state, no key to check, or a bad config or key directory
  2   bad usage
`;

export type KeyState = 'ok' | 'missing' | 'mismatch' | 'revoked' | 'error';

export interface KeyCheck {
  domain: string;
  selector: string;
  /** The owner name looked up, without the final dot. */
  name: string;
  path: string;
  /** The local key's algorithm and RSA size; absent when the key could not be read. */
  algorithm?: KeyAlgorithm;
  bits?: number;
  state: KeyState;
  /** Why the state is what it is; empty for a plain ok. */
  detail: string;
  /** Things worth knowing that do not change the state (other TXT records, testing mode …). */
  notes: string[];
  /** The TXT records found at the name, each one's character-strings joined. */
  published: string[];
}

const DEFAULT_QUERY_TIMEOUT_MS = 5000;

export const keycheckCommand: Command = async (args, io) => {
  const options = parseKeycheckArgs(args);
  if (options === 'help') {
    io.stdout(keycheckUsage);
    return 0;
  }
  const { keys, servers, timeoutMs, source } = await localKeys(options, io);
  if (keys.length === 0) {
    const wanted = options.domain === undefined ? '' : ` for ${options.domain}${options.selector === undefined ? '' : ` selector ${options.selector}`}`;
    io.stderr(`sello keycheck: no key${wanted} in ${source}\n`);
    return 1;
  }
  const resolver = createResolver({ servers, timeoutMs, cache: { maxEntries: 0, maxTtlSeconds: 0 } });
  const checks = await Promise.all(keys.map((key) => checkKey(key, resolver.resolve)));

  if (options.format === 'json') {
    io.stdout(`${JSON.stringify({ ok: checks.every((check) => check.state === 'ok'), keys: checks })}\n`);
  } else {
    io.stdout(formatText(checks));
  }
  return checks.every((check) => check.state === 'ok') ? 0 : 1;
};

interface KeycheckOptions {
  domain: string | undefined;
  selector: string | undefined;
  config: string | undefined;
  keysDir: string | undefined;
  dns: DnsServerAddress[] | undefined;
  timeoutMs: number | undefined;
  format: 'text' | 'json';
}

function parseKeycheckArgs(args: string[]): KeycheckOptions | 'help' {
  const parsed = parseCommandArgs('keycheck', {
      args,
      allowPositionals: true,
      options: {
        config: { type: 'string' },
        'keys-dir': { type: 'string' },
        dns: { type: 'string', multiple: true },
        timeout: { type: 'string' },
        format: { type: 'string' },
      },
    });
  const { values, positionals } = parsed;
  if (values.help) return 'help';
  if (positionals.length > 2) {
    throw new UsageError(`expected at most a domain and a selector, got ${String(positionals.length)} arguments (see sello keycheck --help)`);
  }
  const format = values.format ?? 'text';
  if (format !== 'text' && format !== 'json') throw new UsageError(`--format must be text or json, not ${JSON.stringify(format)}`);
  if (values['keys-dir'] === '') throw new UsageError('--keys-dir must not be empty');
  let timeoutMs: number | undefined;
  if (values.timeout !== undefined) {
    timeoutMs = parseDuration(values.timeout);
    if (timeoutMs === undefined || timeoutMs <= 0) {
      throw new UsageError(`--timeout must be a duration such as 5s or 500ms, not ${JSON.stringify(values.timeout)}`);
    }
  }
  const [domain, selector] = positionals;
  return {
    domain: domain === undefined ? undefined : asUsage(() => validateDomain(domain)),
    selector: selector === undefined ? undefined : asUsage(() => validateSelector(selector)),
    config: values.config,
    keysDir: values['keys-dir'],
    dns: values.dns?.map(parseDnsServerFlag),
    timeoutMs,
    format,
  };
}

type LocalKey = { domain: string; selector: string; path: string };

/** The keys to check, the DNS servers and the per-query timeout to use, and where the keys came from. */
async function localKeys(
  options: KeycheckOptions,
  io: CliIo,
): Promise<{ keys: LocalKey[]; servers: DnsServerAddress[]; timeoutMs: number; source: string }> {
  const matches = (domain: string, selector: string): boolean =>
    (options.domain === undefined || options.domain === domain) && (options.selector === undefined || options.selector === selector);

  if (options.keysDir !== undefined && options.config === undefined) {
    const keysDir = options.keysDir;
    const keys = (await scanKeysDir(keysDir, options.domain, io)).filter((key) => matches(key.domain, key.selector));
    return { keys, servers: options.dns ?? [], timeoutMs: options.timeoutMs ?? DEFAULT_QUERY_TIMEOUT_MS, source: keysDir };
  }

  const file = configPath(options.config, io.env);
  const config = await loadConfig(file, io.env);
  const keysDir = options.keysDir ?? config.signing.keysDir;
  const seen = new Set<string>();
  const keys: LocalKey[] = [];
  // A "*.example.com" entry signs with d=example.com (signing/table.ts), so its record lives
  // under example.com; the same pair listed twice is looked up once.
  for (const { domain, selector } of new SigningTable(config.signing.domains).keys()) {
    if (!matches(domain, selector) || seen.has(`${domain}/${selector}`)) continue;
    seen.add(`${domain}/${selector}`);
    keys.push({ domain, selector, path: keyPath(keysDir, domain, selector) });
  }
  return {
    keys,
    servers: options.dns ?? [...config.dns.servers],
    timeoutMs: options.timeoutMs ?? config.dns.timeout,
    source: `the signing table of ${file}`,
  };
}

/**
 * Every <keysDir>/<domain>/<selector>.pem, sorted. Entries that cannot be a key (other names,
 * Kubernetes' "..data" links of a Secret volume) are passed over; a non-.pem-looking file inside
 * a domain directory is mentioned on stderr. Symbolic links are followed (Secret volumes).
 */
async function scanKeysDir(keysDir: string, onlyDomain: string | undefined, io: CliIo): Promise<LocalKey[]> {
  const keys: LocalKey[] = [];
  let domains: string[];
  try {
    domains = onlyDomain === undefined ? (await readdir(keysDir)).sort() : [onlyDomain];
  } catch (error) {
    throw new KeyError(keysDir, `cannot read the key directory: ${describe(error)}`);
  }
  for (const domain of domains) {
    if (domain.startsWith('.') || !isCanonical(domain, validateDomain)) continue;
    const directory = join(keysDir, domain);
    let files: string[];
    try {
      if (!(await stat(directory)).isDirectory()) continue;
      files = (await readdir(directory)).sort();
    } catch (error) {
      if (onlyDomain !== undefined && errorCode(error) === 'ENOENT') continue; // reported as "no key for …"
      throw new KeyError(directory, `cannot read the key directory: ${describe(error)}`);
    }
    for (const file of files) {
      if (file.startsWith('.')) continue;
      const selector = file.endsWith('.pem') ? file.slice(0, -'.pem'.length) : undefined;
      if (selector === undefined || !isCanonical(selector, validateSelector)) {
        io.stderr(`sello keycheck: skipping ${join(directory, file)}: not named <selector>.pem (lower-case selector)\n`);
        continue;
      }
      keys.push({ domain, selector, path: join(directory, file) });
    }
  }
  return keys;
}

/** True when `name` is valid and already in the form sello writes (lower-case A-labels). */
function isCanonical(name: string, validate: (name: string) => string): boolean {
  try {
    return validate(name) === name;
  } catch {
    return false;
  }
}

type Resolve = (name: string, rrtype: string) => Promise<unknown>;

/** Checks one local key against DNS. Never throws for a DNS or key problem: that is a state. */
export async function checkKey(local: LocalKey, resolve: Resolve): Promise<KeyCheck> {
  const name = recordName(local.domain, local.selector);
  const base = { domain: local.domain, selector: local.selector, name, path: local.path, notes: [] as string[], published: [] as string[] };
  let key: LoadedKey;
  try {
    key = await loadKey(local.path);
  } catch (error) {
    if (!(error instanceof KeyError)) throw error;
    return { ...base, state: 'error', detail: `local key: ${error.message}` };
  }
  const described = { ...base, algorithm: key.algorithm, ...(key.bits === undefined ? {} : { bits: key.bits }) };

  let answer: unknown;
  try {
    answer = await resolve(name, 'TXT');
  } catch (error) {
    const code = errorCode(error);
    if (code === 'ENOTFOUND') return { ...described, state: 'missing', detail: 'no such name (NXDOMAIN)' };
    if (code === 'ENODATA') return { ...described, state: 'missing', detail: 'no TXT record at the name (NODATA)' };
    return { ...described, state: 'error', detail: `DNS lookup failed (${code ?? describe(error)}); try again or check --dns` };
  }
  // RFC 6376 §3.6.2.2: the character-strings of one TXT record are concatenated with no
  // intervening whitespace before use.
  const published = (answer as string[][]).map((strings) => strings.join(''));
  return { ...described, published, ...judge(published, key) };
}

type Judgement = Pick<KeyCheck, 'state' | 'detail' | 'notes'>;

/** The state of a key given every TXT record at its name. */
export function judge(published: readonly string[], key: Pick<LoadedKey, 'algorithm' | 'privateKey'>): Judgement {
  const notes: string[] = [];
  const keyRecords: { tags: Map<string, string> }[] = [];
  const invalid: string[] = [];
  for (const text of published) {
    const record = parseKeyRecord(text);
    if (record.kind === 'other') continue;
    if (record.kind === 'invalid') invalid.push(record.reason);
    else keyRecords.push(record);
  }
  const others = published.length - keyRecords.length - invalid.length;
  if (others > 0) notes.push(`${others} other TXT record(s) at the name (not DKIM key records, ignored)`);

  if (keyRecords.length === 0 && invalid.length === 0) {
    return { state: 'missing', detail: `${published.length} TXT record(s) at the name, none a DKIM key record`, notes };
  }
  const verdicts: Judgement[] = [
    ...invalid.map((reason): Judgement => ({ state: 'mismatch', detail: `invalid key record: ${reason}`, notes: [] })),
    ...keyRecords.map((record) => compare(record.tags, key)),
  ];
  for (const verdict of verdicts) notes.push(...verdict.notes);
  const [only] = verdicts;
  if (verdicts.length === 1 && only) return { state: only.state, detail: only.detail, notes };

  // RFC 6376 §3.6.2.2: "if there are multiple records in an RRset, the results are undefined":
  // a verifier may use any of them, so this is fine only when every one carries our key.
  const several = `${verdicts.length} DKIM key records at the name (RFC 6376 §3.6.2.2: the result is undefined, verifiers may use any)`;
  if (verdicts.every((verdict) => verdict.state === 'ok')) {
    notes.unshift(`${several}; all carry this key`);
    return { state: 'ok', detail: '', notes };
  }
  if (verdicts.every((verdict) => verdict.state === 'revoked')) return { state: 'revoked', detail: `${several}, all revoked`, notes };
  const each = verdicts.map((verdict) => (verdict.state === 'ok' ? 'ok' : `${verdict.state} (${verdict.detail})`)).join('; ');
  return { state: 'mismatch', detail: `${several}: ${each}`, notes };
}

type ParsedRecord = { kind: 'key'; tags: Map<string, string> } | { kind: 'invalid'; reason: string } | { kind: 'other' };

/**
 * One TXT record as a DKIM key record (RFC 6376 §3.6.1, tag-list syntax §3.2). A record that
 * starts with v= of another value is not ours to judge ("MUST be discarded"); one without v=
 * counts as a key record when it has a p= tag (v= is only RECOMMENDED).
 */
export function parseKeyRecord(text: string): ParsedRecord {
  const tags = new Map<string, string>();
  const order: string[] = [];
  let syntaxError: string | undefined;
  // RFC 6376 §3.2: tag-spec = [FWS] tag-name [FWS] "=" [FWS] tag-value [FWS], separated by ";",
  // with an optional final ";".
  for (const spec of text.split(';')) {
    if (spec.trim() === '') continue;
    const equals = spec.indexOf('=');
    const tagName = equals === -1 ? '' : spec.slice(0, equals).trim();
    if (!/^[A-Za-z][A-Za-z0-9_]*$/.test(tagName)) {
      syntaxError ??= `${JSON.stringify(spec.trim())} is not a tag=value pair`;
      continue;
    }
    // Tag names are case-sensitive (§3.2); a duplicate makes the whole tag-list invalid.
    if (tags.has(tagName)) syntaxError ??= `the ${tagName}= tag occurs twice`;
    tags.set(tagName, spec.slice(equals + 1).trim());
    order.push(tagName);
  }
  const version = tags.get('v');
  if (version !== undefined && version !== 'DKIM1') {
    // §3.6.1: "Records beginning with a "v=" tag with any other value MUST be discarded."
    return order[0] === 'v' ? { kind: 'other' } : { kind: 'invalid', reason: `v=${version} is not DKIM1` };
  }
  if (version === undefined && !tags.has('p')) return { kind: 'other' };
  if (syntaxError !== undefined) return { kind: 'invalid', reason: syntaxError };
  if (version !== undefined && order[0] !== 'v') return { kind: 'invalid', reason: 'v=DKIM1 must be the first tag (RFC 6376 §3.6.1)' };
  if (!tags.has('p')) return { kind: 'invalid', reason: 'no p= tag (it is required, RFC 6376 §3.6.1)' };
  return { kind: 'key', tags };
}

/** One key record against the local key: k= (default rsa) and p=. */
function compare(tags: Map<string, string>, key: Pick<LoadedKey, 'algorithm' | 'privateKey'>): Judgement {
  const notes: string[] = [];
  // RFC 6376 §3.6.1: t=y marks a domain testing DKIM; verifiers must not treat it differently
  // from unsigned mail, so say so but do not count it as a problem.
  if ((tags.get('t') ?? '').split(':').some((flag) => flag.trim() === 'y')) notes.push('t=y: the domain is testing DKIM');
  // §3.6.1: p= is a base64string, which may contain FWS (§2.4); those spaces are not part of the key.
  const p = (tags.get('p') ?? '').replace(/[\t\r\n ]+/g, '');
  if (p === '') return { state: 'revoked', detail: 'p= is empty: the key is revoked (RFC 6376 §3.6.1)', notes };

  const published = (tags.get('k') ?? 'rsa').toLowerCase(); // k= defaults to rsa (§3.6.1)
  if (published !== key.algorithm) {
    return { state: 'mismatch', detail: `k=${published} is published, the local key is ${key.algorithm}`, notes };
  }
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(p) || p.length % 4 !== 0) {
    return { state: 'mismatch', detail: 'p= is not valid base64', notes };
  }
  const bytes = Buffer.from(p, 'base64');
  const publicKey = createPublicKey(key.privateKey);
  if (key.algorithm === 'ed25519') {
    // RFC 8463 §4.2: p= is the raw 32-byte Ed25519 public key, not a SubjectPublicKeyInfo.
    const raw = Buffer.from(publicKey.export({ format: 'jwk' }).x ?? '', 'base64url');
    if (bytes.equals(raw)) return { state: 'ok', detail: '', notes };
    const spki = publicKey.export({ type: 'spki', format: 'der' });
    if (bytes.equals(spki)) {
      return { state: 'mismatch', detail: 'p= holds this key as SubjectPublicKeyInfo; RFC 8463 §4.2 needs the raw 32-byte key', notes };
    }
    return { state: 'mismatch', detail: 'p= is a different public key', notes };
  }
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  if (bytes.equals(spki)) return { state: 'ok', detail: '', notes };
  // RFC 6376 §3.6.1 names RSAPublicKey (PKCS#1) while practice is SubjectPublicKeyInfo; common
  // verifiers take both, so a PKCS#1 record of this key is ok, with a note.
  if (bytes.equals(publicKey.export({ type: 'pkcs1', format: 'der' }))) {
    notes.push('p= is a PKCS#1 RSAPublicKey; most records use SubjectPublicKeyInfo (what sello dns-record prints)');
    return { state: 'ok', detail: '', notes };
  }
  return { state: 'mismatch', detail: 'p= is a different public key', notes };
}

function formatText(checks: readonly KeyCheck[]): string {
  const width = Math.max(...checks.map((check) => check.name.length));
  const lines: string[] = [];
  for (const check of checks) {
    const algorithm = check.algorithm === undefined ? '' : check.bits === undefined ? check.algorithm : `${check.algorithm}-${String(check.bits)}`;
    const head = `${check.state.padEnd(8)} ${check.name.padEnd(width)}  ${algorithm.padEnd(9)}`;
    lines.push(`${head}${check.detail === '' ? '' : `  ${check.detail}`}`.trimEnd());
    for (const note of check.notes) lines.push(`         note: ${note}`);
    if (check.state === 'missing' || check.state === 'mismatch') {
      const keysDir = dirname(dirname(check.path));
      const flag = keysDir === 'keys' ? '' : ` --keys-dir ${keysDir}`;
      lines.push(`         publish the record printed by: sello dns-record ${check.domain} ${check.selector}${flag}`);
    }
  }
  const counts = (['ok', 'missing', 'mismatch', 'revoked', 'error'] as const)
    .map((state) => [state, checks.filter((check) => check.state === state).length] as const)
    .filter(([, count]) => count > 0)
    .map(([state, count]) => `${String(count)} ${state}`);
  lines.push(`${String(checks.length)} key(s): ${counts.join(', ')}`);
  return `${lines.join('\n')}\n`;
}

function errorCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string' ? error.code : undefined;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

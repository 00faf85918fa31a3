// `sello keycheck [<domain> [<selector>]]`: compare each local DKIM key with the TXT record
// published at <selector>._domainkey.<domain>, through sello's own resolver, and say for each
// whether it is ok, missing, mismatched, revoked, or could not be checked (DNS error).
// Owns: this command's flags, which keys to check, its output and exit codes; the judgement itself
// is signing/key-check.ts, shared with the rotation gate.
// Must not: change key files or DNS, judge anything but the key record, or call process.exit.

import { readdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { loadConfig } from '../config/load.ts';
import { parseDuration } from '../config/schema.ts';
import { createResolver, type DnsServerAddress } from '../dns/resolver.ts';
import { KeyError, UsageError } from '../errors.ts';
import { checkKey, type KeyCheck, type LocalKey } from '../signing/key-check.ts';
import { validateDomain, validateSelector } from '../signing/keys.ts';
import { DEFAULT_ROTATION_TIMING, readRotation, removableFrom, ROTATION_FILE, rotatedSigningDomains, type RotationKey, type RotationKeyState, type RotationTiming } from '../signing/rotation.ts';
import { signingKeyPath } from '../signing/key-store.ts';
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
  mismatch  p= or k= differ from the local key, s= excludes email, h= excludes sha256, or
            several key records compete (t=y, t=s and n= are shown as notes)
  revoked   the record has an empty p= (RFC 6376 §3.6.1)
  error     the lookup failed (DNS timeout, SERVFAIL) or the local key cannot be read

A domain with keys/<domain>/rotation.yaml (sello rotate) also has its pending and retiring keys
checked, each with a "rotation:" line: a pending key is used only once its record is ok; a retiring
key's record must stay until its last signature + signing.expiry + signing.rotation.retireMargin,
and should be removed or revoked (p=) after that.

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
  0   every key checked is ok (a retiring key past its removal time may be in any state)
  1   any other state, a retiring record gone too early, no key to check, or a bad config,
      key directory or rotation.yaml
  2   bad usage
`;

export { checkKey, judge, parseKeyRecord, type KeyCheck, type KeyState } from '../signing/key-check.ts';

const DEFAULT_QUERY_TIMEOUT_MS = 5000;

/** A key's place in a rotation (keys/<domain>/rotation.yaml), with what to do about it. */
export interface RotationAdvice {
  state: RotationKeyState;
  since?: string;
  /** Retiring keys: from when the record may be removed (last signature + signing.expiry + margin). */
  recordRemovableFrom?: string;
  advice: string;
  /** Whether this key needs the admin's attention (sets the exit status). */
  problem: boolean;
}

export type RotatingKeyCheck = KeyCheck & { rotation?: RotationAdvice };

export const keycheckCommand: Command = (args, io) => createKeycheckCommand()(args, io);

/** keycheck with an injected clock (retirement times). */
export function createKeycheckCommand(now: () => Date = () => new Date()): Command {
  return async (args, io) => {
    const options = parseKeycheckArgs(args);
    if (options === 'help') {
      io.stdout(keycheckUsage);
      return 0;
    }
    const { keys, servers, timeoutMs, source, keysDir, timing, confirmations } = await localKeys(options, io);
    if (keys.length === 0) {
      const wanted = options.domain === undefined ? '' : ` for ${options.domain}${options.selector === undefined ? '' : ` selector ${options.selector}`}`;
      io.stderr(`sello keycheck: no key${wanted} in ${source}\n`);
      return 1;
    }
    const resolver = createResolver({ servers, timeoutMs, cache: { maxEntries: 0, maxTtlSeconds: 0 } });
    const judged = await Promise.all(keys.map((key) => checkKey(key, resolver.resolve)));
    const checks = await withRotation(judged, keysDir, timing, confirmations, now());
    const ok = checks.every((check) => !isProblem(check));

    if (options.format === 'json') {
      io.stdout(`${JSON.stringify({ ok, keys: checks })}\n`);
    } else {
      io.stdout(formatText(checks));
    }
    return ok ? 0 : 1;
  };
}

function isProblem(check: RotatingKeyCheck): boolean {
  return check.rotation ? check.rotation.problem : check.state !== 'ok';
}

/** Adds each key's rotation state from its domain's rotation.yaml (keys without one are unchanged). */
async function withRotation(checks: KeyCheck[], keysDir: string, timing: RotationTiming, confirmations: string, at: Date): Promise<RotatingKeyCheck[]> {
  const files = new Map<string, Map<string, RotationKey> | undefined>();
  for (const domain of new Set(checks.map((check) => check.domain))) {
    const read = await readRotation(keysDir, domain);
    files.set(domain, read ? new Map(read.state.keys.map((key) => [key.selector, key])) : undefined);
  }
  return checks.map((check) => {
    const key = files.get(check.domain)?.get(check.selector);
    return key ? { ...check, rotation: adviseRotation(check, key, timing, confirmations, at) } : check;
  });
}

/** What the admin should know and do about a key in a rotation. */
export function adviseRotation(check: KeyCheck, key: RotationKey, timing: RotationTiming, confirmations: string, at: Date): RotationAdvice {
  const since = key.since?.toISOString();
  const base = { state: key.state, ...(since ? { since } : {}) };
  if (key.state === 'active') return { ...base, advice: 'active: signs', problem: check.state !== 'ok' };
  if (key.state === 'pending') {
    if (check.state === 'ok') {
      return { ...base, advice: `pending: its record is published; the server switches to it after seeing it ${confirmations}`, problem: false };
    }
    return { ...base, advice: `pending: not used while its record is ${check.state}; publish the record printed by sello dns-record ${check.domain} ${check.selector}`, problem: true };
  }
  const from = removableFrom(key, timing);
  const removable = from?.toISOString();
  const retiring = { ...base, ...(removable ? { recordRemovableFrom: removable } : {}) };
  if (from !== undefined && at < from) {
    // RFC 6376 §3.5 x=: signatures made until `since` may be verified until their expiry.
    if (check.state !== 'ok') {
      return { ...retiring, advice: `retiring: its record is ${check.state} before ${removable ?? '?'}: mail signed until ${since ?? '?'} no longer verifies; publish it again`, problem: true };
    }
    return { ...retiring, advice: `retiring since ${since ?? '?'} (last signature): keep its record until ${removable ?? '?'}`, problem: false };
  }
  if (check.state === 'ok') {
    return { ...retiring, advice: `retiring: remove its record or revoke it (publish "v=DKIM1; p=") now, then run sello rotate ${check.domain} --finish`, problem: false };
  }
  return { ...retiring, advice: `retiring: its record is gone; run sello rotate ${check.domain} --finish to delete the private key`, problem: false };
}

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


/** The keys to check, the DNS servers and the per-query timeout to use, and where the keys came from. */
async function localKeys(
  options: KeycheckOptions,
  io: CliIo,
): Promise<{ keys: LocalKey[]; servers: DnsServerAddress[]; timeoutMs: number; source: string; keysDir: string; timing: RotationTiming; confirmations: string }> {
  const matches = (domain: string, selector: string): boolean =>
    (options.domain === undefined || options.domain === domain) && (options.selector === undefined || options.selector === selector);

  if (options.keysDir !== undefined && options.config === undefined) {
    const keysDir = options.keysDir;
    const keys = (await scanKeysDir(keysDir, options.domain, io)).filter((key) => matches(key.domain, key.selector));
    return {
      keys,
      servers: options.dns ?? [],
      timeoutMs: options.timeoutMs ?? DEFAULT_QUERY_TIMEOUT_MS,
      source: keysDir,
      keysDir,
      timing: DEFAULT_ROTATION_TIMING,
      confirmations: 'as signing.rotation says (default: twice, an hour apart)',
    };
  }

  const file = configPath(options.config, io.env);
  const config = await loadConfig(file, io.env);
  const keysDir = options.keysDir ?? config.signing.keysDir;
  const seen = new Set<string>();
  const keys: LocalKey[] = [];
  // A "*.example.com" entry signs with d=example.com (signing/table.ts), so its record lives
  // under example.com; the same pair listed twice is looked up once.
  // With rotation.yaml applied: a finished rotation's old selector may still be in signing.domains.
  for (const { domain, selector } of new SigningTable((await rotatedSigningDomains(config.signing.domains, keysDir)).domains).keys()) {
    if (!matches(domain, selector) || seen.has(`${domain}/${selector}`)) continue;
    seen.add(`${domain}/${selector}`);
    keys.push({ domain, selector, path: signingKeyPath(keysDir, domain, selector, config.signing) });
  }
  // A rotating domain's pending and retiring keys are checked too (rotation.yaml, docs/rotation.md).
  for (const domain of new Set(keys.map((key) => key.domain).concat(Object.keys(config.signing.domains).map((pattern) => pattern.replace(/^\*\./, ''))))) {
    for (const { selector } of (await readRotation(keysDir, domain))?.state.keys ?? []) {
      if (!matches(domain, selector) || seen.has(`${domain}/${selector}`)) continue;
      seen.add(`${domain}/${selector}`);
      keys.push({ domain, selector, path: signingKeyPath(keysDir, domain, selector, config.signing) });
    }
  }
  const { checkInterval, confirmations } = config.signing.rotation;
  return {
    keys,
    servers: options.dns ?? [...config.dns.servers],
    timeoutMs: options.timeoutMs ?? config.dns.timeout,
    source: `the signing table of ${file}`,
    keysDir,
    timing: { expiryMs: config.signing.expiry, retireMarginMs: config.signing.rotation.retireMargin },
    confirmations: `${String(confirmations)} time(s) in a row, ${String(checkInterval / 1000)} s apart`,
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
      if (file.startsWith('.') || file === ROTATION_FILE) continue;
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

function formatText(checks: readonly RotatingKeyCheck[]): string {
  const width = Math.max(...checks.map((check) => check.name.length));
  const lines: string[] = [];
  for (const check of checks) {
    const algorithm = check.algorithm === undefined ? '' : check.bits === undefined ? check.algorithm : `${check.algorithm}-${String(check.bits)}`;
    const head = `${check.state.padEnd(8)} ${check.name.padEnd(width)}  ${algorithm.padEnd(9)}`;
    lines.push(`${head}${check.detail === '' ? '' : `  ${check.detail}`}`.trimEnd());
    for (const note of check.notes) lines.push(`         note: ${note}`);
    if (check.rotation) lines.push(`         rotation: ${check.rotation.advice}`);
    if ((check.state === 'missing' || check.state === 'mismatch') && check.rotation?.state !== 'retiring') {
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

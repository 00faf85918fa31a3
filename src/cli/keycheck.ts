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
import { keyPath, validateDomain, validateSelector } from '../signing/keys.ts';
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
                      (default: $SELLO_CONFIG or config/sello.yaml, unless --keys-dir is given)
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

export { checkKey, judge, parseKeyRecord, type KeyCheck, type KeyState } from '../signing/key-check.ts';

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

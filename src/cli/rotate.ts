// `sello rotate <domain>`: make the next DKIM key(s) of a domain as pending in rotation.yaml and
// print the record(s) to publish; the server promotes them once DNS serves them. `--promoted`
// records in a copy of the keys the servers cannot write (a Kubernetes Secret's source) that they
// switched; `--finish` removes retiring keys whose record may go (or with --force, at once).
// Owns: this command's flags, the default selector and algorithm of the next key, output.
// Must not: promote a key whose record keycheck does not judge ok, overwrite a key, change DNS,
// or call process.exit.

import { createPrivateKey } from 'node:crypto';
import { readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { loadConfig } from '../config/load.ts';
import { createResolver, type DnsServerAddress } from '../dns/resolver.ts';
import { KeyError, UsageError } from '../errors.ts';
import {
  dnsRecordValue,
  formatRecord,
  generateKey,
  keyPath,
  loadKey,
  validateSelector,
  writeKey,
  type KeyAlgorithm,
  type RecordFormat,
} from '../signing/keys.ts';
import { checkKey } from '../signing/key-check.ts';
import { DEFAULT_ROTATION_TIMING, promote, readRotation, removableFrom, rotationPath, writeRotation, type RotationKey, type RotationState, type RotationTiming } from '../signing/rotation.ts';
import { algorithmFlag, asUsage, onlyDomain, parseCommandArgs, parseDnsServerFlag, recordFormatFlag } from './args.ts';
import { configPath } from './config-path.ts';
import { keysDirLine } from './keys-dir.ts';
import type { CliIo, Command } from './io.ts';
import { defaultSelector } from './keygen.ts';

export const rotateUsage = `usage: sello rotate <domain> [options]
       sello rotate <domain> --promoted [options]
       sello rotate <domain> --finish [--force] [options]

Makes the next DKIM key(s) of <domain>, marks them pending in <keys-dir>/<domain>/rotation.yaml
and prints the TXT record(s) to publish. The current keys keep signing; the running server
switches to the new key by itself once its own resolver has seen the published record, judged ok
as by sello keycheck, signing.rotation.confirmations times in a row, signing.rotation.checkInterval
apart (default: twice, an hour apart). No restart. The old key is then retiring: sello keycheck
says from when its record may be removed.

options:
  --algorithm A       rsa, ed25519 or both (selectors S-rsa and S-ed25519); default: the
                      algorithms of the active keys (rsa when there are none)
  --selector S        selector of the new key (default: year and month in UTC, e.g. 202612;
                      year, month and day when that is taken)
  --format F          bind (default), value or json: how the record is printed
  --promoted          record in rotation.yaml that the servers switched to the pending key(s),
                      for a keys directory they cannot write (the source of a Kubernetes
                      Secret): only when keycheck judges the record ok; the old key's last
                      signature is taken as now
  --dns HOST:PORT     with --promoted: the DNS server to ask (default: the config's dns.servers,
                      else /etc/resolv.conf)
  --finish            remove the private keys of retiring keys whose record may be removed
                      (last signature + signing.expiry + signing.rotation.retireMargin)
  --force             with --finish: remove them even before that time
  --config FILE       the config whose signing.keysDir, signing table and expiry to use
                      (default: $SELLO_CONFIG, /etc/sello/sello.yaml or config/sello.yaml, unless --keys-dir)
  --keys-dir DIR      without --config: the key directory (the active keys are then the .pem
                      files of <domain> when there is no rotation.yaml yet)
  -h, --help          show this help
`;

export function createRotateCommand(now: () => Date = () => new Date()): Command {
  return async (args, io) => {
    const options = parseRotateArgs(args);
    if (options === 'help') {
      io.stdout(rotateUsage);
      return 0;
    }
    const context = await rotationContext(options, io);
    if (options.finish) return finish(context, options.force, now(), io);
    if (options.promoted) return recordPromotion(context, options.dns ?? context.dnsServers, now(), io);
    return startRotation(context, options, now(), io);
  };
}

export const rotateCommand: Command = createRotateCommand();

interface RotateOptions {
  domain: string;
  algorithm: KeyAlgorithm | 'both' | undefined;
  selector: string | undefined;
  format: RecordFormat;
  finish: boolean;
  force: boolean;
  promoted: boolean;
  dns: DnsServerAddress[] | undefined;
  config: string | undefined;
  keysDir: string | undefined;
}

function parseRotateArgs(args: string[]): RotateOptions | 'help' {
  const { values, positionals } = parseCommandArgs('rotate', {
    args,
    allowPositionals: true,
    options: {
      algorithm: { type: 'string' },
      selector: { type: 'string' },
      format: { type: 'string' },
      finish: { type: 'boolean' },
      promoted: { type: 'boolean' },
      dns: { type: 'string', multiple: true },
      force: { type: 'boolean' },
      config: { type: 'string' },
      'keys-dir': { type: 'string' },
    },
  });
  if (values.help) return 'help';
  const domain = onlyDomain('rotate', positionals);
  const algorithm = algorithmFlag(values.algorithm);
  const format = recordFormatFlag(values.format);
  if (values.force && !values.finish) throw new UsageError('--force applies to --finish only');
  if (values.finish && (algorithm !== undefined || values.selector !== undefined)) throw new UsageError('--finish makes no key: no --algorithm or --selector');
  if (values.promoted && (values.finish || algorithm !== undefined || values.selector !== undefined)) throw new UsageError('--promoted makes no key and finishes nothing: use it alone');
  if (values.dns && !values.promoted) throw new UsageError('--dns applies to --promoted only');
  if (values['keys-dir'] === '') throw new UsageError('--keys-dir must not be empty');
  return {
    domain,
    algorithm,
    selector: values.selector === undefined ? undefined : asUsage(() => validateSelector(values.selector ?? '')),
    format,
    finish: values.finish ?? false,
    force: values.force ?? false,
    promoted: values.promoted ?? false,
    dns: values.dns?.map(parseDnsServerFlag),
    config: values.config,
    keysDir: values['keys-dir'],
  };
}

interface RotationContext {
  domain: string;
  keysDir: string;
  timing: RotationTiming;
  /** The config's dns.servers; empty: /etc/resolv.conf. */
  dnsServers: DnsServerAddress[];
  /** The state in rotation.yaml, or the one it starts from: the active keys of today. */
  state: RotationState;
  /** The file's text as read (undefined: no file yet), so a concurrent writer is not overwritten. */
  text: string | undefined;
}

/** The keys directory, the timing and the rotation state of the domain (made up from the active keys when there is no file). */
async function rotationContext(options: RotateOptions, io: CliIo): Promise<RotationContext> {
  const { domain } = options;
  let keysDir: string;
  let timing = DEFAULT_ROTATION_TIMING;
  let dnsServers: DnsServerAddress[] = [];
  let configured: string[] | undefined;
  if (options.keysDir !== undefined && options.config === undefined) {
    keysDir = options.keysDir;
  } else {
    const file = configPath(options.config, io.env);
    const config = await loadConfig(file, io.env);
    keysDir = options.keysDir ?? config.signing.keysDir;
    if (options.keysDir === undefined) io.stderr(keysDirLine(keysDir, file));
    timing = { expiryMs: config.signing.expiry, retireMarginMs: config.signing.rotation.retireMargin };
    dnsServers = [...config.dns.servers];
    configured = Object.entries(config.signing.domains)
      .filter(([pattern]) => pattern.replace(/^\*\./, '') === domain)
      .flatMap(([, selectors]) => [selectors].flat());
  }
  const read = await readRotation(keysDir, domain);
  if (read) return { domain, keysDir, timing, dnsServers, state: read.state, text: read.text };

  // No rotation yet: today's keys are those the signing table names, or every key file.
  const selectors = configured ?? (await pemSelectors(join(keysDir, domain)));
  const keys: RotationKey[] = [];
  for (const selector of [...new Set(selectors)]) {
    const key = await loadKey(keyPath(keysDir, domain, selector));
    keys.push({ selector, state: 'active', algorithm: key.algorithm });
  }
  return { domain, keysDir, timing, dnsServers, state: { domain, keys }, text: undefined };
}

async function pemSelectors(directory: string): Promise<string[]> {
  try {
    return (await readdir(directory)).filter((file) => /^[a-z0-9][a-z0-9.-]*\.pem$/.test(file)).map((file) => file.slice(0, -'.pem'.length)).sort();
  } catch (error) {
    if (typeof error === 'object' && error !== null && 'code' in error && error.code === 'ENOENT') return [];
    throw new KeyError(directory, `cannot read the key directory: ${error instanceof Error ? error.message : String(error)}`);
  }
}

async function startRotation(context: RotationContext, options: RotateOptions, at: Date, io: CliIo): Promise<number> {
  const { domain, keysDir, state } = context;
  const pending = state.keys.filter((key) => key.state === 'pending');
  if (pending.length > 0) {
    throw new KeyError(
      rotationPath(keysDir, domain),
      `${pending.map((key) => key.selector).join(', ')} already pending: publish its record (sello dns-record ${domain} ${pending[0]?.selector ?? ''}) and let the server switch, or remove it from the file to start over`,
    );
  }
  const active = state.keys.filter((key) => key.state === 'active');
  if (active.length === 0) throw new UsageError(`${domain} has no key yet: make the first one with sello keygen ${domain} (rotate replaces a signing key)`);
  const activeAlgorithms = new Set(active.map((key) => key.algorithm ?? 'rsa'));
  const algorithm = options.algorithm ?? (activeAlgorithms.size === 2 ? 'both' : ([...activeAlgorithms][0] ?? 'rsa'));
  const algorithms: KeyAlgorithm[] = algorithm === 'both' ? ['rsa', 'ed25519'] : [algorithm];

  const taken = (base: string) => algorithms.some((each) => state.keys.some((key) => key.selector === selectorFor(base, each, algorithm === 'both')));
  let base = options.selector ?? defaultSelector(at);
  if (options.selector === undefined && taken(base)) base = `${base}${String(at.getUTCDate()).padStart(2, '0')}`;
  if (taken(base)) throw new UsageError(`selector ${base} is already in ${rotationPath(keysDir, domain)}; choose another with --selector`);

  const made: RotationKey[] = [];
  const records: string[] = [];
  for (const each of algorithms) {
    const selector = selectorFor(base, each, algorithm === 'both');
    const pem = generateKey(each);
    const path = await writeKey(keysDir, domain, selector, pem);
    made.push({ selector, state: 'pending', algorithm: each, since: at });
    records.push(formatRecord(domain, selector, dnsRecordValue(createPrivateKey(pem)), options.format));
    io.stderr(`wrote ${each} key to ${path} (pending)\n`);
  }
  const next: RotationState = { domain, keys: [...made, ...state.keys] };
  if (!(await writeRotation(keysDir, next, context.text))) {
    throw new KeyError(rotationPath(keysDir, domain), 'changed by someone else while the keys were made; run sello rotate again (the new key files are unused and may be deleted)');
  }
  for (const record of records) io.stdout(`${record}\n`);
  io.stderr(
    `Publish the record${records.length > 1 ? 's' : ''} above. ${active.map((key) => key.selector).join(', ') || 'Nothing'} keeps signing until the server has seen ` +
      `${records.length > 1 ? 'each' : 'it'} in DNS as configured (signing.rotation); then it switches by itself. Check with: sello keycheck ${domain}\n`,
  );
  return 0;
}

function selectorFor(base: string, algorithm: KeyAlgorithm, both: boolean): string {
  return both ? `${base}-${algorithm}` : base;
}

async function finish(context: RotationContext, force: boolean, at: Date, io: CliIo): Promise<number> {
  const { domain, keysDir, state, timing } = context;
  const retiring = state.keys.filter((key) => key.state === 'retiring');
  if (retiring.length === 0) {
    io.stderr(`sello rotate: no retiring key for ${domain} in ${rotationPath(keysDir, domain)}\n`);
    return 1;
  }
  const done: string[] = [];
  let waiting = false;
  for (const key of retiring) {
    const from = removableFrom(key, timing);
    if (!force && from !== undefined && at < from) {
      io.stderr(`${key.selector}: not yet; signatures made until ${key.since?.toISOString() ?? '?'} may be verified until ${from.toISOString()} (use --force to remove it anyway)\n`);
      waiting = true;
      continue;
    }
    await unlink(keyPath(keysDir, domain, key.selector)).catch((error: unknown) => {
      if (!(typeof error === 'object' && error !== null && 'code' in error && error.code === 'ENOENT')) {
        throw new KeyError(keyPath(keysDir, domain, key.selector), `cannot remove: ${error instanceof Error ? error.message : String(error)}`);
      }
    });
    done.push(key.selector);
    io.stderr(`removed ${keyPath(keysDir, domain, key.selector)}; remove its record ${key.selector}._domainkey.${domain} from DNS, or revoke it (publish "v=DKIM1; p=")\n`);
  }
  if (done.length > 0) {
    const next: RotationState = { domain, keys: state.keys.filter((key) => !done.includes(key.selector)) };
    if (!(await writeRotation(keysDir, next, context.text))) {
      throw new KeyError(rotationPath(keysDir, domain), 'changed by someone else meanwhile; run sello rotate --finish again');
    }
  }
  return waiting ? 1 : 0;
}

/**
 * --promoted: the servers promote in memory when they cannot write rotation.yaml (a read-only
 * Secret volume); this records it in the copy the Secret is made from, so keycheck can say when
 * the old record may go and restarted pods start with the new key. Only a record keycheck judges
 * ok is recorded, as the servers would; the old key's last signature is taken as now, which is no
 * earlier than the servers' own switch (pods that read the updated file switch at their next check).
 */
async function recordPromotion(context: RotationContext, servers: DnsServerAddress[], at: Date, io: CliIo): Promise<number> {
  const { domain, keysDir } = context;
  const pending = context.state.keys.filter((key) => key.state === 'pending');
  if (pending.length === 0) {
    io.stderr(`sello rotate: no pending key for ${domain} in ${rotationPath(keysDir, domain)}\n`);
    return 1;
  }
  const resolver = createResolver({ servers, timeoutMs: 5000, cache: { maxEntries: 0, maxTtlSeconds: 0 } });
  let state = context.state;
  let refused = false;
  for (const key of pending) {
    const judged = await checkKey({ domain, selector: key.selector, path: keyPath(keysDir, domain, key.selector) }, resolver.resolve);
    if (judged.state !== 'ok') {
      io.stderr(`${key.selector}: not recorded: its record is ${judged.state}${judged.detail ? ` (${judged.detail})` : ''}; the servers do not switch to it either\n`);
      refused = true;
      continue;
    }
    const algorithms = new Map<string, KeyAlgorithm>();
    for (const entry of state.keys) {
      if (entry.state !== 'retiring') algorithms.set(entry.selector, entry.algorithm ?? (await loadKey(keyPath(keysDir, domain, entry.selector))).algorithm);
    }
    state = promote(state, key.selector, (entry) => algorithms.get(entry.selector) ?? 'rsa', at);
    io.stderr(`${key.selector}: recorded as active since ${at.toISOString()}\n`);
  }
  if (state !== context.state && !(await writeRotation(keysDir, state, context.text))) {
    throw new KeyError(rotationPath(keysDir, domain), 'changed by someone else meanwhile; run sello rotate --promoted again');
  }
  return refused ? 1 : 0;
}

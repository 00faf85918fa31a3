// Runs sello in-process for component tests: a config object in, bound ports out, plus the
// keys it signs with and a mailauth resolver that serves their records (a seam for verifying
// in component tests; the interop tests use a real DNS server and independent verifiers).
// Must not: stub anything inside sello.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { startSello, type RunningSello, type StartOptions } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import type { Config } from '../../src/config/schema.ts';
import { silentLogger, type Logger } from '../../src/observability/logger.ts';
import { dnsRecordValue, generateKey, loadKey, writeKey } from '../../src/signing/keys.ts';

export interface TestKey {
  domain: string;
  selector: string;
  algorithm: 'rsa' | 'ed25519';
}

export interface TestSello {
  config: Config;
  running: RunningSello;
  keysDir: string;
  port(listener: string): number;
  /** DNS TXT records of the test keys: "sel._domainkey.dom" → value. */
  records: Map<string, string>;
  /** A resolver for mailauth's dkimVerify that serves `records`. */
  resolver: (name: string, type: string) => Promise<string[][]>;
}

/** Writes keys into a temp keys dir and returns their DNS records. */
export async function makeKeys(keys: readonly TestKey[], keysDir?: string): Promise<{ keysDir: string; records: Map<string, string> }> {
  const dir = keysDir ?? (await mkdtemp(path.join(tmpdir(), 'sello-keys-')));
  const records = new Map<string, string>();
  for (const key of keys) {
    const file = await writeKey(dir, key.domain, key.selector, generateKey(key.algorithm));
    records.set(`${key.selector}._domainkey.${key.domain}`, dnsRecordValue(await loadKey(file)));
  }
  return { keysDir: dir, records };
}

/**
 * The keys a signing table names (a `*.domain` entry's keys live under domain), once each; a
 * selector starting with "ed" gets an Ed25519 key, any other RSA — the convention of the shipped
 * example configs.
 */
export function keysForSigningTable(domains: Readonly<Record<string, string | readonly string[]>>): TestKey[] {
  const keys = Object.entries(domains).flatMap(([pattern, selectors]) =>
    [selectors].flat().map((selector): TestKey => ({ domain: pattern.replace(/^\*\./, ''), selector, algorithm: selector.startsWith('ed') ? 'ed25519' : 'rsa' })),
  );
  return [...new Map(keys.map((key) => [`${key.domain}/${key.selector}`, key])).values()];
}

export function recordsResolver(records: Map<string, string>) {
  return async (name: string, type: string): Promise<string[][]> => {
    const value = type === 'TXT' ? records.get(name.toLowerCase()) : undefined;
    if (value === undefined) throw Object.assign(new Error(`no ${type} for ${name}`), { code: 'ENOTFOUND' });
    return [[value]];
  };
}

/**
 * Starts sello with `overrides` merged over a base config (listeners on 127.0.0.1:0), keys made
 * for `keys`, signing table from them unless overridden. Stopped when the test ends.
 */
export async function startTestSello(
  t: TestContext,
  input: { keys?: TestKey[]; config: Record<string, unknown>; logger?: Logger; options?: StartOptions },
): Promise<TestSello> {
  const { keysDir, records } = await makeKeys(input.keys ?? []);
  t.after(() => rm(keysDir, { recursive: true, force: true }));
  const domains: Record<string, string[]> = {};
  for (const key of input.keys ?? []) (domains[key.domain] ??= []).push(key.selector);
  const raw = input.config as { signing?: Record<string, unknown> };
  const config = parseConfig({
    hostname: 'sello.test',
    ...input.config,
    signing: { keysDir, domains, ...(raw.signing ?? {}) },
  });
  const running = await startSello(config, input.logger ?? silentLogger(), input.options);
  t.after(() => running.close());
  return {
    config,
    running,
    keysDir,
    records,
    resolver: recordsResolver(records),
    port: (listener) => {
      const address = running.addresses.get(listener);
      if (!address) throw new Error(`no listener ${listener}`);
      return address.port;
    },
  };
}

// Flag parsing shared by every command: node:util parseArgs, strict, with -h/--help, and parse
// errors turned into a UsageError (exit 2) that points at the command's --help.
// Must not: know any command's flags.

import { isIP } from 'node:net';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { hostPort } from '../config/schema.ts';
import type { DnsServerAddress } from '../dns/resolver.ts';
import { KeyError, UsageError } from '../errors.ts';
import { isRecordFormat, validateDomain, type RecordFormat } from '../signing/keys.ts';

type WithHelp<T extends ParseArgsConfig> = T & { strict: true; options: NonNullable<T['options']> & { help: { type: 'boolean'; short: 'h' } } };

export function parseCommandArgs<T extends ParseArgsConfig>(command: string, config: T): ReturnType<typeof parseArgs<WithHelp<T>>> {
  const withHelp = { ...config, strict: true, options: { ...config.options, help: { type: 'boolean', short: 'h' } } } as WithHelp<T>;
  try {
    return parseArgs(withHelp);
  } catch (error) {
    throw new UsageError(`${error instanceof Error ? error.message : String(error)} (see sello ${command} --help)`);
  }
}

/** Runs a validator on a command-line value: a KeyError (bad domain, selector) is a usage error. */
export function asUsage<T>(validate: () => T): T {
  try {
    return validate();
  } catch (error) {
    if (error instanceof KeyError) throw new UsageError(error.message);
    throw error;
  }
}

/** --dns HOST:PORT, [IPv6]:PORT, or an address (port 53). */
export function parseDnsServerFlag(value: string): DnsServerAddress {
  if (isIP(value) !== 0) return { host: value, port: 53 };
  const parsed = hostPort.safeParse(value);
  if (!parsed.success || parsed.data.port === 0) {
    throw new UsageError(`--dns must be HOST:PORT, [IPv6]:PORT or an address, not ${JSON.stringify(value)}`);
  }
  return parsed.data;
}

/** The one domain a key command takes (keygen, rotate), validated; a usage error otherwise. */
export function onlyDomain(command: string, positionals: readonly string[]): string {
  if (positionals.length !== 1) throw new UsageError(`expected exactly one domain, got ${String(positionals.length)} arguments (see sello ${command} --help)`);
  return asUsage(() => validateDomain(positionals[0] ?? ''));
}

/** --algorithm rsa | ed25519 | both (undefined when absent: the command picks its default). */
export function algorithmFlag(value: string | undefined): 'rsa' | 'ed25519' | 'both' | undefined {
  if (value === undefined || value === 'rsa' || value === 'ed25519' || value === 'both') return value;
  throw new UsageError(`--algorithm must be rsa, ed25519 or both, not ${JSON.stringify(value)}`);
}

/** --format bind | value | json of a printed DNS record (default bind). */
export function recordFormatFlag(value: string | undefined): RecordFormat {
  const format = value ?? 'bind';
  if (!isRecordFormat(format)) throw new UsageError(`--format must be bind, value or json, not ${JSON.stringify(format)}`);
  return format;
}

// Flag parsing shared by every command: node:util parseArgs, strict, with -h/--help, and parse
// errors turned into a UsageError (exit 2) that points at the command's --help.
// Must not: know any command's flags.

import { isIP } from 'node:net';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { hostPort } from '../config/schema.ts';
import type { DnsServerAddress } from '../dns/resolver.ts';
import { KeyError, UsageError } from '../errors.ts';

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

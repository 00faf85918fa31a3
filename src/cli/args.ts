// Flag parsing shared by every command: node:util parseArgs, strict, with -h/--help, and parse
// errors turned into a UsageError (exit 2) that points at the command's --help.
// Must not: know any command's flags.

import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError } from '../errors.ts';

type WithHelp<T extends ParseArgsConfig> = T & { strict: true; options: NonNullable<T['options']> & { help: { type: 'boolean'; short: 'h' } } };

export function parseCommandArgs<T extends ParseArgsConfig>(command: string, config: T): ReturnType<typeof parseArgs<WithHelp<T>>> {
  const withHelp = { ...config, strict: true, options: { ...config.options, help: { type: 'boolean', short: 'h' } } } as WithHelp<T>;
  try {
    return parseArgs(withHelp);
  } catch (error) {
    throw new UsageError(`${error instanceof Error ? error.message : String(error)} (see sello ${command} --help)`);
  }
}

// Running a sello command in-process with captured output: the `Command` of one command, or
// `main` from src/cli/run.ts (same shape, argv first) for the whole dispatcher.
// Must not: touch process.stdout/stderr or process.exit.

import { Readable } from 'node:stream';
import type { CliIo } from '../../src/cli/io.ts';

export interface CommandRun {
  code: number;
  out: string;
  err: string;
}

export async function runCommand(
  command: (args: string[], io: CliIo) => Promise<number>,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; stdin?: Readable } = {},
): Promise<CommandRun> {
  const run = { out: '', err: '' };
  const text = (chunk: string | Uint8Array) => (typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('latin1'));
  const code = await command(args, {
    stdout: (chunk) => (run.out += text(chunk)),
    stderr: (chunk) => (run.err += chunk),
    stdin: options.stdin ?? Readable.from([]),
    env: options.env ?? {},
  });
  return { code, ...run };
}

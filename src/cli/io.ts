// What a CLI command gets from main.ts: its arguments and the process streams, injected so
// tests run commands in-process. Owns: the command signature. Must not: call process.exit.

import type { Readable } from 'node:stream';

export interface CliIo {
  /** Bytes are written as they are (signed messages may carry 8-bit bodies). */
  stdout(text: string | Uint8Array): void;
  stderr(text: string): void;
  stdin: Readable;
  env: NodeJS.ProcessEnv;
}

/** A command: parse `args` (everything after the command name), act, return the exit code. */
export type Command = (args: string[], io: CliIo) => Promise<number>;

export function processIo(): CliIo {
  return {
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
    stdin: process.stdin,
    env: process.env,
  };
}

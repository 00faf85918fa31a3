// `sello passwd <user>`: one line for a listener's auth.credentials file, "user:$scrypt$…".
// Owns: reading the password (a terminal prompt without echo, or the first line of stdin for
// scripts) and printing the line. Must not: write the credentials file (the admin appends or
// replaces the line; sello never edits a file it reads), or echo or log the password.

import type { ReadStream } from 'node:tty';
import { hashPassword, isUserName } from '../auth/credentials.ts';
import { UsageError } from '../errors.ts';
import { parseCommandArgs } from './args.ts';
import type { CliIo, Command } from './io.ts';

const usage = `usage: sello passwd <user>

Prints "<user>:<scrypt hash>" for a submission listener's auth.credentials file, e.g.
  sello passwd alice@example.com >> /etc/sello/credentials
To change a password, replace that user's line. sello reads the file at start and on SIGHUP.

The password is asked twice on a terminal (not echoed), or read from the first line of stdin:
  printf '%s\\n' "$password" | sello passwd alice@example.com

exit status: 0 the line was printed; 1 no password, or the two differ; 2 bad usage
`;

export const passwdCommand: Command = async (args, io) => {
  const { values, positionals } = parseCommandArgs('passwd', { args, allowPositionals: true, options: {} });
  if (values.help) {
    io.stdout(usage);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError('expected exactly one user name (see sello passwd --help)');
  const user = positionals[0] as string;
  if (!isUserName(user)) throw new UsageError('the user name must be 1–255 bytes, without ":", white space or control characters');

  const terminal = (io.stdin as Partial<ReadStream>).isTTY === true;
  const password = terminal ? await promptTwice(io) : await firstLine(io);
  if (password === undefined) {
    io.stderr('sello passwd: the passwords differ; nothing printed\n');
    return 1;
  }
  if (password === '') {
    io.stderr('sello passwd: empty password; nothing printed\n');
    return 1;
  }
  io.stdout(`${user}:${await hashPassword(password)}\n`);
  return 0;
};

/** The first line of stdin, without its line ending (scripts: printf '%s\n' "$pw" | …). */
async function firstLine(io: CliIo): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of io.stdin) {
    chunks.push(Buffer.from(chunk as Buffer));
    if (Buffer.concat(chunks).includes(0x0a)) break;
  }
  return Buffer.concat(chunks).toString('utf8').split('\n')[0]!.replace(/\r$/, '');
}

/** Asks twice with echo off; undefined when the two answers differ. */
async function promptTwice(io: CliIo): Promise<string | undefined> {
  const first = await prompt(io, 'Password: ');
  const second = await prompt(io, 'Again: ');
  return first === second ? first : undefined;
}

function prompt(io: CliIo, question: string): Promise<string> {
  const input = io.stdin as ReadStream;
  io.stderr(question);
  input.setRawMode(true);
  input.resume();
  let typed = '';
  return new Promise((resolve, reject) => {
    const done = (error?: Error) => {
      input.off('data', onData);
      input.setRawMode(false);
      input.pause();
      io.stderr('\n');
      if (error) reject(error);
      else resolve(typed);
    };
    const onData = (chunk: Buffer) => {
      for (const character of chunk.toString('utf8')) {
        if (character === '\r' || character === '\n') return done();
        if (character === '\u0003') return done(new UsageError('interrupted'));
        if (character === '\u007f' || character === '\b') typed = [...typed].slice(0, -1).join('');
        else typed += character;
      }
    };
    input.on('data', onData);
  });
}

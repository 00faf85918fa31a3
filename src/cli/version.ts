// `sello version` (also `sello --version`): sello's version from its package.json and the Node.js
// runtime running it (the Debian package brings its own under /usr/lib/sello).
// Must not: read anything but sello's own package.json.

import { readFile } from 'node:fs/promises';
import type { Command } from './io.ts';

/** The "version" of the package.json next to src/ (the repository's, or /usr/lib/sello's). */
export async function selloVersion(): Promise<string> {
  const manifest = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
  if (typeof manifest.version !== 'string') throw new Error('package.json has no "version"');
  return manifest.version;
}

export const versionCommand: Command = async (args, io) => {
  if (args.includes('--help') || args.includes('-h')) {
    io.stdout('usage: sello version   (also: sello --version)\n');
    return 0;
  }
  io.stdout(`sello ${await selloVersion()} (Node.js ${process.version})\n`);
  return 0;
};

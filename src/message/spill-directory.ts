// Where spilled message bodies live (data.spillDirectory): a private directory of this user.
// Owns: its default location, making it safe before the first file goes in (a directory of ours,
// not a symlink, mode 0700), the file names (which process made them), and removing the files a
// crashed process left behind. Must not: write message bytes (message-sink.ts does).

import { chmod, lstat, mkdir, readdir, unlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

const directoryMode = 0o700;
/** spill-PID-RANDOM: the process that owns the file is in its name (cleanup at start-up). */
const spillFilePattern = /^spill-(\d+)-[0-9a-f]+$/;

/** data.spillDirectory, or a directory of this user in os.tmpdir() (TMPDIR). */
export function spillDirectoryOf(configured: string | undefined): string {
  return path.resolve(configured ?? path.join(os.tmpdir(), `sello-spill-${process.getuid?.() ?? 'user'}`));
}

export function spillFileName(random: string): string {
  return `spill-${process.pid}-${random}`;
}

const ready = new Map<string, Promise<void>>();

/**
 * Creates the directory if missing and refuses one that another user could read or plant files
 * in: it must be a real directory (not a symlink) owned by this user; its mode is set to 0700.
 * Checked once per directory and process.
 */
export function spillDirectoryReady(directory: string): Promise<void> {
  let check = ready.get(directory);
  if (!check) {
    check = makePrivate(directory);
    ready.set(directory, check);
    // A failure is reported to this caller and checked afresh next time.
    check.catch(() => ready.delete(directory));
  }
  return check;
}

/** The directory went away after it was checked (a /tmp cleaner removed it): check it afresh next time. */
export function forgetSpillDirectory(directory: string): void {
  ready.delete(directory);
}

async function makePrivate(directory: string): Promise<void> {
  await mkdir(directory, { recursive: true, mode: directoryMode });
  const status = await lstat(directory);
  if (!status.isDirectory()) throw new Error(`spill directory ${directory} is not a directory (a symlink is refused)`);
  const uid = process.getuid?.();
  if (uid !== undefined && status.uid !== uid) throw new Error(`spill directory ${directory} belongs to uid ${status.uid}, not to this user (${uid})`);
  if ((status.mode & 0o777) !== directoryMode) await chmod(directory, directoryMode);
}

function processIsAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists under another user.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * At start-up: makes the directory ready and removes the spill files of processes that no longer
 * run (a crash, a SIGKILL mid-DATA). Files of live processes (other workers) stay. Returns how
 * many were removed.
 */
export async function removeLeftoverSpillFiles(directory: string): Promise<number> {
  await spillDirectoryReady(directory);
  let removed = 0;
  for (const name of await readdir(directory)) {
    const match = spillFilePattern.exec(name);
    if (!match || processIsAlive(Number(match[1]))) continue;
    await unlink(path.join(directory, name)).then(
      () => removed++,
      () => undefined,
    );
  }
  return removed;
}

// Plumbing of the Debian package test (test/package/debian.test.ts): the tool check, running a
// command to completion with its output, reading a systemd unit, and starting a unit's ExecStart
// line the way systemd would (its User, Group, WorkingDirectory, Environment and
// AmbientCapabilities) on a machine without systemd as PID 1.
// Must not: install or remove anything itself, or skip silently (tools.ts decides).

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { ToolCheck } from './tools.ts';

export type Run = { code: number | null; stdout: string; stderr: string };

/** Run a program to its end (bounded by timeoutMs), with its output; never throws for an exit code. */
export function run(command: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; input?: string } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const stdin = options.input === undefined ? 'ignore' : 'pipe';
    const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? process.env, timeout: options.timeoutMs ?? 120_000, stdio: [stdin, 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    // A program may exit before reading its input: 'close' reports how it ended.
    child.stdin?.on('error', () => {});
    child.stdin?.end(options.input);
  });
}

/** "sello" as dpkg knows it: "" when never installed, else its status ("install ok installed", "deinstall ok config-files"). */
export function packageStatus(name: string): string {
  const query = spawnSync('dpkg-query', ['-W', '-f=${Status}', name], { encoding: 'utf8' });
  return query.status === 0 ? query.stdout.trim() : '';
}

/**
 * Root, Debian's packaging tools, lintian, setpriv and bash-completion; and no sello package on
 * the machine already (the test installs and purges it, and would take an admin's install with it).
 */
export function checkDebianPackaging(): ToolCheck {
  const install = 'dpkg-dev binutils lintian bash-completion man-db systemd util-linux (see .ci/run); run as root on a disposable machine';
  const name = 'Debian packaging';
  if (process.getuid?.() !== 0) return { name, missing: 'installing a package needs root', install };
  for (const tool of ['dpkg-deb', 'dpkg-shlibdeps', 'apt-get', 'strip', 'lintian', 'setpriv', 'runuser', 'man', 'npm', 'systemd-analyze']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return { name, missing: `no ${tool} on PATH`, install };
  }
  if (!existsSync('/usr/share/bash-completion/bash_completion')) return { name, missing: 'no /usr/share/bash-completion/bash_completion', install };
  const status = packageStatus('sello');
  if (status !== '' && status !== 'unknown ok not-installed') {
    return { name, missing: `a sello package is on this machine already (${status}); the test would purge it`, install: `${install}; apt-get purge sello first` };
  }
  // An account from a hand-made install (deploy/systemd's header): the purge would delete it.
  if (status === '' && spawnSync('getent', ['passwd', 'sello']).status === 0) {
    return { name, missing: 'a user sello exists without the sello package; the purge would delete it', install: `${install}; userdel sello first if it is left over from an earlier run` };
  }
  return { name, missing: undefined, install };
}

/** A unit file as section → key → values (a key may repeat). */
export type Unit = Map<string, Map<string, string[]>>;

export async function readUnit(file: string): Promise<Unit> {
  const sections: Unit = new Map();
  let current: Map<string, string[]> | undefined;
  for (const line of (await readFile(file, 'utf8')).split('\n')) {
    const section = /^\[(\w+)\]$/.exec(line.trim());
    if (section) sections.set(section[1] as string, (current = new Map()));
    const entry = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (entry && current) current.set(entry[1] as string, [...(current.get(entry[1] as string) ?? []), entry[2] as string]);
  }
  return sections;
}

/** The one value of a [Service] key. */
export function serviceValue(unit: Unit, key: string): string {
  const values = unit.get('Service')?.get(key);
  if (values?.length !== 1) throw new Error(`the unit has ${values?.length ?? 0} ${key}= lines, not one`);
  return values[0] as string;
}

/**
 * Start the unit's ExecStart line as systemd would, through setpriv: User/Group with their
 * supplementary groups, AmbientCapabilities (systemd(5) "CAP_NET_BIND_SERVICE" → setpriv's
 * "+net_bind_service"), WorkingDirectory, Environment= lines and a plain PATH. ExecStart is split
 * on spaces (the packaged line has no quoting).
 */
export function startUnit(unit: Unit): { child: ChildProcess; command: string[] } {
  const capabilities = (unit.get('Service')?.get('AmbientCapabilities') ?? [])
    .flatMap((value) => value.split(/\s+/))
    .filter(Boolean)
    .map((capability) => `+${capability.toLowerCase().replace(/^cap_/, '')}`)
    .join(',');
  const environment: NodeJS.ProcessEnv = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' };
  for (const assignment of unit.get('Service')?.get('Environment') ?? []) {
    for (const pair of assignment.split(/\s+/)) {
      const [key, ...value] = pair.split('=');
      if (key) environment[key] = value.join('=');
    }
  }
  const command = serviceValue(unit, 'ExecStart').split(' ');
  const privileges = [`--reuid=${serviceValue(unit, 'User')}`, `--regid=${serviceValue(unit, 'Group')}`, '--init-groups'];
  if (capabilities) privileges.push(`--inh-caps=${capabilities}`, `--ambient-caps=${capabilities}`);
  const child = spawn('setpriv', [...privileges, '--', ...command], { cwd: serviceValue(unit, 'WorkingDirectory'), env: environment, stdio: ['ignore', 'pipe', 'pipe'] });
  return { child, command };
}

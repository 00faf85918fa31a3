// Small test plumbing: detecting external tools (Exim, Postfix, dkimpy, swaks, Prometheus, root), free ports, temp dirs.
// Owns: the rule "a missing tool skips loudly on a workstation and fails in CI" (STYLE.md, Tests).
// Must not: install anything, or silently skip — every skip prints a banner on stderr.

import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';

/** Anything with node:test's `after` hook: a TestContext, or a suite's context. */
export type CleanupHooks = { after(fn: () => unknown): void };

/** An external tool a test needs, and what is missing (undefined when available). */
export type ToolCheck = {
  name: string;
  /** Why the tool is unusable, or undefined when it is usable. */
  missing: string | undefined;
  /** What `.ci/run` installs to provide it. */
  install: string;
};

export const SYSTEM_PYTHON = '/usr/bin/python3';

function loudNotice(text: string): void {
  const bar = '*'.repeat(Math.min(100, text.length + 8));
  process.stderr.write(`\n${bar}\n*** ${text} ***\n${bar}\n`);
}

export type GateEnvironment = { ci: boolean; notify: (text: string) => void };

const realEnvironment = (): GateEnvironment => ({ ci: Boolean(process.env['CI']), notify: loudNotice });

/**
 * The rule itself: undefined when every check passes; a skip reason (after a loud notice) when
 * something is missing on a workstation; an exception when something is missing under CI.
 */
export function toolGate(checks: ToolCheck[], what: string, environment: GateEnvironment = realEnvironment()): string | undefined {
  const missing = checks.filter((check) => check.missing !== undefined);
  if (missing.length === 0) return undefined;
  if (environment.ci) {
    throw new Error(missing.map((check) => `CI must install ${check.name} (${check.install}): see .ci/run — ${check.missing}`).join('\n'));
  }
  const names = missing.map((check) => `${check.name} (${check.missing})`).join(', ');
  environment.notify(`SKIPPED: ${names} — ${what} not run; install: ${missing.map((check) => check.install).join(', ')}`);
  return `missing ${names}`;
}

/**
 * Gate a test on tools. Returns true when the test may go on. When a tool is missing: under CI
 * (process.env.CI set) the test fails; elsewhere it is skipped with a banner on stderr.
 *   if (!requireTool(t, checkExim())) return;
 */
export function requireTool(t: TestContext, ...checks: ToolCheck[]): boolean {
  const skip = toolGate(checks, `interop test "${t.name}"`);
  if (skip === undefined) return true;
  t.skip(skip);
  return false;
}

/**
 * Options for `describe(name, suiteOptions(checkExim()), fn)`: skips the whole suite loudly on a
 * workstation, throws (failing the file) under CI.
 */
export function suiteOptions(...checks: ToolCheck[]): { skip?: string } {
  const skip = toolGate(checks, 'interop suite');
  return skip === undefined ? {} : { skip };
}

const cache = new Map<string, ToolCheck>();
function memo(key: string, probe: () => ToolCheck): ToolCheck {
  let check = cache.get(key);
  if (!check) {
    check = probe();
    cache.set(key, check);
  }
  return check;
}

export function findExecutable(candidates: string[]): string | undefined {
  return candidates.find((candidate) => existsSync(candidate));
}

/** Exim 4 with DKIM support, plus what the harness needs to run it (unshare, setpriv, root). */
export function checkExim(): ToolCheck {
  return memo('exim', () => {
    const install = 'exim4-daemon-heavy, util-linux; run as root';
    const exim = findExecutable(['/usr/sbin/exim4', '/usr/sbin/exim']);
    if (!exim) return { name: 'exim4', missing: 'no /usr/sbin/exim4', install };
    const version = spawnSync(exim, ['-bV'], { encoding: 'utf8', timeout: 10_000 });
    if (version.status !== 0 || !/Support for:.*\bDKIM\b/.test(version.stdout)) {
      return { name: 'exim4', missing: `${exim} -bV failed or lacks DKIM support`, install };
    }
    for (const tool of ['unshare', 'setpriv', 'mount']) {
      if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return { name: 'exim4', missing: `no ${tool} on PATH`, install };
    }
    if (process.getuid?.() !== 0) return { name: 'exim4', missing: 'the Exim harness needs root (unshare -m, port 53 on loopback)', install };
    return { name: 'exim4', missing: undefined, install };
  });
}

/**
 * Where test/interop/setup-postfix.sh unpacked Debian's postfix package (it is never installed:
 * it conflicts with exim4). SELLO_POSTFIX_ROOT overrides, for both the script and the harness.
 */
export function postfixRoot(): string {
  return process.env['SELLO_POSTFIX_ROOT'] || '/opt/sello-test/postfix';
}

/** The programs and libraries of the unpacked tree; its binaries need LD_LIBRARY_PATH=shlibDirectory. */
export function postfixPaths(root = postfixRoot()): { root: string; daemonDirectory: string; commandDirectory: string; shlibDirectory: string; master: string; postconf: string; dynamicMaps: string } {
  return {
    root,
    daemonDirectory: path.join(root, 'usr/lib/postfix/sbin'),
    commandDirectory: path.join(root, 'usr/sbin'),
    shlibDirectory: path.join(root, 'usr/lib/postfix'),
    master: path.join(root, 'usr/lib/postfix/sbin/master'),
    postconf: path.join(root, 'usr/sbin/postconf'),
    dynamicMaps: path.join(root, 'usr/share/postfix/dynamicmaps.cf'),
  };
}

/** Postfix ≥ 3.4 (maillog_file) unpacked by setup-postfix.sh, its accounts, unshare/mount, root. */
export function checkPostfix(): ToolCheck {
  return memo('postfix', () => {
    const install = 'test/interop/setup-postfix.sh (Debian postfix unpacked into /opt/sello-test/postfix, user postfix, group postdrop), util-linux; run as root';
    const paths = postfixPaths();
    if (!existsSync(paths.master)) return { name: 'postfix', missing: `no ${paths.master}`, install };
    const probe = spawnSync(paths.postconf, ['-c', path.join(paths.root, 'usr/share/postfix'), '-d', '-h', 'mail_version'], {
      encoding: 'utf8',
      timeout: 10_000,
      env: { ...process.env, LD_LIBRARY_PATH: paths.shlibDirectory },
    });
    const version = /^(\d+)\.(\d+)/.exec(probe.stdout ?? '');
    if (probe.status !== 0 || !version) return { name: 'postfix', missing: `${paths.postconf} -d does not run: ${(probe.stderr ?? '').trim().split('\n').pop()}`, install };
    if (Number(version[1]) * 100 + Number(version[2]) < 304) return { name: 'postfix', missing: `Postfix ${probe.stdout.trim()} is older than 3.4 (no maillog_file)`, install };
    if (spawnSync('getent', ['passwd', 'postfix']).status !== 0) return { name: 'postfix', missing: 'no postfix user', install };
    if (spawnSync('getent', ['group', 'postdrop']).status !== 0) return { name: 'postfix', missing: 'no postdrop group', install };
    for (const tool of ['unshare', 'mount']) {
      if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return { name: 'postfix', missing: `no ${tool} on PATH`, install };
    }
    if (process.getuid?.() !== 0) return { name: 'postfix', missing: 'the Postfix harness needs root (master, unshare -m, port 53 on loopback)', install };
    return { name: 'postfix', missing: undefined, install };
  });
}

/** dkimpy (Debian python3-dkim) importable from the system Python, with dnspython and PyNaCl. */
export function checkDkimpy(): ToolCheck {
  return memo('dkimpy', () => {
    const install = 'python3-dkim (pulls python3-dnspython, python3-nacl)';
    if (!existsSync(SYSTEM_PYTHON)) return { name: 'dkimpy', missing: `no ${SYSTEM_PYTHON}`, install };
    const probe = spawnSync(SYSTEM_PYTHON, ['-c', 'import dkim, dns.resolver, nacl.signing'], { encoding: 'utf8', timeout: 10_000 });
    if (probe.status !== 0) return { name: 'dkimpy', missing: probe.stderr.trim().split('\n').pop() ?? 'import failed', install };
    return { name: 'dkimpy', missing: undefined, install };
  });
}

export function checkSwaks(): ToolCheck {
  return memo('swaks', () => {
    const found = spawnSync('sh', ['-c', 'command -v swaks'], { encoding: 'utf8' });
    return { name: 'swaks', missing: found.status === 0 ? undefined : 'swaks not on PATH', install: 'swaks' };
  });
}

/** A binary that answers `--version` (Prometheus' programs print it on stdout or stderr). */
function versionCheck(name: string, candidates: string[], install: string): ToolCheck {
  const binary = findExecutable(candidates);
  if (!binary) return { name, missing: `no ${candidates.join(' or ')}`, install };
  const probe = spawnSync(binary, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  if (probe.status !== 0) {
    const reason = probe.error?.message ?? (probe.stderr ?? '').trim().split('\n').pop() ?? '';
    return { name, missing: `${binary} --version failed: ${reason}`, install };
  }
  return { name, missing: undefined, install };
}

/** The Prometheus server (Debian prometheus), run by test/helpers/prometheus.ts on loopback. */
export function checkPrometheus(): ToolCheck {
  return memo('prometheus', () => versionCheck('prometheus', ['/usr/bin/prometheus'], 'prometheus (Debian; ships /usr/bin/prometheus and promtool)'));
}

/** promtool (Debian prometheus): `check metrics`, `check config`. */
export function checkPromtool(): ToolCheck {
  return memo('promtool', () => versionCheck('promtool', ['/usr/bin/promtool'], 'prometheus (Debian; ships /usr/bin/promtool)'));
}

/**
 * Ports handed out by freePort: below the kernel's ephemeral range (Linux default 32768–60999), so
 * no `listen(0)` (every in-process listener, sink and DNS server of the tests) can be given the same
 * port in the window between freePort answering and the caller binding it. Drawing from the
 * ephemeral range made that race real: a sello under test once got its own relay target's "dead"
 * port for a listener and relayed to itself.
 */
const FREE_PORT_RANGE = ((): { low: number; high: number } => {
  let ephemeralLow = 32_768;
  try {
    ephemeralLow = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || ephemeralLow;
  } catch {
    // Not Linux: keep the Linux default.
  }
  const high = Math.min(32_000, ephemeralLow);
  if (high - 4_000 < 1_024) throw new Error(`freePort: the ephemeral port range starts at ${ephemeralLow}, leaving no room below it`);
  return { low: high - 12_000 > 1_024 ? high - 12_000 : 1_024, high };
})();
const handedOut = new Set<number>();

async function bindable(port: number, host: string): Promise<boolean> {
  const server = net.createServer();
  const bound = await new Promise<boolean>((resolve) => {
    server.once('error', () => resolve(false));
    server.listen({ port, host, exclusive: true }, () => resolve(true));
  });
  if (bound) await new Promise<void>((resolve) => server.close(() => resolve()));
  return bound;
}

/**
 * A TCP port on `host` that was free a moment ago and is outside the ephemeral range (see
 * FREE_PORT_RANGE). Random, and never the same twice in one process; a race remains only with
 * another freePort caller in another process picking the same random port at the same moment.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const { low, high } = FREE_PORT_RANGE;
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = low + Math.floor(Math.random() * (high - low));
    if (handedOut.has(port)) continue;
    if (await bindable(port, host)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`freePort: no free port on ${host} in ${low}–${high} after 200 attempts`);
}

/** Keep test directories for post-mortem when SELLO_KEEP_TEST_DIRS is set. */
export function keepTestDirs(): boolean {
  return Boolean(process.env['SELLO_KEEP_TEST_DIRS']);
}

/**
 * A fresh directory under the OS temp dir. With hooks (a TestContext or suite context) it is
 * removed after the test; otherwise the caller removes it.
 */
export async function tempDir(hooks?: CleanupHooks, prefix = 'sello-test-'): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  hooks?.after(() => removeTempDir(dir));
  return dir;
}

export async function removeTempDir(dir: string): Promise<void> {
  if (keepTestDirs()) {
    process.stderr.write(`(kept test dir ${dir})\n`);
    return;
  }
  await rm(dir, { recursive: true, force: true });
}

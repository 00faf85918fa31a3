// What the real-MTA test harnesses (exim.ts, postfix.ts) share: running a daemon as the leader of
// its own process group inside a private mount namespace (its own /etc/resolv.conf), the DNS
// server on port 53 that resolv.conf names, the per-run temp dir, the maildir reader, polling.
// Owns: the rule that no MTA process or temp dir outlives the test process (every process group
// is killed, every temp dir removed, on stop()/close(), process exit, SIGINT and SIGTERM).
// Must not: know any MTA's config, users or log format (that stays in exim.ts / postfix.ts), or
// touch the host's /etc/resolv.conf (it is replaced only inside the daemon's mount namespace).

import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { chmod, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { startDnsServer, type DnsServer, type Zone } from './dns-server.ts';
import { keepTestDirs, tempDir, type CleanupHooks } from './tools.ts';

/** Options every real-MTA harness takes; EximOptions and PostfixOptions add their own. */
export type MtaOptions = {
  /** Records for the DNS server the harness starts for the MTA (ignored when dnsServer is given). */
  zone?: Zone;
  /** Use this DNS server instead; it must listen on port 53 (see startPort53DnsServer). */
  dnsServer?: DnsServer;
  /** Register close() with node:test's after hook. */
  cleanupWith?: CleanupHooks;
  /** Milliseconds to wait for the SMTP listener(s) to greet; default 10000. */
  startTimeoutMs?: number;
};

/** What every real-MTA harness offers; exim.ts and postfix.ts add their logs and extras. */
export interface MtaHarness<Delivery> {
  readonly host: string;
  /** Port of the (main) SMTP listener on host. */
  readonly port: number;
  /** The DNS server the MTA resolves through (port 53 on a private loopback address). */
  readonly dns: DnsServer;
  /** The private temp dir: config, queue or spool, logs, maildir. */
  readonly dir: string;
  /** One message per accepted message (the first recipient's copy), oldest first. */
  messages(): Promise<Buffer[]>;
  /** Every per-recipient delivery, oldest first. */
  deliveries(): Promise<Delivery[]>;
  /** Wait until at least n messages were delivered; throws with the log tail on timeout. */
  waitForMessages(n: number, timeoutMs?: number): Promise<Buffer[]>;
  /** Forget delivered messages (delete them from the maildir). */
  clearMessages(): Promise<void>;
  /** Kill the MTA (its whole process group). Ports, queue or spool, and DNS server stay. */
  stop(): Promise<void>;
  /** Start again after stop(), same ports, config and queue or spool. */
  start(): Promise<void>;
  /** stop(), close the DNS server if the harness started it, remove the temp dir. */
  close(): Promise<void>;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Reads until `done(value)` holds, every intervalMs; returns that value. After timeoutMs throws
 * an Error with the message describeTimeout gives for the last value read.
 */
export async function poll<T>(read: () => Promise<T>, done: (value: T) => boolean, timeoutMs: number, describeTimeout: (last: T) => Promise<string>, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() > deadline) throw new Error(await describeTimeout(value));
    await sleep(intervalMs);
  }
}

/** A text file's content, or '' while it does not exist (logs are created lazily). */
export async function readTextFile(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch {
    return '';
  }
}

// ---------- process groups and temp dirs: nothing outlives the test process ----------

const liveProcessGroups = new Set<number>();
const liveDirs = new Set<string>();
let exitHooksInstalled = false;

function killProcessGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // ESRCH: already gone
  }
}

/**
 * Whether a process of the group still runs. Zombies do not count: orphaned daemons are reaped by
 * PID 1, which in some containers takes a second or two, but a zombie holds no socket.
 */
function processGroupRunning(pgid: number): boolean {
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return false;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'latin1');
    } catch {
      continue; // exited meanwhile
    }
    // "pid (comm) state ppid pgrp ...": comm may contain spaces and parentheses.
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(pgrp) === pgid && state !== 'Z' && state !== 'X') return true;
  }
  return false;
}

function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  const cleanUp = (): void => {
    for (const pgid of liveProcessGroups) killProcessGroup(pgid, 'SIGKILL');
    if (!keepTestDirs()) {
      for (const dir of liveDirs) {
        try {
          rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
        } catch {
          // a daemon still dying wrote into it: leave it, never throw while exiting
        }
      }
    }
    liveDirs.clear();
  };
  process.on('exit', cleanUp);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    const onSignal = (): void => {
      cleanUp();
      process.off(signal, onSignal);
      process.kill(process.pid, signal);
    };
    process.on(signal, onSignal);
  }
}

// ---------- DNS on port 53 ----------

/**
 * A DNS server an MTA can use through the system resolver: port 53 (the only port resolv.conf
 * knows) on a random 127.53.x.y, so parallel test files do not collide and nothing real listens there.
 */
export async function startPort53DnsServer(zone: Zone = {}): Promise<DnsServer> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 20; attempt++) {
    const host = `127.53.${1 + Math.floor(Math.random() * 254)}.${1 + Math.floor(Math.random() * 254)}`;
    try {
      return await startDnsServer(zone, { host, port: 53 });
    } catch (error) {
      lastError = error;
    }
  }
  throw new Error(`startPort53DnsServer: could not bind port 53 on 127.53.x.y: ${String(lastError)}`);
}

// ---------- workspace: the temp dir and the DNS server of one MTA ----------

export interface MtaWorkspace {
  /** The private temp dir (removed on close(), and on process exit or SIGINT/SIGTERM). */
  readonly dir: string;
  /** The DNS server the MTA resolves through (port 53). */
  readonly dns: DnsServer;
  /** /etc/resolv.conf as the MTA sees it: `<dir>/resolv.conf`, naming `dns`. */
  readonly resolvConf: string;
  /** Setup failed: remove the dir (even with SELLO_KEEP_TEST_DIRS), close the DNS server if ours. */
  discard(): Promise<void>;
  /** Close the DNS server if ours; remove the dir (or keep it with SELLO_KEEP_TEST_DIRS, saying so). */
  close(): Promise<void>;
}

/**
 * Installs the exit hooks, starts a port-53 DNS server with `zone` (or takes `dnsServer`, which
 * must be on port 53), creates the temp dir and writes its resolv.conf.
 * `name` ('exim', 'postfix') prefixes error messages.
 */
export async function openMtaWorkspace(name: string, options: Pick<MtaOptions, 'zone' | 'dnsServer'>): Promise<MtaWorkspace> {
  installExitHooks();
  const ownsDns = options.dnsServer === undefined;
  const dns = options.dnsServer ?? (await startPort53DnsServer(options.zone ?? {}));
  let dir: string;
  try {
    if (dns.port !== 53) throw new Error(`${name} harness: the system resolver only speaks to port 53; dnsServer is on ${dns.address}`);
    dir = await tempDir(undefined, `sello-${name}-`);
  } catch (error) {
    if (ownsDns) await dns.close();
    throw error;
  }
  liveDirs.add(dir);
  const closeDns = async (): Promise<void> => {
    if (ownsDns) await dns.close();
  };
  const workspace: MtaWorkspace = {
    dir,
    dns,
    resolvConf: path.join(dir, 'resolv.conf'),
    discard: async () => {
      await rm(dir, { recursive: true, force: true });
      liveDirs.delete(dir);
      await closeDns();
    },
    close: async () => {
      await closeDns();
      if (keepTestDirs()) process.stderr.write(`(kept ${name} dir ${dir})\n`);
      else await rm(dir, { recursive: true, force: true });
      liveDirs.delete(dir);
    },
  };
  try {
    // The MTA drops root, and reads resolv.conf as its own user.
    await chmod(dir, 0o755);
    await writeFile(workspace.resolvConf, `nameserver ${dns.host}\noptions timeout:1 attempts:1\n`);
    await chmod(workspace.resolvConf, 0o644);
  } catch (error) {
    await workspace.discard();
    throw error;
  }
  return workspace;
}

// ---------- the daemon ----------

/** A listener that must greet with 220 before start() returns. */
export type MtaListener = {
  port: number;
  /** Send a PROXY v1 header first (a PROXY-protocol listener greets only after it). */
  proxyProtocol?: boolean;
};

export type MtaDaemonOptions = {
  /** 'exim', 'postfix': prefixes error messages. */
  name: string;
  /** How "<daemon> exited during startup" names it; default name. */
  daemon?: string;
  /** The file bind-mounted over /etc/resolv.conf inside the daemon's mount namespace. */
  resolvConf: string;
  /** The daemon in the foreground: program and arguments (exec'd after the mount). */
  command: string[];
  env?: NodeJS.ProcessEnv;
  host: string;
  listeners: MtaListener[];
  /** For all listeners together. */
  startTimeoutMs: number;
  /** Appended to startup errors (logs, stderr). */
  diagnostics: () => Promise<string>;
};

export interface MtaDaemon {
  /** Spawn the daemon and wait for every listener's 220; on failure stop() and throw. */
  start(): Promise<void>;
  /** SIGTERM to the whole process group (SIGKILL after 3 s), then wait (≤ 5 s) until no process
   *  of the group runs any more, so a start() on the same ports does not race with them. */
  stop(): Promise<void>;
  /** What the daemon wrote on stderr since the last start(). */
  stderr(): string;
}

/**
 * Connects and resolves with the banner (undefined when there is none yet). A PROXY-protocol
 * listener first gets a PROXY v1 header naming the probe's own connection.
 */
function probeBanner(host: string, port: number, proxyProtocol: boolean): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    let text = '';
    socket.setTimeout(2000, () => {
      socket.destroy();
      resolve(undefined);
    });
    socket.on('connect', () => {
      if (proxyProtocol) socket.write(`PROXY TCP4 ${socket.localAddress} ${socket.remoteAddress} ${socket.localPort} ${socket.remotePort}\r\n`);
    });
    socket.on('data', (chunk) => {
      text += chunk.toString('latin1');
      if (/^\d{3} .*\r\n/m.test(text)) {
        socket.end('QUIT\r\n');
        resolve(text);
      }
    });
    socket.on('error', () => resolve(undefined));
    socket.on('close', () => resolve(undefined));
  });
}

/**
 * A daemon run as `unshare --mount` with resolvConf bind-mounted over /etc/resolv.conf (invisible
 * to the rest of the host), detached: the leader of a process group its children share, so that
 * killing the group takes down every session, delivery and helper process with it.
 */
export function mtaDaemon(options: MtaDaemonOptions): MtaDaemon {
  const { name, host } = options;
  let child: ChildProcess | undefined;
  let stderr = '';

  const stop = async (): Promise<void> => {
    const running = child;
    if (!running || running.pid === undefined) return;
    const pgid = running.pid;
    if (running.exitCode === null && running.signalCode === null) {
      const exited = new Promise<void>((resolve) => running.once('exit', () => resolve()));
      killProcessGroup(pgid, 'SIGTERM');
      const timer = setTimeout(() => killProcessGroup(pgid, 'SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
    }
    killProcessGroup(pgid, 'SIGKILL');
    // Forked children share the group and may still hold a listening socket: wait until none
    // runs, or start() on the same port races with them (EADDRINUSE).
    for (let waited = 0; processGroupRunning(pgid) && waited < 5000; waited += 20) await sleep(20);
    liveProcessGroups.delete(pgid);
    child = undefined;
  };

  const start = async (): Promise<void> => {
    if (child && child.exitCode === null && child.signalCode === null) throw new Error(`${name} harness: already running`);
    stderr = '';
    const script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"';
    const started = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, options.resolvConf, ...options.command], {
      detached: true,
      stdio: ['ignore', 'ignore', 'pipe'],
      env: options.env ?? process.env,
    });
    child = started;
    const pgid = started.pid;
    if (pgid === undefined) throw new Error(`${name} harness: spawn failed`);
    liveProcessGroups.add(pgid);
    started.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    started.on('exit', () => {
      // Children (deliveries, SMTP sessions, daemons) share the group: take them down with it.
      killProcessGroup(pgid, 'SIGKILL');
      liveProcessGroups.delete(pgid);
    });
    try {
      const deadline = Date.now() + options.startTimeoutMs;
      for (const listener of options.listeners) {
        await poll(
          async () => {
            if (started.exitCode !== null || started.signalCode !== null) {
              throw new Error(`${options.daemon ?? name} exited during startup (${started.exitCode ?? started.signalCode})\n${await options.diagnostics()}`);
            }
            return probeBanner(host, listener.port, listener.proxyProtocol ?? false);
          },
          (banner) => banner?.startsWith('220') ?? false,
          Math.max(0, deadline - Date.now()),
          async () => `${name} did not greet on ${host}:${listener.port} within ${options.startTimeoutMs} ms\n${await options.diagnostics()}`,
        );
      }
    } catch (error) {
      await stop();
      throw error;
    }
  };

  return { start, stop, stderr: () => stderr };
}

/** A harness's close(): daemon.stop(), then workspace.close(); only once (later calls share it). */
export function closeOnce(daemon: MtaDaemon, workspace: MtaWorkspace): () => Promise<void> {
  let closing: Promise<void> | undefined;
  return () =>
    (closing ??= (async () => {
      await daemon.stop();
      await workspace.close();
    })());
}

/**
 * Registers mta.close() with cleanupWith (node:test's after hook), then starts it; a failed start
 * closes it (daemon, DNS server, temp dir) before rethrowing.
 */
export async function startOrClose<T extends { start(): Promise<void>; close(): Promise<void> }>(mta: T, cleanupWith: CleanupHooks | undefined): Promise<T> {
  cleanupWith?.after(() => mta.close());
  try {
    await mta.start();
  } catch (error) {
    await mta.close();
    throw error;
  }
  return mta;
}

// ---------- maildir ----------

/** The files in maildir/new, oldest first (by mtime, then name); [] while it does not exist. */
export async function readMaildir(maildir: string): Promise<Buffer[]> {
  const newDir = path.join(maildir, 'new');
  let names: string[];
  try {
    names = await readdir(newDir);
  } catch {
    return [];
  }
  const files = await Promise.all(
    names.map(async (name) => {
      const file = path.join(newDir, name);
      const info = await stat(file, { bigint: true });
      return { name, mtime: info.mtimeNs, raw: await readFile(file) };
    }),
  );
  files.sort((a, b) => (a.mtime < b.mtime ? -1 : a.mtime > b.mtime ? 1 : a.name.localeCompare(b.name)));
  return files.map((file) => file.raw);
}

/** Deletes every file in maildir/new, cur and tmp. */
export async function clearMaildir(maildir: string): Promise<void> {
  for (const sub of ['new', 'cur', 'tmp']) {
    const subDir = path.join(maildir, sub);
    let names: string[] = [];
    try {
      names = await readdir(subDir);
    } catch {
      continue;
    }
    await Promise.all(names.map((name) => rm(path.join(subDir, name), { force: true })));
  }
}

/**
 * One message per accepted message: the data of the first delivery (recipient copy) per message
 * id, in delivery order. A delivery without an id ('') always counts as its own message.
 */
export function firstCopies<D extends { data: Buffer }>(deliveries: D[], messageId: (delivery: D) => string): Buffer[] {
  const seen = new Set<string>();
  const out: Buffer[] = [];
  for (const delivery of deliveries) {
    const id = messageId(delivery);
    if (id !== '' && seen.has(id)) continue;
    seen.add(id);
    out.push(delivery.data);
  }
  return out;
}

/** Waits until at least n messages were delivered; `name` and diagnostics make the timeout error. */
export function waitForMessageCount(name: string, messages: () => Promise<Buffer[]>, n: number, timeoutMs: number, diagnostics: () => Promise<string>): Promise<Buffer[]> {
  return poll(messages, (delivered) => delivered.length >= n, timeoutMs, async (delivered) => `${name}: ${delivered.length} of ${n} messages delivered after ${timeoutMs} ms\n${await diagnostics()}`);
}

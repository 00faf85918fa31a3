// The benchmark's child processes (sink, sello) as the parent sees them, and the few IPC
// messages both sides exchange: "ready" with the bound port, "usage" on request, "exit".
// Owns: spawning a child with the same Node binary, waiting for it to be ready, asking it for
// its resource usage, stopping it. Must not: know what the child runs or measure anything itself.

import { fork, type ChildProcess } from 'node:child_process';

/** What a child reports about itself, read inside the child (so it is that process alone). */
export interface ChildUsage {
  /** Peak resident set size since the process started (getrusage ru_maxrss), bytes. */
  maxRssBytes: number;
  /** Resident set size now, bytes. */
  rssBytes: number;
  /** CPU time used so far, user + system, microseconds. */
  cpuMicros: number;
  /** Sink only: messages accepted, and DKIM-Signature fields seen in their headers. */
  messages?: number;
  signatures?: number;
}

export type ChildToParent = { type: 'ready'; port: number; usage: ChildUsage } | { type: 'usage'; usage: ChildUsage } | { type: 'failed'; error: string };
export type ParentToChild = { type: 'usage' } | { type: 'exit' };

/** Child side: this process's usage, plus counters the child keeps. */
export function ownUsage(extra: Pick<ChildUsage, 'messages' | 'signatures'> = {}): ChildUsage {
  const usage = process.resourceUsage();
  return { maxRssBytes: usage.maxRSS * 1024, rssBytes: process.memoryUsage.rss(), cpuMicros: usage.userCPUTime + usage.systemCPUTime, ...extra };
}

/** Child side: answer the parent's requests; exit when told to or when the parent goes away. */
export function serveParent(usage: () => ChildUsage): void {
  process.on('message', (message: ParentToChild) => {
    if (message.type === 'usage') process.send?.({ type: 'usage', usage: usage() } satisfies ChildToParent);
    else if (message.type === 'exit') process.exit(0);
  });
  process.on('disconnect', () => process.exit(0));
}

export class Child {
  readonly name: string;
  readonly port: number;
  /** Usage right after start-up, before any traffic. */
  readonly startUsage: ChildUsage;
  readonly #process: ChildProcess;

  private constructor(name: string, child: ChildProcess, port: number, startUsage: ChildUsage) {
    this.name = name;
    this.#process = child;
    this.port = port;
    this.startUsage = startUsage;
  }

  /**
   * Forks `script` (a .ts file next to this one) with `args`; resolves once it reports ready.
   * With `cpuProfileDir`, the child writes a V8 CPU profile there when it exits.
   */
  static async start(name: string, script: string, args: string[], options: { cpuProfileDir?: string | undefined } = {}): Promise<Child> {
    const execArgv = options.cpuProfileDir ? ['--cpu-prof', `--cpu-prof-dir=${options.cpuProfileDir}`, `--cpu-prof-name=${name}-\${pid}.cpuprofile`] : [];
    const child = fork(new URL(script, import.meta.url), args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv });
    try {
      const ready = await nextMessage(child, name, 30_000);
      if (ready.type !== 'ready') throw new Error(`${name}: ${ready.type === 'failed' ? ready.error : `unexpected ${ready.type}`}`);
      return new Child(name, child, ready.port, ready.usage);
    } catch (error) {
      child.kill('SIGKILL');
      throw error;
    }
  }

  /** The child's process id (memory figures read from /proc). */
  get pid(): number {
    return this.#process.pid as number;
  }

  async usage(): Promise<ChildUsage> {
    const reply = nextMessage(this.#process, this.name, 10_000);
    this.#process.send({ type: 'usage' } satisfies ParentToChild);
    const message = await reply;
    if (message.type !== 'usage') throw new Error(`${this.name}: expected usage, got ${message.type}`);
    return message.usage;
  }

  async stop(): Promise<void> {
    const child = this.#process;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
    if (child.connected) child.send({ type: 'exit' } satisfies ParentToChild);
    else child.kill('SIGTERM');
    await exited;
    clearTimeout(killer);
  }
}

function nextMessage(child: ChildProcess, name: string, timeoutMs: number): Promise<ChildToParent> {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
    };
    const onMessage = (message: ChildToParent) => {
      cleanup();
      resolve(message);
    };
    const onExit = (code: number | null, signal: string | null) => {
      cleanup();
      reject(new Error(`${name} exited (${signal ?? `code ${code}`}) before answering`));
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`${name} did not answer within ${timeoutMs} ms`));
    }, timeoutMs);
    child.on('message', onMessage);
    child.on('exit', onExit);
  });
}

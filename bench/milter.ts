// `npm run bench:milter`: messages submitted over SMTP to a real Postfix (test/helpers/postfix.ts,
// Debian's package unpacked by test/interop/setup-postfix.sh; needs root) that signs through a
// milter, against the same Postfix with no milter, in one run. Setups: `postfix` = no milter
// (baseline), `sello` = sello's milter listener (its own process, bench/sello-process.ts),
// `opendkim` = Debian's OpenDKIM as the milter, where /usr/sbin/opendkim is installed. sello and
// OpenDKIM sign with the same RSA-2048 key, relaxed/relaxed, for mail from 127.0.0.1 (a trusted
// client for both). The clock runs from the first MAIL FROM to the last 250 after the final dot:
// Postfix answers it after the milter has signed (smtpd_milters), so throughput includes the
// milter round trips. Delivery is `discard:` (outside the timed path for every setup alike).
// A message per setup is first delivered to a maildir and checked for the expected signature.
// Owns: flags, the setups, the schedule and the report. Must not: change src/ or time what the
// report does not show.
//
// Flags: --messages N (timed per run, default 1000)  --warmup N (default 200)
//        --concurrency C (default 10)  --size BYTES (default 4096)  --repeat R (default 1)
//        --json (the report as JSON on stdout)

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { generateKey, writeKey } from '../src/signing/keys.ts';
import { startPostfix, type Postfix } from '../test/helpers/postfix.ts';
import { freePort } from '../test/helpers/tools.ts';
import { Child } from './child.ts';
import { LoadGenerator } from './load.ts';
import { buildMessage } from './messages.ts';

const OPENDKIM = '/usr/sbin/opendkim';
const DOMAIN = 'example.org';
const SELECTOR = 'bench';
const RUN_DEADLINE_MS = 300_000;

type SetupName = 'postfix' | 'sello' | 'opendkim';

interface Measurement {
  setup: SetupName;
  messages: number;
  errors: number;
  wallMs: number;
  messagesPerSecond: number;
  /** CPU of the milter process(es) per message, ms (0 for the baseline). */
  milterCpuMsPerMessage: number;
  /** CPU of Postfix's processes (those alive at the end of the run) per message, ms. */
  postfixCpuMsPerMessage: number;
}

function integerFlag(name: string, value: string | undefined, fallback: number, minimum: number): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < minimum) throw new Error(`--${name} must be an integer ≥ ${minimum}, got ${JSON.stringify(value)}`);
  return parsed;
}

function flags() {
  const { values } = parseArgs({
    options: {
      messages: { type: 'string' },
      warmup: { type: 'string' },
      concurrency: { type: 'string' },
      size: { type: 'string' },
      repeat: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
    strict: true,
  });
  return {
    messages: integerFlag('messages', values.messages, 1000, 1),
    warmup: integerFlag('warmup', values.warmup, 200, 0),
    concurrency: integerFlag('concurrency', values.concurrency, 10, 1),
    size: integerFlag('size', values.size, 4096, 512),
    repeat: integerFlag('repeat', values.repeat, 1, 1),
    json: values.json,
  };
}

/** /proc/<pid>/stat utime + stime (clock ticks, 100 per second on Linux), in µs; 0 once gone. */
function cpuMicros(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) / 100) * 1e6;
  } catch {
    return 0;
  }
}

/** Postfix's processes: those whose environment names this Postfix's config directory. */
function postfixPids(postfix: Postfix): number[] {
  const marker = `MAIL_CONFIG=${path.join(postfix.dir, 'etc')}\0`;
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (`${readFileSync(`/proc/${entry}/environ`, 'latin1')}\0`.includes(marker)) pids.push(Number(entry));
    } catch {
      // gone, or not ours to read
    }
  }
  return pids;
}

const totalCpu = (pids: number[]) => pids.reduce((sum, pid) => sum + cpuMicros(pid), 0);

interface Milter {
  port: number;
  cpuMicros(): Promise<number>;
  close(): Promise<void>;
}

async function startSelloMilter(keysDir: string): Promise<Milter> {
  const config = {
    hostname: 'sello.bench.test',
    listeners: [{ name: 'milter', role: 'milter', listen: 'inet:127.0.0.1:0', trustedNetworks: ['127.0.0.0/8'], verify: false }],
    signing: { keysDir, domains: { [DOMAIN]: SELECTOR } },
    logging: { level: 'silent' },
    workers: 1,
  };
  const child = await Child.start('sello', path.join(import.meta.dirname, 'sello-process.ts'), [JSON.stringify(config), 'milter']);
  return { port: child.port, cpuMicros: async () => (await child.usage()).cpuMicros, close: () => child.stop() };
}

async function startOpenDkim(keysDir: string, workDir: string): Promise<Milter> {
  const port = await freePort('127.0.0.1');
  const conf = path.join(workDir, 'opendkim.conf');
  await writeFile(
    conf,
    [
      'Syslog no',
      'Mode s',
      `Socket inet:${port}@127.0.0.1`,
      `Domain ${DOMAIN}`,
      `Selector ${SELECTOR}`,
      `KeyFile ${path.join(keysDir, DOMAIN, `${SELECTOR}.pem`)}`,
      'Canonicalization relaxed/relaxed',
      'SignatureAlgorithm rsa-sha256',
      'InternalHosts 127.0.0.0/8',
      `PidFile ${path.join(workDir, 'opendkim.pid')}`,
      '',
    ].join('\n'),
  );
  const daemon: ChildProcess = spawn(OPENDKIM, ['-f', '-x', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  daemon.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  // Ready when the socket accepts a connection.
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (daemon.exitCode !== null) throw new Error(`opendkim exited (${daemon.exitCode}): ${stderr}`);
    const open = await new Promise<boolean>((resolve) => {
      const probe = net.connect(port, '127.0.0.1', () => {
        probe.destroy();
        resolve(true);
      });
      probe.on('error', () => resolve(false));
    });
    if (open) break;
    if (Date.now() > deadline) throw new Error(`opendkim did not listen on ${port}: ${stderr}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const pid = daemon.pid as number;
  return {
    port,
    cpuMicros: async () => cpuMicros(pid),
    close: async () => {
      const exited = new Promise((resolve) => daemon.once('exit', resolve));
      daemon.kill('SIGTERM');
      await exited;
    },
  };
}

async function measure(setup: SetupName, options: ReturnType<typeof flags>, keysDir: string, workDir: string): Promise<Measurement> {
  const milter = setup === 'sello' ? await startSelloMilter(keysDir) : setup === 'opendkim' ? await startOpenDkim(keysDir, workDir) : undefined;
  let postfix: Postfix | undefined;
  try {
    postfix = await startPostfix({
      localDomains: ['example.net'],
      mainConfig: [
        'smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination',
        'transport_maps = inline:{remote.example=discard:}',
        'default_process_limit = 100',
        ...(milter ? [`smtpd_milters = inet:127.0.0.1:${milter.port}`, 'milter_default_action = tempfail', 'milter_protocol = 6'] : []),
      ],
    });
    const message = buildMessage(options.size, DOMAIN);
    // One delivered copy, checked: the milter signed it (or, for the baseline, nobody did).
    const load = await LoadGenerator.open(postfix.port, options.concurrency);
    try {
      const check = await load.run(1, { from: `alice@${DOMAIN}`, to: ['bob@example.net'] }, message, { deadlineMs: 30_000 });
      if (check.errors) throw new Error(`${setup}: the check message failed: ${check.errorSamples.join('; ')}`);
      const [delivered] = await postfix.waitForMessages(1, 20_000);
      const signed = /^DKIM-Signature:[^\r]*\r\n(?:[ \t][^\r]*\r\n)*/m.exec(delivered?.toString('latin1') ?? '')?.[0] ?? '';
      const expected = milter !== undefined;
      if (expected !== signed.includes(`s=${SELECTOR}`)) throw new Error(`${setup}: expected ${expected ? 'a' : 'no'} DKIM-Signature with s=${SELECTOR}, got ${JSON.stringify(signed)}`);
      const envelope = { from: `alice@${DOMAIN}`, to: ['bob@remote.example'] };
      if (options.warmup > 0) await load.run(options.warmup, envelope, message, { deadlineMs: RUN_DEADLINE_MS });
      const pidsBefore = postfixPids(postfix);
      const postfixBefore = totalCpu(pidsBefore);
      const milterBefore = (await milter?.cpuMicros()) ?? 0;
      const result = await load.run(options.messages, envelope, message, { deadlineMs: RUN_DEADLINE_MS });
      const milterAfter = (await milter?.cpuMicros()) ?? 0;
      const pidsAfter = postfixPids(postfix);
      // Processes started during the run count from zero; ones that exited are lost (rare: smtpd
      // stays for max_idle, and the sessions stay open).
      const postfixAfter = totalCpu(pidsAfter);
      const postfixDelta = postfixAfter - postfixBefore;
      const accepted = result.sent - result.errors;
      return {
        setup,
        messages: accepted,
        errors: result.errors,
        wallMs: result.wallMs,
        messagesPerSecond: (accepted / result.wallMs) * 1000,
        milterCpuMsPerMessage: accepted ? (milterAfter - milterBefore) / 1000 / accepted : 0,
        postfixCpuMsPerMessage: accepted ? Math.max(0, postfixDelta) / 1000 / accepted : 0,
      };
    } finally {
      load.close();
    }
  } finally {
    await postfix?.close();
    await milter?.close();
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? (sorted[middle] as number) : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

async function main(): Promise<void> {
  const options = flags();
  if (process.getuid?.() !== 0) throw new Error('bench:milter runs a real Postfix: run it as root (after test/interop/setup-postfix.sh)');
  const setups: SetupName[] = ['postfix', 'sello', ...(existsSync(OPENDKIM) ? (['opendkim'] as const) : [])];
  // Not under /tmp: OpenDKIM refuses a config file in a directory others can write.
  const workDir = await mkdtemp(path.join(os.homedir(), '.sello-bench-milter-'));
  const keysDir = path.join(workDir, 'keys');
  try {
    await writeKey(keysDir, DOMAIN, SELECTOR, generateKey('rsa'));
    await chmod(path.join(keysDir, DOMAIN, `${SELECTOR}.pem`), 0o600);
    const runs: Measurement[] = [];
    for (let round = 0; round < options.repeat; round++) {
      // Interleaved, so slow drift on a noisy machine hits every setup alike.
      for (const setup of setups) {
        const run = await measure(setup, options, keysDir, workDir);
        runs.push(run);
        if (!options.json) process.stderr.write(`${setup} round ${round + 1}: ${run.messagesPerSecond.toFixed(1)} msg/s, ${run.errors} errors\n`);
      }
    }
    const summary = setups.map((setup) => {
      const own = runs.filter((run) => run.setup === setup);
      return {
        setup,
        messagesPerSecond: median(own.map((run) => run.messagesPerSecond)),
        milterCpuMsPerMessage: median(own.map((run) => run.milterCpuMsPerMessage)),
        postfixCpuMsPerMessage: median(own.map((run) => run.postfixCpuMsPerMessage)),
        errors: own.reduce((sum, run) => sum + run.errors, 0),
      };
    });
    const rate = (setup: SetupName) => summary.find((entry) => entry.setup === setup)?.messagesPerSecond;
    const ratios = {
      selloVsPostfix: (rate('sello') ?? 0) / (rate('postfix') ?? 1),
      ...(rate('opendkim') ? { opendkimVsPostfix: (rate('opendkim') ?? 0) / (rate('postfix') ?? 1), selloVsOpendkim: (rate('sello') ?? 0) / (rate('opendkim') ?? 1) } : {}),
    };
    const report = { options: { ...options, json: undefined }, node: process.version, cpus: os.cpus().length, summary, ratios, runs };
    if (options.json) {
      process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      return;
    }
    const lines = [
      `bench:milter — ${options.messages} messages of ${options.size} bytes per run, ${options.concurrency} SMTP sessions, ${options.repeat} round(s), medians`,
      '',
      '| setup | msg/s | milter CPU ms/msg | Postfix CPU ms/msg | errors |',
      '|---|---|---|---|---|',
      ...summary.map((entry) => `| ${entry.setup} | ${entry.messagesPerSecond.toFixed(1)} | ${entry.milterCpuMsPerMessage.toFixed(3)} | ${entry.postfixCpuMsPerMessage.toFixed(3)} | ${entry.errors} |`),
      '',
      `sello / no milter: ${ratios.selloVsPostfix.toFixed(2)}`,
      ...('selloVsOpendkim' in ratios ? [`OpenDKIM / no milter: ${ratios.opendkimVsPostfix?.toFixed(2)}`, `sello / OpenDKIM: ${ratios.selloVsOpendkim?.toFixed(2)} (target ≥ 1.5, with less milter CPU per message)`] : ['(OpenDKIM not installed: no third column)']),
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

await main();

// The fuzz suite's harness (issue 10): runs generated sessions (sessions.ts) against an
// in-process sello with submission, mx and filter listeners, a real SMTP sink that counts its
// connections, and a DNS server on loopback; then checks what must hold after any abuse:
// sello answers a normal transaction, logged nothing at error level, left no downstream
// connection open, delivered every acknowledged message exactly once, and its RSS after a GC is
// within a bound of where it started. Must not: assert anything about single replies (the
// component tests do), or run unbounded: every session has a deadline.

import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { startSello } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import { startDnsServer } from '../helpers/dns-server.ts';
import { captureLog } from '../helpers/log.ts';
import { makeKeys } from '../helpers/sello.ts';
import { sendMail } from '../helpers/smtp-dialog.ts';
import { startSink } from '../helpers/smtp-sink.ts';
import { generateSession, type FuzzSession } from './sessions.ts';

v8.setFlagsFromString('--expose-gc');
const collectGarbage = vm.runInNewContext('gc') as () => void;

/**
 * RSS growth allowed after a GC over the second half of a run, from RSS after a GC at half-way.
 * The allocator keeps the native memory concurrent sessions needed (TLS, socket buffers, huge
 * lines) and returns little of it, so RSS from the start of a run measures that plateau, not a
 * leak; a leak grows with every session, so the second half shows it.
 */
export const RSS_BOUND_BYTES = 64 * 1024 * 1024;
/** No session may take longer than this; the client cuts it then. */
const SESSION_DEADLINE_MS = 10_000;
/** How long a "read" waits for a reply before the client goes on. */
const READ_WAIT_MS = 400;

export interface FuzzOptions {
  sessions: number;
  seed: number;
  /** Sessions open at once. */
  concurrency?: number;
  onProgress?: (done: number) => void;
}

export interface FuzzReport {
  sessions: number;
  seed: number;
  durationMs: number;
  /** Messages sello acknowledged with 250 after the final dot. */
  acknowledged: number;
  /** Messages the sink received (acknowledged, plus those whose client left before the reply). */
  delivered: number;
  /** Acknowledged messages not delivered exactly once (must be 0). */
  notDeliveredOnce: number;
  /** Messages delivered more than once (must be 0). */
  duplicates: number;
  errorRecords: Record<string, unknown>[];
  warnRecords: number;
  /** Downstream connections still open after the run settled (must be 0). */
  downstreamOpen: number;
  downstreamOpened: number;
  /** The normal transaction after the run: the reply to its final dot. */
  afterRun: string;
  rssBeforeBytes: number;
  rssAfterBytes: number;
  /** V8 heap in use at half-way and after (after a GC): tells a leak from an allocator keeping pages. */
  heapBeforeBytes: number;
  heapAfterBytes: number;
  /** Sessions the client had to cut at SESSION_DEADLINE_MS. */
  cutByClient: number;
}

/** Runs one generated session; resolves with the replies it received. */
function runSession(port: number, session: FuzzSession): Promise<{ received: string; cut: boolean }> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    socket.setEncoding('latin1');
    let received = '';
    let closed = false;
    let cut = false;
    let wake: (() => void) | undefined;
    socket.on('data', (text: string) => {
      received += text;
      wake?.();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      closed = true;
      wake?.();
    });
    const deadline = setTimeout(() => {
      cut = true;
      socket.destroy();
    }, SESSION_DEADLINE_MS);
    const waitForMore = (ms: number) =>
      new Promise<void>((resolveWait) => {
        const before = received.length;
        const timer = setTimeout(done, ms);
        function done() {
          clearTimeout(timer);
          wake = undefined;
          resolveWait();
        }
        wake = () => {
          if (closed || (received.length > before && received.endsWith('\r\n'))) done();
        };
      });
    const writable = () => !closed && !socket.destroyed && socket.writable;
    const run = async () => {
      await new Promise<void>((resolveConnect) => socket.once('connect', resolveConnect).once('close', resolveConnect));
      await waitForMore(2000); // the greeting
      for (const action of session.actions) {
        if (!writable()) break;
        if (action.kind === 'write') socket.write(action.bytes);
        else if (action.kind === 'pause') await new Promise((resolvePause) => setTimeout(resolvePause, action.ms));
        else if (action.kind === 'read') await waitForMore(READ_WAIT_MS);
        else {
          socket.write('STARTTLS\r\n');
          await waitForMore(READ_WAIT_MS);
          // Whatever the answer, what follows is no TLS handshake; the session ends after it.
          if (writable()) socket.write(action.bytes);
          await waitForMore(READ_WAIT_MS);
          break;
        }
      }
      if (writable()) {
        if (session.ending === 'quit') socket.end('QUIT\r\n');
        else if (session.ending === 'fin') socket.end();
        else if (session.ending === 'reset') socket.resetAndDestroy();
        else socket.destroy();
      }
      if (!closed) await waitForMore(2000);
      if (!closed) socket.destroy();
    };
    void run().finally(() => {
      clearTimeout(deadline);
      resolve({ received, cut });
    });
  });
}

export async function runFuzz(options: FuzzOptions): Promise<FuzzReport> {
  const concurrency = options.concurrency ?? 16;
  const cleanup: (() => Promise<unknown>)[] = [];
  try {
    const sink = await startSink();
    cleanup.push(() => sink.close());
    const dns = await startDnsServer({});
    cleanup.push(() => dns.close());
    const { keysDir } = await makeKeys([{ domain: 'example.com', selector: 'fuzz', algorithm: 'ed25519' }]);
    cleanup.push(() => rm(keysDir, { recursive: true, force: true }));
    const log = captureLog('warn');
    const config = parseConfig({
      hostname: 'sello.test',
      listeners: [
        { name: 'submission', role: 'submission', listen: '127.0.0.1:0', tls: { mode: 'starttls' }, trustedNetworks: ['127.0.0.0/8'] },
        { name: 'mx', role: 'mx', listen: '127.0.0.1:0' },
        { name: 'filter', role: 'filter', listen: '127.0.0.1:0' },
      ],
      inbound: { localDomains: ['example.net'] },
      relay: { target: sink.url, starttls: 'never' },
      signing: { keysDir, domains: { 'example.com': 'fuzz' } },
      dns: { servers: [dns.address], timeout: '1s' },
      limits: { commandTimeout: '3s', maxMessageSize: '256KiB' },
      shutdown: { deadline: '2s' },
    });
    const running = await startSello(config, log.logger, { metrics: undefined });
    cleanup.unshift(() => running.close());
    const port = (name: FuzzSession['listener']) => running.addresses.get(name)?.port ?? 0;
    // Warm up (first TLS context, key, DNS cache) before the baseline.
    await sendMail(port('submission'), { from: 'alice@example.com', to: ['bob@example.net'], data: 'From: alice@example.com\r\nMessage-ID: <warm-up@fuzz.test>\r\nSubject: warm-up\r\n\r\nwarm\r\n' });
    const started = performance.now();
    const warmUp = Math.ceil(options.sessions / 2);
    let rssBeforeBytes = 0;
    let heapBeforeBytes = 0;
    const acknowledgedIds = new Set<string>();
    // The sink keeps what it receives; only the token of each message is kept here, so the RSS
    // check measures sello, not the test's copy of every message.
    const tokens: string[] = [];
    const takeTokens = () => {
      for (let index = tokens.length; index < sink.messages.length; index++) {
        const message = sink.messages[index] as (typeof sink.messages)[number];
        tokens.push(/^Message-ID: <([^>]+)>/im.exec(message.data.toString('latin1'))?.[1] ?? '');
        message.data = Buffer.alloc(0);
      }
    };
    let cutByClient = 0;
    let next = 0;
    let done = 0;
    const worker = async (limit: number) => {
      while (next < limit) {
        const session = generateSession(options.seed, next++);
        const { received, cut } = await runSession(port(session.listener), session);
        if (cut) cutByClient++;
        takeTokens();
        for (const match of received.matchAll(/^250 2\.0\.0 OK: queued as (SINK\d+)\r$/gm)) acknowledgedIds.add(match[1] as string);
        options.onProgress?.(++done);
      }
    };
    await Promise.all(Array.from({ length: concurrency }, () => worker(warmUp)));
    collectGarbage();
    ({ rss: rssBeforeBytes, heapUsed: heapBeforeBytes } = process.memoryUsage());
    await Promise.all(Array.from({ length: concurrency }, () => worker(options.sessions)));
    const durationMs = performance.now() - started;

    const afterRun = await sendMail(port('submission'), { from: 'alice@example.com', to: ['bob@example.net'], data: 'From: alice@example.com\r\nMessage-ID: <after-run@fuzz.test>\r\nSubject: after the run\r\n\r\nstill here\r\n' });
    // Sessions close asynchronously: give the downstream connections a moment to go.
    const settleBy = Date.now() + 5000;
    while (sink.connections.open > 0 && Date.now() < settleBy) await new Promise((resolve) => setTimeout(resolve, 50));
    takeTokens();
    collectGarbage();
    const { rss: rssAfterBytes, heapUsed: heapAfterBytes } = process.memoryUsage();

    // A message cut short before its Message-ID has no token; it can still not be there twice
    // under another's (each token is unique to one generated message).
    const named = tokens.filter(Boolean);
    const duplicates = named.length - new Set(named).size;
    const count = new Map<string, number>();
    for (const token of named) count.set(token, (count.get(token) ?? 0) + 1);
    let notDeliveredOnce = 0;
    for (const id of acknowledgedIds) {
      const token = tokens[Number(id.slice('SINK'.length)) - 1];
      if (token === undefined || (token !== '' && count.get(token) !== 1)) notDeliveredOnce++;
    }
    const records = log.records();
    return {
      sessions: options.sessions,
      seed: options.seed,
      durationMs: Math.round(durationMs),
      acknowledged: acknowledgedIds.size,
      delivered: sink.messages.length,
      notDeliveredOnce,
      duplicates,
      errorRecords: records.filter((record) => Number(record.level) >= 50),
      warnRecords: records.filter((record) => Number(record.level) === 40 && !String(record.msg).startsWith('no tls.cert')).length,
      downstreamOpen: sink.connections.open,
      downstreamOpened: sink.connections.opened,
      afterRun: afterRun.data ?? `no DATA: ${JSON.stringify(afterRun)}`,
      rssBeforeBytes,
      rssAfterBytes,
      heapBeforeBytes,
      heapAfterBytes,
      cutByClient,
    };
  } finally {
    for (const step of cleanup) await step().catch(() => undefined);
  }
}

/** What must hold after a run; empty when everything does. */
export function violations(report: FuzzReport): string[] {
  const found: string[] = [];
  if (!report.afterRun.startsWith('250 ')) found.push(`a normal transaction after the run got ${report.afterRun}`);
  if (report.errorRecords.length > 0) found.push(`${report.errorRecords.length} error-level log records, first: ${JSON.stringify(report.errorRecords[0])}`);
  if (report.downstreamOpen !== 0) found.push(`${report.downstreamOpen} downstream connections left open`);
  if (report.notDeliveredOnce !== 0) found.push(`${report.notDeliveredOnce} acknowledged messages not delivered exactly once`);
  if (report.duplicates !== 0) found.push(`${report.duplicates} messages delivered twice`);
  const growth = report.rssAfterBytes - report.rssBeforeBytes;
  if (growth > RSS_BOUND_BYTES) found.push(`RSS grew by ${(growth / 1048576).toFixed(1)} MiB (bound ${RSS_BOUND_BYTES / 1048576} MiB)`);
  return found;
}

/** A few lines for people: the figures the README's reliability section quotes. */
export function formatReport(report: FuzzReport): string {
  const mib = (bytes: number) => `${(bytes / 1048576).toFixed(1)} MiB`;
  return [
    `fuzz: ${report.sessions} sessions, seed ${report.seed}, ${(report.durationMs / 1000).toFixed(1)} s`,
    `  acknowledged ${report.acknowledged}, delivered ${report.delivered}, not delivered exactly once ${report.notDeliveredOnce}, duplicates ${report.duplicates}`,
    `  error-level records ${report.errorRecords.length}, warn-level records ${report.warnRecords}`,
    `  downstream connections opened ${report.downstreamOpened}, left open ${report.downstreamOpen}`,
    `  after the run: ${report.afterRun}`,
    `  RSS at half-way ${mib(report.rssBeforeBytes)}, after run + GC ${mib(report.rssAfterBytes)} (growth ${mib(report.rssAfterBytes - report.rssBeforeBytes)}, bound ${mib(RSS_BOUND_BYTES)})`,
    `  V8 heap used at half-way ${mib(report.heapBeforeBytes)}, after run + GC ${mib(report.heapAfterBytes)}`,
    `  sessions cut by the client at ${SESSION_DEADLINE_MS} ms: ${report.cutByClient}`,
  ].join('\n');
}

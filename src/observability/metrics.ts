// Every Prometheus metric sello exports, in one file: the contract of docs/metrics.md (names, types,
// labels), the histogram buckets, and typed recording methods with bounded label values.
// Owns: the private Registry of one running sello (tests create several) and the default process
// metrics on it. Must not: serve HTTP (http.ts does), decide anything, or take a label value from
// a client (addresses, HELO names, unconfigured domains): every label is configured or enumerated.

import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import packageJson from '../../package.json' with { type: 'json' };
import type { RelayErrorKind } from '../errors.ts';

export const METRIC_PREFIX = 'sello_';

/** The SMTP stage a reply answers (a reply to any other command is not counted). */
export type ReplyStage = 'connect' | 'helo' | 'auth' | 'mail' | 'rcpt' | 'data';
export type TransactionOutcome = 'relayed' | 'rejected' | 'deferred';
export type UnsignedReason = 'domain-not-configured' | 'from-not-single' | 'listener-does-not-sign';
export type SignatureAlgorithm = 'rsa-sha256' | 'ed25519-sha256';
export type SpfAction = 'tag' | 'defer' | 'reject';
export type ConfigLoadResult = 'success' | 'failure';
/** sealed: an ARC set was added; skipped: RFC 8617 allows none (chain ended or full); failed: relayed unsealed. */
export type ArcSealResult = 'sealed' | 'skipped' | 'failed';

/** A loaded signing key as sello_key_info and sello_key_age_seconds describe it. */
export interface KeyMetadata {
  /** The configured signing domain (d=). */
  domain: string;
  selector: string;
  algorithm: SignatureAlgorithm;
  /** RSA modulus length; 256 for Ed25519. */
  bits: number;
  /** The key file's modification time. */
  modified: Date;
}

/** What components record; each method keeps its label values bounded. Injected everywhere. */
export interface Metrics {
  /** The registry /metrics serves. */
  readonly registry: Registry;
  connectionOpened(listener: string): void;
  connectionClosed(listener: string): void;
  /** A client cut at its command or DATA deadline; `stress`: the shorter one near maxConnections. */
  clientTimeout(listener: string, kind: 'command' | 'data', stress: boolean): void;
  reply(listener: string, stage: ReplyStage, code: number): void;
  /** One finished transaction (reached DATA) and its duration from MAIL FROM. */
  transaction(listener: string, outcome: TransactionOutcome, seconds: number): void;
  spfResult(identity: 'mailfrom' | 'helo', result: string, action: SpfAction): void;
  spfDuration(seconds: number): void;
  signature(domain: string, selector: string, algorithm: SignatureAlgorithm, result: 'signed' | 'error'): void;
  signingDuration(seconds: number): void;
  unsigned(listener: string, reason: UnsignedReason): void;
  dkimVerification(result: string): void;
  dmarcResult(result: string, policy: string): void;
  arcResult(result: string): void;
  /** One ARC sealing attempt (inbound.arc.seal on, inbound checks ran). */
  arcSeal(result: ArcSealResult): void;
  relayError(relay: string, kind: RelayErrorKind): void;
  relayDuration(relay: string, seconds: number): void;
  dnsQueryDuration(seconds: number): void;
  /** Replaces the set of loaded keys (start and every successful reload). */
  keysLoaded(keys: readonly KeyMetadata[]): void;
  /** A SIGHUP reload; `success` also sets the last-success timestamp. */
  configReload(result: ConfigLoadResult): void;
  /** The first load at start: sets the last-success timestamp without counting a reload. */
  configLoaded(): void;
  /** Replaces the rotation state of every signing key (sello_dkim_key_state): pending, active, retiring. */
  dkimKeyStates(keys: readonly { domain: string; selector: string; state: DkimKeyState }[]): void;
  /** The server promoted a pending key of a configured signing domain. */
  dkimKeyPromoted(domain: string): void;
}

/** A signing key's place in a rotation (docs/rotation.md). */
export type DkimKeyState = 'pending' | 'active' | 'retiring';

// Bucket bounds in seconds, chosen for what each step costs on a healthy system and where it
// hurts: local CPU work in milliseconds, DNS in tens of milliseconds, the MTA's queue write in
// up to seconds, and the long tail up to the protocol's own timeouts (RFC 5321 §4.5.3.2).
const BUCKETS = {
  // MAIL FROM to the final reply includes the client's upload of the message.
  transaction: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 180, 600],
  // Cached records answer in microseconds; a cold evaluation is up to 10 lookups (RFC 7208 §4.6.4)
  // within the 20 s default time budget.
  spf: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20],
  // RSA-2048 signs in about a millisecond; large bodies hash longer.
  signing: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
  // One lookup: a nearby recursive server answers in milliseconds; the default timeout is 5 s.
  dns: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  // DATA to the MTA's reply to the final dot (RFC 5321 §4.5.3.2.6 allows it 10 minutes).
  relay: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 180, 600],
} as const;

const DKIM_RESULTS = new Set(['pass', 'fail', 'neutral', 'none', 'temperror', 'permerror', 'policy']);
const DMARC_RESULTS = new Set(['pass', 'fail', 'none', 'temperror', 'permerror']);
const DMARC_POLICIES = new Set(['none', 'quarantine', 'reject']);
const ARC_RESULTS = new Set(['pass', 'fail', 'none']);
const SPF_RESULTS = new Set(['pass', 'fail', 'softfail', 'neutral', 'none', 'temperror', 'permerror']);

/** A value outside `allowed` (a library's surprise) is reported as `fallback`, never as itself. */
function bounded(value: string, allowed: ReadonlySet<string>, fallback: string): string {
  return allowed.has(value) ? value : fallback;
}

/** Only three-digit SMTP codes; anything else would be a bug, not a label. */
function replyCode(code: number): string | undefined {
  return Number.isInteger(code) && code >= 200 && code <= 599 ? String(code) : undefined;
}

export interface MetricsOptions {
  /** prom-client's process and Node.js metrics (sello_process_*, sello_nodejs_*); default true. */
  defaultMetrics?: boolean;
  /** Wall clock for key ages and reload timestamps (tests). */
  now?: () => Date;
}

export function createMetrics(options: MetricsOptions = {}): Metrics {
  const registry = new Registry();
  const now = options.now ?? (() => new Date());
  if (options.defaultMetrics !== false) {
    collectDefaultMetrics({ register: registry, prefix: METRIC_PREFIX });
    // prom-client names these three gauges "…_total", which Prometheus reserves for counters
    // (promtool check metrics flags them); sello does without them rather than mislead.
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
      registry.removeSingleMetric(`${METRIC_PREFIX}${name}`);
    }
  }
  const registers = [registry];

  const transactions = new Counter({
    name: 'sello_transactions_total',
    help: 'Finished mail transactions (one per DATA) by listener and outcome.',
    labelNames: ['listener', 'outcome'] as const,
    registers,
  });
  const replies = new Counter({
    name: 'sello_smtp_replies_total',
    help: 'Replies sello sent to clients, by listener, SMTP stage and reply code.',
    labelNames: ['listener', 'stage', 'code'] as const,
    registers,
  });
  const spfResults = new Counter({
    name: 'sello_spf_results_total',
    help: 'SPF evaluations on mx: the decisive identity, its result and the configured action.',
    labelNames: ['identity', 'result', 'action'] as const,
    registers,
  });
  const signatures = new Counter({
    name: 'sello_dkim_signatures_total',
    help: 'DKIM signatures made, by configured signing domain, selector, algorithm and result.',
    labelNames: ['domain', 'selector', 'algorithm', 'result'] as const,
    registers,
  });
  const unsigned = new Counter({
    name: 'sello_unsigned_messages_total',
    help: 'Messages relayed without a signature, by listener and reason.',
    labelNames: ['listener', 'reason'] as const,
    registers,
  });
  const dkimVerifications = new Counter({
    name: 'sello_dkim_verifications_total',
    help: 'Inbound DKIM signatures verified, by result (none: the message had no signature).',
    labelNames: ['result'] as const,
    registers,
  });
  const dmarcResults = new Counter({
    name: 'sello_dmarc_results_total',
    help: 'Inbound DMARC evaluations, by result and published policy.',
    labelNames: ['result', 'policy'] as const,
    registers,
  });
  const arcResults = new Counter({
    name: 'sello_arc_results_total',
    help: 'Inbound ARC evaluations, by result.',
    labelNames: ['result'] as const,
    registers,
  });
  const arcSeals = new Counter({
    name: 'sello_arc_seals_total',
    help: 'ARC sealing of checked inbound mail (inbound.arc.seal), by result: sealed, skipped (RFC 8617 allows no new set), failed (relayed unsealed).',
    labelNames: ['result'] as const,
    registers,
  });
  const relayErrors = new Counter({
    name: 'sello_relay_errors_total',
    help: 'Downstream failures, by configured relay and kind.',
    labelNames: ['relay', 'kind'] as const,
    registers,
  });
  const transactionDuration = new Histogram({
    name: 'sello_transaction_duration_seconds',
    help: 'Time from MAIL FROM to the final reply after DATA.',
    labelNames: ['listener'] as const,
    buckets: [...BUCKETS.transaction],
    registers,
  });
  const spfDuration = new Histogram({
    name: 'sello_spf_duration_seconds',
    help: 'One SPF evaluation (one identity).',
    buckets: [...BUCKETS.spf],
    registers,
  });
  const signingDuration = new Histogram({
    name: 'sello_signing_duration_seconds',
    help: 'Signing one message (all its signatures).',
    buckets: [...BUCKETS.signing],
    registers,
  });
  const dnsDuration = new Histogram({
    name: 'sello_dns_query_duration_seconds',
    help: 'One DNS lookup that was not answered from the cache.',
    buckets: [...BUCKETS.dns],
    registers,
  });
  const relayDuration = new Histogram({
    name: 'sello_relay_duration_seconds',
    help: "Time from DATA to the MTA's final reply, by configured relay.",
    labelNames: ['relay'] as const,
    buckets: [...BUCKETS.relay],
    registers,
  });
  const clientTimeouts = new Counter({
    name: 'sello_client_timeouts_total',
    help: 'Clients cut at their command or DATA deadline (421 4.4.2); stress="true": the shorter limits.stressTimeout near maxConnections',
    labelNames: ['listener', 'kind', 'stress'],
    registers,
  });
  const activeConnections = new Gauge({
    name: 'sello_active_connections',
    help: 'Open client connections, by listener.',
    labelNames: ['listener'] as const,
    registers,
  });

  let loadedKeys: readonly KeyMetadata[] = [];
  new Gauge({
    name: 'sello_key_info',
    help: 'Keys loaded (value 1), the signing table keys and the ARC sealing key, by domain, selector, algorithm and bits.',
    labelNames: ['domain', 'selector', 'algorithm', 'bits'] as const,
    registers,
    // Across workers (src/cluster/): each loads the same keys.
    aggregator: 'max',
    collect() {
      this.reset();
      for (const key of loadedKeys) this.set({ domain: key.domain, selector: key.selector, algorithm: key.algorithm, bits: String(key.bits) }, 1);
    },
  });
  new Gauge({
    name: 'sello_key_age_seconds',
    help: "Age of each loaded key's file (from its modification time).",
    labelNames: ['domain', 'selector'] as const,
    registers,
    aggregator: 'max',
    collect() {
      this.reset();
      const at = now().getTime();
      for (const key of loadedKeys) this.set({ domain: key.domain, selector: key.selector }, Math.max(0, (at - key.modified.getTime()) / 1000));
    },
  });
  const configReloads = new Counter({
    name: 'sello_config_reloads_total',
    help: 'SIGHUP reloads of the config and keys, by result.',
    labelNames: ['result'] as const,
    registers,
    // One SIGHUP reloads every worker: counted once, not once per worker.
    aggregator: 'max',
  });
  const lastReloadSuccess = new Gauge({
    name: 'sello_config_last_reload_success_timestamp_seconds',
    help: 'Unix time of the last successful load of the config (start or reload).',
    registers,
    // The worker that loaded it longest ago.
    aggregator: 'min',
  });
  const buildInfo = new Gauge({
    name: 'sello_build_info',
    help: 'Build information (value 1).',
    labelNames: ['version', 'node_version'] as const,
    registers,
    aggregator: 'first',
  });
  buildInfo.set({ version: packageJson.version, node_version: process.version }, 1);
  // Both reload results exist from the start, so rate() and alerts see a 0 rather than nothing.
  configReloads.inc({ result: 'success' }, 0);
  configReloads.inc({ result: 'failure' }, 0);

  let dkimKeyStates: readonly { domain: string; selector: string; state: DkimKeyState }[] = [];
  new Gauge({
    name: 'sello_dkim_key_state',
    help: 'Signing keys by rotation state (value 1): pending (waiting for its DNS record), active (signing), retiring.',
    labelNames: ['domain', 'selector', 'state'] as const,
    registers,
    collect() {
      this.reset();
      for (const key of dkimKeyStates) this.set({ domain: key.domain, selector: key.selector, state: key.state }, 1);
    },
  });
  const dkimKeyPromotions = new Counter({
    name: 'sello_dkim_key_promotions_total',
    help: 'Pending DKIM keys this process promoted to signing after DNS served their record, by signing domain.',
    labelNames: ['domain'] as const,
    registers,
  });

  const setLoaded = () => lastReloadSuccess.set(now().getTime() / 1000);

  return {
    registry,
    connectionOpened: (listener) => activeConnections.inc({ listener }),
    connectionClosed: (listener) => activeConnections.dec({ listener }),
    clientTimeout: (listener, kind, stress) => clientTimeouts.inc({ listener, kind, stress: String(stress) }),
    reply(listener, stage, code) {
      const label = replyCode(code);
      if (label) replies.inc({ listener, stage, code: label });
    },
    transaction(listener, outcome, seconds) {
      transactions.inc({ listener, outcome });
      transactionDuration.observe({ listener }, seconds);
    },
    spfResult: (identity, result, action) => spfResults.inc({ identity, result: bounded(result, SPF_RESULTS, 'temperror'), action }),
    spfDuration: (seconds) => spfDuration.observe(seconds),
    signature: (domain, selector, algorithm, result) => signatures.inc({ domain, selector, algorithm, result }),
    signingDuration: (seconds) => signingDuration.observe(seconds),
    unsigned: (listener, reason) => unsigned.inc({ listener, reason }),
    dkimVerification: (result) => dkimVerifications.inc({ result: bounded(result, DKIM_RESULTS, 'permerror') }),
    dmarcResult: (result, policy) =>
      dmarcResults.inc({ result: bounded(result, DMARC_RESULTS, 'permerror'), policy: bounded(policy, DMARC_POLICIES, 'unknown') }),
    arcResult: (result) => arcResults.inc({ result: bounded(result, ARC_RESULTS, 'fail') }),
    arcSeal: (result) => arcSeals.inc({ result }),
    relayError: (relay, kind) => relayErrors.inc({ relay, kind }),
    relayDuration: (relay, seconds) => relayDuration.observe({ relay }, seconds),
    dnsQueryDuration: (seconds) => dnsDuration.observe(seconds),
    keysLoaded(keys) {
      loadedKeys = keys.map((key) => ({ ...key }));
    },
    configReload(result) {
      configReloads.inc({ result });
      if (result === 'success') setLoaded();
    },
    configLoaded: setLoaded,
    dkimKeyStates(keys) {
      dkimKeyStates = keys.map((key) => ({ ...key }));
    },
    dkimKeyPromoted: (domain) => dkimKeyPromotions.inc({ domain }),
  };
}

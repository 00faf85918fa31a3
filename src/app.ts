// The composition root: a validated Config → running listeners with their dependencies.
// Owns: wiring (key store, signer, pipeline, relay targets, listeners, metrics, the operations
// endpoint), the atomic swap of all of it on reload, and graceful shutdown.
// Must not: parse argv, read the config file or handle signals (cli/, config/), or hold
// per-message logic.

import { CredentialStore } from './auth/credentials.ts';
import type { Config, ListenerConfig, RelayConfig } from './config/schema.ts';
import { createResolver, type DnsResolver } from './dns/resolver.ts';
import { BindError, ConfigError } from './errors.ts';
import { cachedReadiness, startOperationsEndpoint, type OperationsEndpoint, type ReadinessCheck, type ReadinessReport } from './observability/http.ts';
import type { Logger } from './observability/logger.ts';
import { createMetrics, type Metrics } from './observability/metrics.ts';
import { releaseMemoryWhenIdle, removeLeftoverSpillFiles, spillDirectoryOf } from './message/index.ts';
import { InboundChecks, MessagePipeline, TransactionEngine, type Engine, type FrontEnd } from './pipeline/index.ts';
import { createRelayTarget, mtaSeesRealClient } from './relay/index.ts';
import type { RelayTarget } from './relay/types.ts';
import { ArcSealer } from './signing/arc-sealer.ts';
import { loadArcSealKey, loadKeyStore, type KeyInfo, type KeyStore } from './signing/key-store.ts';
import { rotatedSigningDomains, type HeldPromotions } from './signing/rotation.ts';
import { RotationWatcher } from './signing/rotation-watcher.ts';
import { Signer } from './signing/signer.ts';
import { SigningTable } from './signing/table.ts';
import { MilterServer } from './milter/server.ts';
import { Listener, type ListenerDependencies } from './smtp/listener.ts';
import { loadTlsMaterial, type TlsMaterial } from './smtp/tls.ts';

export interface RunningSello {
  /** Bound addresses by listener name (port 0 in config → the port chosen); changes on reload. */
  readonly addresses: ReadonlyMap<string, { host: string; port: number }>;
  /** Where /metrics, /healthz and /readyz are served (only with `operationsEndpoint`). */
  readonly operationsAddress: { host: string; port: number } | undefined;
  /** The config in effect. */
  readonly config: Config;
  readonly metrics: Metrics;
  /** What /readyz answers (cached for a few seconds). */
  readiness(): Promise<ReadinessReport>;
  /**
   * SIGHUP: `load` the config again, load its keys and certificates, and swap everything at once.
   * Any failure leaves the running config in effect, is logged (error) and counted; false then.
   */
  reload(load: () => Promise<Config>): Promise<boolean>;
  /**
   * SIGTERM: stop accepting, let open transactions finish within `deadlineMs` (default
   * shutdown.deadline), answer 421 4.3.2 to every other session, close the operations endpoint.
   */
  shutdown(deadlineMs?: number): Promise<void>;
  /** shutdown(0): every session gets its 421 now. */
  close(): Promise<void>;
}

export interface SigningSetup {
  table: SigningTable;
  keys: KeyStore;
  signer: Signer;
  /** The signing table as used: signing.domains with each domain's rotation.yaml applied. */
  domains: Readonly<Record<string, string | readonly string[]>>;
  /** inbound.arc.seal: the sealer, its key's description and the key's warnings; absent when off. */
  arc?: { sealer: ArcSealer; key: KeyInfo; warnings: readonly string[] };
}

/**
 * Loads the keys the signing table names and the ARC sealing key; shared by serve, sign and
 * check-config, so a bad key fails all three (and a SIGHUP reload) the same way.
 */
export async function loadSigning(config: Config, now?: () => Date, heldPromotions?: HeldPromotions): Promise<SigningSetup> {
  const { domains } = await rotatedSigningDomains(config.signing.domains, config.signing.keysDir, heldPromotions);
  const table = new SigningTable(domains);
  const keys = await loadKeyStore(config.signing.keysDir, table, config.signing);
  const seal = config.inbound.arc.seal;
  const arc = seal ? await loadArcSealKey(config.signing.keysDir, seal.domain, seal.selector, config.signing) : undefined;
  return {
    table,
    domains,
    keys,
    signer: new Signer(table, keys, config.signing, now),
    ...(arc ? { arc: { sealer: new ArcSealer(arc.key, now), key: arc.info, warnings: arc.warnings } } : {}),
  };
}

/** Every loaded key for sello_key_info / sello_key_age_seconds: the signing table's, then ARC's (once). */
function loadedKeys(signing: SigningSetup): KeyInfo[] {
  const arc = signing.arc?.key;
  const duplicate = signing.keys.loaded.some((key) => key.domain === arc?.domain && key.selector === arc.selector);
  return [...signing.keys.loaded, ...(arc && !duplicate ? [arc] : [])];
}

/** The configured resolver; `metrics` times its lookups; `uncached` for probes that must ask. */
export function resolverFor(config: Config, metrics?: Metrics, options: { uncached?: boolean } = {}): DnsResolver {
  return createResolver({
    servers: [...config.dns.servers],
    timeoutMs: config.dns.timeout,
    cache: options.uncached
      ? { maxEntries: 0, maxTtlSeconds: 0 }
      : { maxEntries: config.dns.cacheEntries, maxTtlSeconds: Math.floor(config.dns.cacheMaxTtl / 1000) },
    ...(metrics ? { onLookup: (durationMs: number) => metrics.dnsQueryDuration(durationMs / 1000) } : {}),
  });
}

export function relayTargetFor(config: Config, relay: RelayConfig, configPath: string): RelayTarget {
  return createRelayTarget(
    {
      url: relay.target,
      starttls: relay.starttls,
      tlsRejectUnauthorized: relay.tlsRejectUnauthorized,
      helo: relay.helo ?? config.hostname,
      forward: relay.forward,
      timeouts: { connectMs: relay.timeouts.connect, commandMs: relay.timeouts.command, dataMs: relay.timeouts.data },
      pool: { maxIdle: relay.pool.maxIdle, idleTimeoutMs: relay.pool.idleTimeout, maxTransactions: relay.pool.maxTransactions },
    },
    configPath,
  );
}

export interface StartOptions {
  now?: () => Date;
  /** Where every component records; default: a new registry with the default process metrics. */
  metrics?: Metrics;
  /** Serve /metrics, /healthz and /readyz on config.metrics.listen (`sello serve` does). */
  operationsEndpoint?: boolean;
  /** How long a /readyz answer is reused (default 5 s): probes do not hit the MTA every second. */
  readinessCacheMs?: number;
  /** Used by listeners with TLS but no cert/key instead of making their own (one for all workers, src/cluster/). */
  selfSignedTls?: TlsMaterial;
}

/** Everything one config makes, built before anything changes: a reload fails here or not at all. */
interface Generation {
  config: Config;
  signing: SigningSetup;
  /** Decides every transaction of this generation's listeners. */
  engine: Engine;
  inbound: InboundChecks;
  /** The distinct relay targets the listeners use, by description, for /readyz. */
  relays: ReadonlyMap<string, RelayTarget>;
  listeners: ListenerPlan[];
  /** An uncached resolver for the /readyz DNS probe; present when an mx listener needs DNS. */
  dnsProbe?: DnsResolver;
}

interface ListenerPlan {
  config: ListenerConfig;
  relay: RelayTarget;
  tls?: TlsMaterial;
  /** Local AUTH (listener.auth.credentials); absent: AUTH is passed through to the MTA. */
  credentials?: CredentialStore;
}

/** Each listener's credentials file, read once per config even when listeners share it. */
export async function loadCredentials(config: Config): Promise<(CredentialStore | undefined)[]> {
  const byFile = new Map<string, Promise<CredentialStore>>();
  return Promise.all(
    config.listeners.map((listener, index) => {
      const file = listener.auth?.credentials;
      if (file === undefined) return undefined;
      if (!byFile.has(file)) byFile.set(file, CredentialStore.load(file, `listeners[${index}].auth.credentials`));
      return byFile.get(file);
    }),
  );
}

interface ActiveListener {
  listener: Listener | MilterServer;
  plan: ListenerPlan;
  address: { host: string; port: number };
}

/**
 * Loads keys, TLS material and relay targets for `config`, the same steps check-config takes.
 * A listener that keeps its socket keeps its self-signed certificate (`previous`).
 */
async function prepareGeneration(
  config: Config,
  metrics: Metrics,
  previous: ReadonlyMap<string, ActiveListener>,
  logger: Logger,
  now?: () => Date,
  selfSignedTls?: TlsMaterial,
  heldPromotions?: HeldPromotions,
): Promise<Generation> {
  const signing = await loadSigning(config, now, heldPromotions);
  const resolver = resolverFor(config, metrics);
  const inbound = new InboundChecks(config, resolver.resolve);
  const engine = engineFor(config, signing, inbound, metrics, logger);
  const defaultRelay = relayTargetFor(config, config.relay, 'relay.target');
  const relays = new Map<string, RelayTarget>();
  const listeners: ListenerPlan[] = [];
  const credentials = await loadCredentials(config);
  for (const [index, listenerConfig] of config.listeners.entries()) {
    const relay = listenerConfig.relay ? relayTargetFor(config, listenerConfig.relay, `listeners[${index}].relay.target`) : defaultRelay;
    // A milter listener delivers nothing itself (the MTA keeps the queue): no relay to probe for it.
    if (listenerConfig.role !== 'milter' && !relays.has(relay.description)) relays.set(relay.description, relay);
    const tlsMode = listenerConfig.tls?.mode ?? 'none';
    const old = previous.get(listenerConfig.name);
    const keepSelfSigned = old?.plan.tls?.selfSigned && !listenerConfig.tls?.cert && keepsSocket(old.plan.config, listenerConfig);
    const tls =
      tlsMode === 'none'
        ? undefined
        : keepSelfSigned
          ? old.plan.tls
          : (!listenerConfig.tls?.cert && selfSignedTls) || (await loadTlsMaterial(`listeners[${index}].tls`, listenerConfig.tls ?? {}, config.hostname));
    const store = credentials[index];
    listeners.push({ config: listenerConfig, relay, ...(tls ? { tls } : {}), ...(store ? { credentials: store } : {}) });
  }
  const needsDns = config.listeners.some((listener) => listener.role === 'mx');
  return {
    config,
    signing,
    engine,
    inbound,
    relays,
    listeners,
    ...(needsDns ? { dnsProbe: resolverFor(config, undefined, { uncached: true }) } : {}),
  };
}

/** The engine of one generation: its config, keys (signer, ARC sealer) and inbound checks. */
function engineFor(config: Config, signing: SigningSetup, inbound: InboundChecks, metrics: Metrics, logger: Logger): Engine {
  const pipeline = new MessagePipeline(config, signing.signer, inbound, metrics, signing.arc?.sealer);
  return new TransactionEngine({ config, pipeline, inbound, metrics, logger });
}

/** What a listener is to the engine: its role's rights (PRODUCT.md §2) and whether the MTA judges relaying. */
function frontEndFor(listener: ListenerConfig, relay: RelayTarget): FrontEnd {
  const { role } = listener;
  return {
    listener: listener.name,
    role,
    signs: role === 'submission' || ((role === 'filter' || role === 'milter') && listener.sign !== false),
    verifies: role === 'mx' || (role === 'filter' && listener.verify === true) || (role === 'milter' && listener.verify !== false),
    // A milter's MTA keeps the session: it judges relaying by the real client itself.
    mtaJudgesRelay: role === 'milter' || mtaSeesRealClient(relay.forward),
  };
}

/**
 * Whether a reloaded listener can keep its listening socket: same name (the caller matches by
 * name), address and TLS mode, and nothing else that smtp-server fixes at construction. What a
 * listener does with a session (role, trust, signing, relay, certificates, limits) is swapped in
 * place by Listener.update(); anything else means a new socket.
 */
function keepsSocket(before: ListenerConfig, after: ListenerConfig): boolean {
  const fixed = (listener: ListenerConfig) => {
    const { role, trustedNetworks, sign, relay, greetingDelay, reverseLookup, auth, tls, ...rest } = listener;
    void [trustedNetworks, sign, relay, greetingDelay, reverseLookup, auth];
    // A milter and an SMTP listener are different servers: a role change across them is a new one.
    return JSON.stringify({ ...rest, milter: role === 'milter', tlsMode: tls?.mode ?? 'none' });
  };
  return fixed(before) === fixed(after);
}

function sameAddress(a: ListenerConfig['listen'], b: ListenerConfig['listen']): boolean {
  // A milter's unix socket is one path: the old listener must let go of it first.
  if (a.path !== undefined || b.path !== undefined) return a.path === b.path;
  return a.port !== 0 && a.port === b.port && a.host === b.host;
}

/** /readyz is ready when the DNS server answers at all: NXDOMAIN and NODATA are answers. */
async function dnsAnswers(resolver: DnsResolver, name: string): Promise<void> {
  try {
    await resolver.resolve(name, 'A');
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === 'ENOTFOUND' || code === 'ENODATA') return;
    throw new Error(`DNS ${code ?? 'error'} for ${name}`);
  }
}

/** QUITs the pooled idle connections of every relay target `retired` made (sessions in use end on their own). */
async function closeRelayTargets(retired: Generation): Promise<void> {
  await Promise.all([...new Set(retired.listeners.map((plan) => plan.relay))].map((relay) => relay.close?.()));
}

/** Spill files of a process that crashed mid-DATA are removed at start-up (docs/performance.md "Memory"). */
async function cleanSpillDirectory(config: Config, logger: Logger): Promise<void> {
  const directory = spillDirectoryOf(config.data.spillDirectory);
  let removed: number;
  try {
    removed = await removeLeftoverSpillFiles(directory);
  } catch (error) {
    throw new ConfigError('data.spillDirectory', `${directory} cannot be used for spill files: ${(error as Error).message}`);
  }
  if (removed > 0) logger.info({ directory, removed }, 'removed spill files left by a process that stopped mid-message');
}

/** No message bytes moving for this long is idle (src/message/garbage.ts). */
const idleReleaseAfterMs = 5000;
/** Growth of the resident set since the last release that makes an idle release worth it. */
const idleReleaseGrowthBytes = 16 * 1024 * 1024;

export async function startSello(config: Config, logger: Logger, options: StartOptions = {}): Promise<RunningSello> {
  const metrics = options.metrics ?? createMetrics();
  /** Key rotation promotions this process could not write to rotation.yaml (docs/rotation.md). */
  const heldPromotions: HeldPromotions = new Map();
  let generation = await prepareGeneration(config, metrics, new Map(), logger, options.now, options.selfSignedTls, heldPromotions);
  await cleanSpillDirectory(config, logger);
  let active = new Map<string, ActiveListener>();
  /** Listeners replaced by a reload, still finishing their sessions. */
  const retiring = new Map<Listener | MilterServer, Promise<void>>();
  let endpoint: OperationsEndpoint | undefined;
  let endpointListen: Config['metrics']['listen'] | undefined;
  let shuttingDown: Promise<void> | undefined;
  /** Reloads and shutdown run one at a time, in order. */
  let queue: Promise<unknown> = Promise.resolve();
  const serially = <T>(work: () => Promise<T>): Promise<T> => {
    const run = queue.then(work, work);
    queue = run.catch(() => undefined);
    return run;
  };

  const dependencies = (next: Generation, plan: ListenerPlan): ListenerDependencies => ({
    config: next.config,
    listener: plan.config,
    relay: plan.relay,
    engine: next.engine,
    frontEnd: frontEndFor(plan.config, plan.relay),
    logger,
    metrics,
    ...(plan.tls ? { tls: plan.tls } : {}),
    ...(plan.credentials ? { credentials: plan.credentials } : {}),
  });

  const announce = (next: Generation) => {
    for (const warning of [...next.signing.keys.warnings, ...(next.signing.arc?.warnings ?? [])]) logger.warn({ warning }, 'key warning');
    for (const warning of new Set(next.listeners.flatMap((plan) => plan.credentials?.warnings ?? []))) logger.warn({ warning }, 'credentials warning');
    for (const plan of next.listeners) {
      if (plan.tls?.selfSigned) logger.warn({ listener: plan.config.name }, 'no tls.cert/tls.key configured: using a self-signed certificate');
      if (plan.config.role === 'submission' && !plan.relay.supportsAuth && !plan.credentials) {
        logger.warn({ listener: plan.config.name, relay: plan.relay.description }, 'the relay target cannot check passwords: AUTH is not offered, only trustedNetworks may send');
      }
    }
  };

  /** Key rotation: a promotion swaps in a new key store and signer the way a reload does. */
  const rotation = new RotationWatcher({
    settings: () => {
      const { signing } = generation.config;
      return {
        keysDir: signing.keysDir,
        domains: signing.domains,
        checkIntervalMs: signing.rotation.checkInterval,
        confirmations: signing.rotation.confirmations,
        timing: { expiryMs: signing.expiry, retireMarginMs: signing.rotation.retireMargin },
      };
    },
    resolve: (name, rrtype) => resolverFor(generation.config, metrics, { uncached: true }).resolve(name, rrtype),
    held: heldPromotions,
    logger,
    metrics,
    now: options.now ?? (() => new Date()),
    signingDomains: () => generation.signing.domains,
    apply: () =>
      serially(async () => {
        if (shuttingDown) return;
        const current = generation;
        const signing = await loadSigning(current.config, options.now, heldPromotions);
        const next = { ...current, signing, engine: engineFor(current.config, signing, current.inbound, metrics, logger) };
        for (const entry of active.values()) entry.listener.update(dependencies(next, entry.plan));
        generation = next;
        metrics.keysLoaded(loadedKeys(signing));
        logger.info({ signing: signing.domains }, 'signing keys switched (key rotation)');
      }),
  });

  const readiness = cachedReadiness(
    () => {
      const current = generation;
      // The signing table's keys, and the ARC sealing key when sealing is on.
      const wantedKeys = [...current.signing.table.keys()].length + (current.config.inbound.arc.seal ? 1 : 0);
      const loadedKeyCount = current.signing.keys.size + (current.signing.arc ? 1 : 0);
      const checks: ReadinessCheck[] = [
        {
          name: 'listeners',
          check: async () => {
            if (shuttingDown) throw new Error('shutting down');
          },
        },
        {
          name: 'keys',
          check: async () => {
            if (loadedKeyCount !== wantedKeys) throw new Error(`${loadedKeyCount} of ${wantedKeys} keys loaded`);
          },
        },
        ...[...current.relays.values()].map((relay) => ({ name: `relay ${relay.description}`, check: () => relay.probe() })),
      ];
      // A pending key's judgement is shown, never a reason to be unready: the old key still signs.
      for (const key of rotation.pending) {
        const reason = `pending, not promoted: ${key.state}${key.detail ? ` (${key.detail})` : ''}`;
        checks.push({ name: `rotation ${key.name}`, advisory: true, check: async () => (key.state === 'ok' ? undefined : Promise.reject(new Error(reason))) });
      }
      const dnsProbe = current.dnsProbe;
      if (dnsProbe) checks.push({ name: 'dns', check: () => dnsAnswers(dnsProbe, current.inbound.authservId) });
      return checks;
    },
    { cacheMs: options.readinessCacheMs ?? 5000 },
  );

  /**
   * Makes `next` the running generation. Kept listeners get it for new transactions; new and
   * changed ones are bound first (a listener on the same address as one it replaces takes over
   * its listening socket, so the address is never unbound), so a bind failure undoes everything
   * (the sockets taken over go back) and the old config runs on.
   */
  const swap = async (next: Generation): Promise<void> => {
    const kept: [ActiveListener, ListenerPlan][] = [];
    const toStart: ListenerPlan[] = [];
    for (const plan of next.listeners) {
      const old = active.get(plan.config.name);
      if (old && keepsSocket(old.plan.config, plan.config)) kept.push([old, plan]);
      else toStart.push(plan);
    }
    const replaced = [...active.values()].filter((entry) => !kept.some(([old]) => old === entry));
    const started: ActiveListener[] = [];
    /** Replaced listeners whose listening socket a new one took over, and who took it. */
    const handedOver: [ActiveListener, Listener][] = [];
    /** Replaced milter servers that let go of their socket for a successor. */
    const paused: ActiveListener[] = [];
    let newEndpoint: OperationsEndpoint | undefined;
    try {
      for (const plan of toStart) {
        const what = `listeners[${next.config.listeners.indexOf(plan.config)}] (${plan.config.name})`;
        const bind = (listener: Listener | MilterServer) => listener.start().catch((error: unknown) => Promise.reject(new BindError(what, plan.config.listen, error)));
        const predecessor = replaced.find(
          (old) => !handedOver.some(([taken]) => taken === old) && !paused.includes(old) && sameAddress(old.plan.config.listen, plan.config.listen),
        );
        if ((plan.config.role === 'milter') !== (predecessor?.listener instanceof MilterServer) && predecessor) {
          throw new ConfigError(`listeners[${next.config.listeners.indexOf(plan.config)}].role`, 'a reload cannot turn a milter socket into an SMTP listener or back on the same address; restart sello');
        }
        if (plan.config.role === 'milter') {
          // A milter socket is let go of and bound again (a failed reload binds the old one again).
          if (predecessor?.listener instanceof MilterServer) {
            predecessor.listener.stopAccepting();
            paused.push(predecessor);
          }
          const listener = new MilterServer(dependencies(next, plan));
          started.push({ listener, plan, address: await bind(listener) });
          continue;
        }
        const listener = new Listener(dependencies(next, plan));
        // Same address as a listener it replaces: its socket passes over, it is never unbound.
        if (predecessor && predecessor.listener instanceof Listener) {
          handedOver.push([predecessor, listener]);
          started.push({ listener, plan, address: listener.takeOver(predecessor.listener) });
          continue;
        }
        started.push({ listener, plan, address: await bind(listener) });
      }
      const listen = next.config.metrics.listen;
      // A new metrics address is bound before the old one closes (a changed address cannot clash).
      if (options.operationsEndpoint && (!endpointListen || endpointListen.host !== listen.host || endpointListen.port !== listen.port)) {
        newEndpoint = await startOperationsEndpoint({ listen, registry: metrics.registry, readiness, logger }).catch((error: unknown) =>
          Promise.reject(new BindError('metrics.listen', listen, error)),
        );
      }
    } catch (error) {
      for (const [old, successor] of handedOver) (old.listener as Listener).takeOver(successor);
      await Promise.all(started.map((entry) => entry.listener.close()));
      for (const old of paused) await (old.listener as MilterServer).resumeAccepting();
      throw error;
    }
    // Commit: nothing below can fail.
    for (const [old, plan] of kept) {
      old.listener.update(dependencies(next, plan));
      old.plan = plan;
    }
    active = new Map([...kept.map(([old]) => [old.plan.config.name, old] as const), ...started.map((entry) => [entry.plan.config.name, entry] as const)]);
    if (generation !== next) void closeRelayTargets(generation);
    generation = next;
    for (const old of replaced) {
      retiring.set(old.listener, old.listener.shutdown(next.config.shutdown.deadline).finally(() => retiring.delete(old.listener)));
    }
    if (newEndpoint) {
      void endpoint?.close();
      endpoint = newEndpoint;
      endpointListen = next.config.metrics.listen;
    }
    for (const entry of started) {
      logger.info({ listener: entry.plan.config.name, role: entry.plan.config.role, address: entry.address, relay: entry.plan.relay.description }, 'listening');
    }
    if (newEndpoint) logger.info({ address: newEndpoint.address }, 'operations endpoint listening (/metrics, /healthz, /readyz)');
  };

  try {
    announce(generation);
    await swap(generation);
  } catch (error) {
    await Promise.all([...active.values()].map((entry) => entry.listener.close()));
    await endpoint?.close();
    throw error;
  }
  metrics.keysLoaded(loadedKeys(generation.signing));
  metrics.configLoaded();
  rotation.start();
  // What a burst of traffic grew goes back to the system once it is over (docs/performance.md "Memory").
  const stopIdleRelease = releaseMemoryWhenIdle({
    idleMs: idleReleaseAfterMs,
    idleGrowthBytes: idleReleaseGrowthBytes,
    released: (before, after, durationMs) => logger.debug({ rssBefore: before, rssAfter: after, durationMs: Math.round(durationMs) }, 'idle: memory released'),
  });

  const shutdown = (deadlineMs: number): Promise<void> => {
    if (shuttingDown) {
      // Already draining: a shorter deadline (a second SIGTERM, close()) hurries every listener.
      for (const listener of [...[...active.values()].map((entry) => entry.listener), ...retiring.keys()]) void listener.shutdown(deadlineMs);
      return shuttingDown;
    }
    // Not awaited inside the queue: a check in progress may be waiting there to swap keys.
    const rotationStopped = rotation.stop();
    stopIdleRelease();
    shuttingDown = serially(async () => {
      logger.info({ deadlineMs }, 'shutting down: no new connections; open transactions may finish');
      const listeners = [...[...active.values()].map((entry) => entry.listener), ...retiring.keys()];
      await Promise.all(listeners.map((listener) => listener.shutdown(deadlineMs)));
      await closeRelayTargets(generation);
      await endpoint?.close();
      logger.info('stopped');
    }).then(() => rotationStopped);
    return shuttingDown;
  };

  return {
    get addresses() {
      return new Map([...active.values()].map((entry) => [entry.plan.config.name, entry.address]));
    },
    get operationsAddress() {
      return endpoint?.address;
    },
    get config() {
      return generation.config;
    },
    metrics,
    readiness,
    reload: (load) =>
      serially(async () => {
        if (shuttingDown) return false;
        let next: Generation;
        try {
          const config = await load();
          next = await prepareGeneration(config, metrics, active, logger, options.now, options.selfSignedTls, heldPromotions);
          await swap(next);
        } catch (error) {
          // The running config stays; the operator fixes the file and sends SIGHUP again.
          logger.error(
            { err: error instanceof Error ? error.message : String(error), ...(error instanceof ConfigError && error.path ? { path: error.path } : {}) },
            'config reload failed: the running configuration stays in effect',
          );
          metrics.configReload('failure');
          return false;
        }
        announce(next);
        metrics.keysLoaded(loadedKeys(next.signing));
        metrics.configReload('success');
        logger.info({ listeners: next.config.listeners.length, keys: next.signing.keys.size }, 'config reloaded');
        return true;
      }),
    shutdown: (deadlineMs) => shutdown(deadlineMs ?? generation.config.shutdown.deadline),
    close: () => shutdown(0),
  };
}

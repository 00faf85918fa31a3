// The composition root: a validated Config → running listeners with their dependencies.
// Owns: wiring (key store, signer, pipeline, relay targets, listeners) and their shutdown.
// Must not: parse argv or files (cli/, config/) or hold per-message logic.

import type { Config, RelayConfig } from './config/schema.ts';
import { createResolver, type DnsResolver } from './dns/resolver.ts';
import type { Logger } from './observability/logger.ts';
import { InboundChecks } from './pipeline/inbound.ts';
import { MessagePipeline } from './pipeline/transaction.ts';
import { createRelayTarget } from './relay/index.ts';
import type { RelayTarget } from './relay/types.ts';
import { loadKeyStore, type KeyStore } from './signing/key-store.ts';
import { Signer } from './signing/signer.ts';
import { SigningTable } from './signing/table.ts';
import { Listener } from './smtp/listener.ts';
import { loadTlsMaterial } from './smtp/tls.ts';

export interface RunningSello {
  /** Bound addresses by listener name (port 0 in config → the port chosen). */
  readonly addresses: ReadonlyMap<string, { host: string; port: number }>;
  close(): Promise<void>;
}

export interface SigningSetup {
  table: SigningTable;
  keys: KeyStore;
  signer: Signer;
}

/** Loads the keys the signing table names; shared by serve, sign and check-config. */
export async function loadSigning(config: Config, now?: () => Date): Promise<SigningSetup> {
  const table = new SigningTable(config.signing.domains);
  const keys = await loadKeyStore(config.signing.keysDir, table);
  return { table, keys, signer: new Signer(table, keys, config.signing, now) };
}

export function resolverFor(config: Config): DnsResolver {
  return createResolver({
    servers: [...config.dns.servers],
    timeoutMs: config.dns.timeout,
    cache: { maxEntries: config.dns.cacheEntries, maxTtlSeconds: Math.floor(config.dns.cacheMaxTtl / 1000) },
  });
}

export function relayTargetFor(config: Config, relay: RelayConfig, configPath: string): RelayTarget {
  return createRelayTarget(
    {
      url: relay.target,
      starttls: relay.starttls,
      tlsRejectUnauthorized: relay.tlsRejectUnauthorized,
      helo: relay.helo ?? config.hostname,
      timeouts: { connectMs: relay.timeouts.connect, commandMs: relay.timeouts.command, dataMs: relay.timeouts.data },
    },
    configPath,
  );
}

export async function startSello(config: Config, logger: Logger, options: { now?: () => Date } = {}): Promise<RunningSello> {
  const signing = await loadSigning(config, options.now);
  for (const warning of signing.keys.warnings) logger.warn({ warning }, 'key warning');
  const inbound = new InboundChecks(config, resolverFor(config).resolve);
  const pipeline = new MessagePipeline(config, signing.signer, inbound);
  const defaultRelay = relayTargetFor(config, config.relay, 'relay.target');

  const listeners: Listener[] = [];
  const addresses = new Map<string, { host: string; port: number }>();
  try {
    for (const [index, listenerConfig] of config.listeners.entries()) {
      const relay = listenerConfig.relay ? relayTargetFor(config, listenerConfig.relay, `listeners[${index}].relay.target`) : defaultRelay;
      const tlsMode = listenerConfig.tls?.mode ?? 'none';
      const tls = tlsMode === 'none' ? undefined : await loadTlsMaterial(`listeners[${index}].tls`, listenerConfig.tls ?? {}, config.hostname);
      if (tls?.selfSigned) logger.warn({ listener: listenerConfig.name }, 'no tls.cert/tls.key configured: using a self-signed certificate');
      if (listenerConfig.role === 'submission' && !relay.supportsAuth) {
        logger.warn({ listener: listenerConfig.name, relay: relay.description }, 'the relay target cannot check passwords: AUTH is not offered, only trustedNetworks may send');
      }
      const listener = new Listener({ config, listener: listenerConfig, relay, pipeline, inbound, logger, ...(tls ? { tls } : {}) });
      addresses.set(listenerConfig.name, await listener.start());
      listeners.push(listener);
      logger.info({ listener: listenerConfig.name, role: listenerConfig.role, address: addresses.get(listenerConfig.name), relay: relay.description }, 'listening');
    }
  } catch (error) {
    await Promise.all(listeners.map((listener) => listener.close()));
    throw error;
  }
  return {
    addresses,
    close: async () => {
      await Promise.all(listeners.map((listener) => listener.close()));
    },
  };
}

// The relay's front door: picks the target for the configured URL (PRODUCT.md §3).
// Owns: the scheme → target mapping and its configuration error.
// Must not: open connections (targets do that lazily, per session).

import { ConfigError } from '../errors.ts';
import { DirTarget, type WriteErrorObserver } from './dir-target.ts';
import { SmtpTarget } from './smtp-target.ts';
import type { RelayTarget, SmtpRelayConfig } from './types.ts';

export type * from './types.ts';
export { DirTarget } from './dir-target.ts';
export { SmtpTarget, parseSmtpUrl } from './smtp-target.ts';
export { SmtpClient } from './smtp-client.ts';
export { extractQueueId, foldLmtpReplies } from './smtp-reply.ts';
export { forwardModes, mtaSeesRealClient } from './forwarding.ts';

export interface RelayObservers {
  /** dir: only — why a message file could not be written (the client got 451 4.3.0). */
  onWriteError?: WriteErrorObserver;
}

/**
 * The relay target for `config.url`: smtp://host:port, lmtp://host:port or dir:PATH.
 * `configPath` names the URL's key in config errors.
 */
export function createRelayTarget(
  config: SmtpRelayConfig,
  configPath = 'relay.target',
  observers: RelayObservers = {},
): RelayTarget {
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(config.url)?.[1]?.toLowerCase();
  switch (scheme) {
    case 'smtp':
    case 'lmtp':
      return new SmtpTarget(config, configPath);
    case 'dir':
      if (config.forward && config.forward !== 'none') {
        throw new ConfigError(configPath.replace(/target$/, 'forward'), `"${config.forward}" needs an smtp:// or lmtp:// target: a dir: target has no MTA to tell`);
      }
      return new DirTarget(config, configPath, observers.onWriteError);
    default:
      throw new ConfigError(
        configPath,
        `"${config.url}" is not a supported relay target: use smtp://host:port, lmtp://host:port or dir:PATH`,
      );
  }
}

// `sello check-config [--config FILE] [--bind]`: validate config, keys (the ARC sealing key too),
// certificates and relay targets without starting anything; with --bind also bind every listener
// address and metrics.listen for a moment (a port in use, a privileged port). Exit 0 when sello
// would start, 1 with the failing key path otherwise.

import { loadCredentials, loadSigning, relayTargetFor } from '../app.ts';
import net from 'node:net';
import { inConfigFile, loadConfig } from '../config/load.ts';
import type { Config } from '../config/schema.ts';
import { BindError } from '../errors.ts';
import { loadTlsMaterial } from '../smtp/tls.ts';
import { configPath } from './config-path.ts';
import { parseCommandArgs } from './args.ts';
import type { CliIo, Command } from './io.ts';

const usage = 'usage: sello check-config [--config FILE] [--bind]   (--bind: also try every listen address; run it while sello is stopped)\n';

/** Binds `listen` and releases it at once; rejects with the BindError serve would give. */
function tryBind(what: string, listen: { host: string; port: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', (error) => reject(new BindError(what, listen, error)));
    server.listen(listen.port, listen.host, () => server.close(() => resolve()));
  });
}

/**
 * Every TCP address `sello serve` would bind, in the order it binds them; the count bound. A milter's
 * unix socket path is not tried: serve replaces a stale socket file, so a free path proves nothing.
 */
async function tryBinds(config: Config): Promise<number> {
  let bound = 0;
  for (const [index, listener] of config.listeners.entries()) {
    if (listener.listen.path !== undefined) continue;
    await tryBind(`listeners[${index}] (${listener.name})`, listener.listen);
    bound++;
  }
  await tryBind('metrics.listen', config.metrics.listen);
  return bound + 1;
}

export const checkConfigCommand: Command = async (args, io) => {
  const { values } = parseCommandArgs('check-config', { args, options: { config: { type: 'string' }, bind: { type: 'boolean' } } });
  if (values.help) {
    io.stdout(usage);
    return 0;
  }
  const file = configPath(values.config, io.env);
  // Every config error below names the file first, then the key path.
  return inConfigFile(file, () => checkConfigFile(file, io, values.bind === true));
};

async function checkConfigFile(file: string, io: CliIo, bind: boolean): Promise<number> {
  const config = await loadConfig(file, io.env);
  const signing = await loadSigning(config);
  relayTargetFor(config, config.relay, 'relay.target');
  for (const [index, listener] of config.listeners.entries()) {
    if (listener.relay) relayTargetFor(config, listener.relay, `listeners[${index}].relay.target`);
    if (listener.tls && listener.tls.mode !== 'none' && listener.tls.cert) {
      await loadTlsMaterial(`listeners[${index}].tls`, listener.tls, config.hostname);
    }
  }
  const credentials = new Set((await loadCredentials(config)).filter((store) => store !== undefined));
  const keyWarnings = [...signing.keys.warnings, ...(signing.arc?.warnings ?? [])];
  for (const warning of [...keyWarnings, ...[...credentials].flatMap((store) => store.warnings)]) io.stderr(`warning: ${warning}\n`);
  const users = [...credentials].reduce((total, store) => total + store.size, 0);
  const localAuth = credentials.size > 0 ? `, ${users} local AUTH user(s)` : '';
  const bound = bind ? `, ${await tryBinds(config)} address(es) bound and released` : '';
  const arcSeal = signing.arc ? `, ARC sealing with ${signing.arc.key.selector}._domainkey.${signing.arc.key.domain}` : '';
  io.stdout(`${file}: OK (${config.listeners.length} listener(s), ${signing.keys.size} signing key(s)${arcSeal}${localAuth})${bound}\n`);
  return 0;
}

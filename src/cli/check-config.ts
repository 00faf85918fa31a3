// `sello check-config [--config FILE]`: validate config, keys (the ARC sealing key too),
// certificates and relay targets without starting anything. Exit 0 when sello would start, 1 with the failing key path otherwise.

import { loadCredentials, loadSigning, relayTargetFor } from '../app.ts';
import { inConfigFile, loadConfig } from '../config/load.ts';
import { loadTlsMaterial } from '../smtp/tls.ts';
import { configPath } from './config-path.ts';
import { parseCommandArgs } from './args.ts';
import type { CliIo, Command } from './io.ts';

const usage = 'usage: sello check-config [--config FILE]\n';

export const checkConfigCommand: Command = async (args, io) => {
  const { values } = parseCommandArgs('check-config', { args, options: { config: { type: 'string' } } });
  if (values.help) {
    io.stdout(usage);
    return 0;
  }
  const file = configPath(values.config, io.env);
  // Every config error below names the file first, then the key path.
  return inConfigFile(file, () => checkConfigFile(file, io));
};

async function checkConfigFile(file: string, io: CliIo): Promise<number> {
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
  const arcSeal = signing.arc ? `, ARC sealing with ${signing.arc.key.selector}._domainkey.${signing.arc.key.domain}` : '';
  io.stdout(`${file}: OK (${config.listeners.length} listener(s), ${signing.keys.size} signing key(s)${arcSeal}${localAuth})\n`);
  return 0;
}

// sello under test, run as its own process so its memory and CPU are its own: a config object
// (JSON in argv[2]) → parseConfig → startSello with a silent logger, exactly as serve would
// run it minus the log output. Reports the bound port of the listener named in argv[3].
// Must not: change sello's behaviour or configuration beyond what the parent passed in.
// Usage (forked by bench/child.ts): node bench/sello-process.ts '<config json>' <listener>

import { startSello } from '../src/app.ts';
import { parseConfig } from '../src/config/load.ts';
import { silentLogger } from '../src/observability/logger.ts';
import { ownUsage, serveParent, type ChildToParent } from './child.ts';

const [configJson = '', listener = ''] = process.argv.slice(2);

try {
  const running = await startSello(parseConfig(JSON.parse(configJson)), silentLogger());
  const address = running.addresses.get(listener);
  if (!address) throw new Error(`no listener named ${JSON.stringify(listener)} in the config`);
  serveParent(() => ownUsage());
  process.send?.({ type: 'ready', port: address.port, usage: ownUsage() } satisfies ChildToParent);
} catch (error) {
  process.send?.({ type: 'failed', error: error instanceof Error ? error.message : String(error) } satisfies ChildToParent);
  process.exitCode = 1;
  process.disconnect?.();
}

// The process entry point (bin/sello.js imports it): argv and the real streams → src/cli/run.ts.

import { processIo } from './cli/io.ts';
import { main } from './cli/run.ts';

process.exitCode = await main(process.argv.slice(2), processIo());

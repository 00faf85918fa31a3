// `npm run fuzz -- --sessions N --seed S [--concurrency C]`: the long fuzz run (issue 10); the
// same checks as the short run in fuzz.test.ts. Prints the report; exit 1 if anything did not hold.

import { parseArgs } from 'node:util';
import { formatReport, runFuzz, violations } from './harness.ts';

const { values } = parseArgs({
  options: { sessions: { type: 'string', default: '10000' }, seed: { type: 'string', default: '1' }, concurrency: { type: 'string', default: '16' } },
});
const sessions = Number(values.sessions);
const seed = Number(values.seed);
const concurrency = Number(values.concurrency);
if (![sessions, seed, concurrency].every((value) => Number.isInteger(value) && value >= 0) || concurrency < 1) {
  process.stderr.write('usage: npm run fuzz -- [--sessions N] [--seed S] [--concurrency C]   (whole numbers)\n');
  process.exit(2);
}
const report = await runFuzz({
  sessions,
  seed,
  concurrency,
  onProgress: (done) => {
    if (done % 1000 === 0) process.stderr.write(`fuzz: ${done}/${sessions} sessions\n`);
  },
});
process.stdout.write(`${formatReport(report)}\n`);
const found = violations(report);
for (const violation of found) process.stdout.write(`FAILED: ${violation}\n`);
process.exitCode = found.length ? 1 : 0;

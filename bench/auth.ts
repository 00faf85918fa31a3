// `npm run bench:auth`: what one local AUTH check costs (listeners[].auth.credentials): the
// scrypt derivation at the default cost of new hashes, sequentially, then N in parallel (they
// share libuv's thread pool with DKIM signing), against a plain SHA-256 of the same password as
// the baseline. Owns: the schedule and the report. Must not: change anything in src/.
//
// Flags: --checks N (sequential checks timed, default 15)  --parallel P (default 8)

import { createHash } from 'node:crypto';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { hashPassword, NEW_HASH_PARAMETERS, parseScryptHash, passwordMatches } from '../src/auth/credentials.ts';
import { median } from './report.ts';

const { values } = parseArgs({ options: { checks: { type: 'string' }, parallel: { type: 'string' } } });
const checks = Number(values.checks ?? 15);
const parallel = Number(values.parallel ?? 8);
if (!Number.isInteger(checks) || checks < 1 || !Number.isInteger(parallel) || parallel < 1) throw new Error('--checks and --parallel take positive integers');

const parsed = parseScryptHash(await hashPassword('correct horse battery staple'));
if (typeof parsed === 'string') throw new Error(parsed);
const hash = parsed;

async function timed(work: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await work();
  return performance.now() - started;
}

const sequential: number[] = [];
for (let index = 0; index < checks; index++) {
  sequential.push(await timed(async () => {
    if (!(await passwordMatches('correct horse battery staple', hash))) throw new Error('the password did not match its own hash');
  }));
}
const baseline: number[] = [];
for (let index = 0; index < checks; index++) baseline.push(await timed(async () => createHash('sha256').update('correct horse battery staple').digest()));
const wall = await timed(() => Promise.all(Array.from({ length: parallel }, () => passwordMatches('wrong', hash))));

const sorted = [...sequential].sort((a, b) => a - b);
const pool = Number(process.env['UV_THREADPOOL_SIZE'] ?? 4);
console.log(`machine   ${os.availableParallelism()} cores (${os.cpus()[0]?.model ?? 'unknown'}), Node ${process.version}, libuv thread pool ${pool}`);
console.log(`scrypt    ln=${NEW_HASH_PARAMETERS.logN} r=${NEW_HASH_PARAMETERS.r} p=${NEW_HASH_PARAMETERS.p} (${(128 * 2 ** NEW_HASH_PARAMETERS.logN * NEW_HASH_PARAMETERS.r) / 1024 / 1024} MiB per check)`);
console.log(`one check ${checks} sequential: median ${median(sequential).toFixed(1)} ms, min ${sorted[0]!.toFixed(1)}, max ${sorted[sorted.length - 1]!.toFixed(1)}`);
console.log(`baseline  SHA-256 of the password: median ${(median(baseline) * 1000).toFixed(1)} µs (scrypt/SHA-256 ≈ ${Math.round(median(sequential) / median(baseline))}×)`);
console.log(`parallel  ${parallel} checks at once: ${wall.toFixed(0)} ms wall (${(parallel / (wall / 1000)).toFixed(1)} checks/s on this machine)`);

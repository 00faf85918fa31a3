// The short fuzz run inside `npm test` (issue 10): 200 generated hostile sessions against an
// in-process sello, then the checks of harness.ts. The long run: `npm run fuzz`.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { generateSession } from './sessions.ts';
import { formatReport, runFuzz, violations } from './harness.ts';

test('the generator is seeded: the same seed gives the same sessions, another seed others', () => {
  const sessions = (seed: number) => JSON.stringify(Array.from({ length: 50 }, (_, id) => generateSession(seed, id)));
  assert.equal(sessions(7), sessions(7));
  assert.notEqual(sessions(7), sessions(8));
  // Every kind of abuse shows up within a short run.
  const all = Array.from({ length: 200 }, (_, id) => generateSession(7, id));
  const written = all.flatMap((session) => session.actions.flatMap((action) => ('bytes' in action ? [action.bytes.toString('latin1')] : [])));
  for (const [what, pattern] of [
    ['AUTH garbage', /^AUTH /m],
    ['NUL in DATA', /\x00/],
    ['an end-of-data lookalike', /\n\.\n|\r\.\r/],
    ['a huge line', /a{17000}/],
    ['a line without CRLF', /[^\r]\n/],
  ] as const) {
    assert.ok(written.some((bytes) => pattern.test(bytes)), what);
  }
  assert.ok(all.some((session) => session.actions.some((action) => action.kind === 'starttls-garbage')), 'STARTTLS then garbage');
  assert.deepEqual(new Set(all.map((session) => session.ending)), new Set(['quit', 'fin', 'destroy', 'reset']));
});

test('200 fuzzed sessions: sello still answers, no error record, nothing left open downstream, every acknowledged message delivered once, RSS bounded', async () => {
  const report = await runFuzz({ sessions: 200, seed: 20261204, concurrency: 16 });
  assert.deepEqual(violations(report), [], formatReport(report));
  assert.ok(report.acknowledged > 10, `the run delivered mail too:\n${formatReport(report)}`);
});

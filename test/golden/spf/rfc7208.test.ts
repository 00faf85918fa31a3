// The OpenSPF RFC 7208 test suite (rfc7208-tests.yml beside this file, 203 tests) run through
// checkSpf (src/checks/spf.ts) with each scenario's zonedata served by openspf-zone.ts.
// Owns: the suite driver and the argued deviations. Must not: touch the network.
//
// Each test's `result` is one result or a list of acceptable ones; `explanation` is the exp=
// text the evaluation must produce, or DEFAULT for "no explanation from the domain" (sello then
// has none: the reply text is sello's own, PRODUCT.md §5). A test listed in DEVIATIONS must give
// exactly the deviating result, so any change in behaviour is noticed either way.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, describe, test } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { checkSpf } from '../../../src/checks/spf.ts';
import type { SpfResultWord } from '../../../src/checks/types.ts';
import { zoneResolver, type ZoneData } from './openspf-zone.ts';

interface SuiteTest {
  description?: string;
  spec: string | number;
  helo: string;
  host: string;
  mailfrom: string;
  result: SpfResultWord | SpfResultWord[];
  explanation?: string;
}

interface Scenario {
  description: string;
  tests: Record<string, SuiteTest>;
  zonedata: ZoneData;
}

interface Deviation {
  result: SpfResultWord;
  /** The explanation sello gives instead, where the deviation is in the explanation. */
  explanation?: string;
  why: string;
}

const DEVIATIONS: Record<string, Deviation> = {
  'v-macro-ip6': {
    result: 'fail',
    explanation: 'cafe:babe::1 is queried as 1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.e.b.a.b.e.f.a.c.ip6.arpa',
    why:
      'Only the letter case of the %{ir} nibbles differs. The suite echoes the case of its input address ' +
      '"CAFE:BABE::1" (E.B.A.B.E.F.A.C), mailauth writes lower-case hex. RFC 7208 §7.3 does not fix the ' +
      'case of the dot-format address, DNS names compare case-insensitively (RFC 4343 §3), so queries ' +
      'built from %{i} find the same records either way, and RFC 5952 §4.3 makes lower case the text form. ' +
      'sello takes the address from the socket (always lower case), so the suite\'s upper-case input does ' +
      'not occur; the explanation is third-party text that only goes into logs and header comments.',
  },
};

const RECEIVER = 'receiver.example';
const suitePath = new URL('./rfc7208-tests.yml', import.meta.url);
const scenarios = parseAllDocuments(readFileSync(suitePath, 'utf8')).map((document) => {
  if (document.errors.length) throw new Error(`rfc7208-tests.yml: ${document.errors[0]?.message}`);
  return document.toJS() as Scenario;
});

const tally = { tests: 0, pass: 0, deviations: 0 };
const seen = new Set<string>();

for (const scenario of scenarios) {
  describe(scenario.description, () => {
    for (const [id, suiteTest] of Object.entries(scenario.tests)) {
      seen.add(id);
      test(`${id} (RFC 7208 ${String(suiteTest.spec)})`, async () => {
        tally.tests++;
        const outcome = await checkSpf(
          { clientIp: suiteTest.host, mailFrom: suiteTest.mailfrom ?? '', helo: suiteTest.helo ?? '', receiver: RECEIVER },
          { resolver: zoneResolver(scenario.zonedata), timeBudgetMs: 20_000, identity: 'mailfrom' },
        );
        const deviation = DEVIATIONS[id];
        if (deviation) {
          assert.equal(outcome.result, deviation.result, `${id}: the argued deviation changed (${outcome.comment})`);
          assert.equal(outcome.explanation, deviation.explanation, `${id}: the argued deviation changed`);
          tally.deviations++;
          return;
        }
        const accepted = ([] as SpfResultWord[]).concat(suiteTest.result);
        assert.ok(accepted.includes(outcome.result), `${id}: expected ${accepted.join(' or ')}, got ${outcome.result} (${outcome.comment})`);
        if (suiteTest.explanation !== undefined) {
          const expected = suiteTest.explanation === 'DEFAULT' ? undefined : suiteTest.explanation;
          assert.equal(outcome.explanation, expected, `${id}: explanation`);
        }
        tally.pass++;
      });
    }
  });
}

test('every deviation names a test of the suite', () => {
  for (const id of Object.keys(DEVIATIONS)) assert.ok(seen.has(id), `DEVIATIONS lists unknown test ${id}`);
  assert.equal(seen.size, 203, 'the suite has 203 tests');
});

after(() => {
  console.log(`rfc7208: ${tally.tests} tests, ${tally.pass} pass, ${tally.deviations} argued deviations`);
});

// The ARC sealing suite (arc-draft-sign-tests.yml of the ValiMail arc_test_suite, 17 tests, in
// test/fixtures/arc-test-suite/) run through sello's sealer (src/signing/arc-sealer.ts) with the
// suite's key and each test's fixed time t= injected through the clock seam, the chain validated
// as the mx listener validates it (arc-suite.ts), scored against the suite's ARC-Seal,
// ARC-Message-Signature and ARC-Authentication-Results, and every set checked by dkimpy's
// arc_verify (Debian python3-dkim) over the loopback DNS server.
// Owns: the score, the pinned differences and their reasons. Must not: touch the network beyond
// loopback.
//
// The suite's inputs, and how they reach the sealer:
// - key, d= and s=: the scenario's privatekey, domain and sel, as an ArcSealKey;
// - t=: the test's t, as the sealer's clock (new Date(t * 1000));
// - srv-id: the sealer's authserv-id. The ARC-Authentication-Results is the sealer's own
//   Authentication-Results (RFC 8617 §4.1.1); in the suite those are the message's
//   Authentication-Results fields with that authserv-id, merged in order (ar_merged1/2), and
//   sello would put its own in their place. Fields of other authserv-ids are not ours.
// - sig-headers: the suite's h=. sello's sealer signs its own list instead (see DIFFERENCES).
// - cv=: what validating the chain as received gave (checks/arc.ts, via the mx check path).

import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey, verify, type KeyObject } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { headerValues } from '../../../src/message/index.ts';
import { ArcSealer, type ChainValidation } from '../../../src/signing/arc-sealer.ts';
import { arcVerifyWithDkimpy, type DkimpyArcVerification } from '../../helpers/dkimpy.ts';
import { startDnsServer, type DnsServer } from '../../helpers/dns-server.ts';
import { checkDkimpy, suiteOptions } from '../../helpers/tools.ts';
import { checkAsMx, mxChecks, readSuite, serveRecords } from './arc-suite.ts';

interface SignTest {
  spec: string;
  description: string;
  message: string;
  t: number;
  'sig-headers': string;
  'srv-id': string;
  /** The expected field values (without the names); empty when no set may be added. */
  AS: string | null;
  AMS: string | null;
  AAR: string | null;
}

type FieldName = 'AS' | 'AMS' | 'AAR';

/** Where sello's set differs from the suite's, as "AS b", "AMS h", …, and why it is still right. */
interface Difference {
  tags: string[];
  why: string;
}

const OWN_SIGNED_FIELDS: Difference = {
  tags: ['AS b', 'AMS b', 'AMS h', 'AMS q'],
  why:
    'sello signs its own h= list (DKIM-Signature, then the default DKIM field list, those present, in ' +
    "mailauth's order), not the suite's sig-headers; RFC 8617 §4.1.2 leaves the choice of fields to " +
    'the sealer (it only rules out Authentication-Results and ARC fields). Another h= makes another ' +
    'AMS b=, and the ARC-Seal signs the AMS, so another AS b= too. q=dns/txt is the default RFC 6376 ' +
    '§3.5 gives a missing q=, written out by mailauth. Every other tag and the AAR are the suite\'s, ' +
    "and dkimpy's arc_verify validates the set. (dkimpy also rejects the suite's own expected ARC-Seal " +
    'in the cv=none and cv=pass cases, checked below: no RFC 8617 sealer could reproduce that b=.)',
};

/** Every test: undefined when sello's output is the suite's, else the pinned difference. */
const DIFFERENCES: Record<string, Difference | undefined> = {
  message_body_eol_wsp: OWN_SIGNED_FIELDS,
  message_body_inl_wsp: OWN_SIGNED_FIELDS,
  message_body_end_lines: OWN_SIGNED_FIELDS,
  message_body_trail_crlf: OWN_SIGNED_FIELDS,
  headers_field_name_case: OWN_SIGNED_FIELDS,
  headers_field_unfold: OWN_SIGNED_FIELDS,
  headers_eol_wsp: OWN_SIGNED_FIELDS,
  headers_inl_wsp: OWN_SIGNED_FIELDS,
  headers_col_wsp: OWN_SIGNED_FIELDS,
  i0_base: OWN_SIGNED_FIELDS,
  i1_base: OWN_SIGNED_FIELDS,
  i2_base: OWN_SIGNED_FIELDS,
  i1_base_fail: OWN_SIGNED_FIELDS,
  i2_base_fail: OWN_SIGNED_FIELDS,
  no_additional_sig: undefined,
  ar_merged1: OWN_SIGNED_FIELDS,
  ar_merged2: OWN_SIGNED_FIELDS,
};

const FIELD_NAMES: Record<FieldName, string> = { AS: 'ARC-Seal', AMS: 'ARC-Message-Signature', AAR: 'ARC-Authentication-Results' };

/** RFC 6376 §3.4.2 relaxed header canonicalization of one field (name and value, no CRLF). */
function relaxedField(name: string, value: string): string {
  const unfolded = value.replace(/\r?\n/g, ' ').replace(/[ \t]+/g, ' ').replace(/^ | $/g, '');
  return `${name.toLowerCase()}:${unfolded}`;
}

/** A tag-list's tags, whitespace removed from b=, bh= and h= (RFC 6376 §3.5), h= names in lower case. */
function tagsOf(value: string): Map<string, string> {
  const tags = new Map<string, string>();
  for (const spec of value.split(';')) {
    const equals = spec.indexOf('=');
    if (equals === -1) continue;
    const name = spec.slice(0, equals).trim();
    let tagValue = spec.slice(equals + 1).replace(/\s+/g, ' ').trim();
    if (['b', 'bh', 'h'].includes(name)) tagValue = tagValue.replace(/\s+/g, '');
    if (name === 'h') tagValue = tagValue.toLowerCase();
    tags.set(name, tagValue);
  }
  return tags;
}

/** The three fields of sello's set, by name, from the lines the sealer returned. */
function fieldsOf(headerLines: string): Record<FieldName, string> {
  const values = (name: string) => headerValues(Buffer.from(headerLines, 'latin1'), name);
  const one = (name: string) => {
    const found = values(name);
    assert.equal(found.length, 1, `one ${name}`);
    return found[0] as string;
  };
  return { AS: one('ARC-Seal'), AMS: one('ARC-Message-Signature'), AAR: one('ARC-Authentication-Results') };
}

/** "AS b", "AMS h", … where `ours` and the suite's fields differ; the AAR compares as relaxed canonicalization does. */
function differingTags(ours: Record<FieldName, string>, suite: Record<FieldName, string>): string[] {
  const differing: string[] = [];
  for (const field of ['AS', 'AMS'] as const) {
    const mine = tagsOf(ours[field]);
    const theirs = tagsOf(suite[field]);
    for (const name of new Set([...mine.keys(), ...theirs.keys()])) if (mine.get(name) !== theirs.get(name)) differing.push(`${field} ${name}`);
  }
  if (relaxedField('x', ours.AAR) !== relaxedField('x', suite.AAR)) differing.push('AAR');
  return differing.sort();
}

/** The suite's fields as a message would carry them: its values folded with a leading space. */
function suiteSet(suiteTest: SignTest): { fields: Record<FieldName, string>; headerLines: string } | undefined {
  if (!suiteTest.AS?.trim()) return undefined;
  const fields = { AS: suiteTest.AS, AMS: suiteTest.AMS ?? '', AAR: suiteTest.AAR ?? '' };
  const fold = (value: string) => value.trim().replace(/[ \t]*\n/g, '\r\n ');
  const headerLines = (['AS', 'AMS', 'AAR'] as const).map((field) => `${FIELD_NAMES[field]}: ${fold(fields[field])}\r\n`).join('');
  return { fields, headerLines };
}

/**
 * RFC 8617 §5.1.2: a cv=fail seal signs only its own set, AAR, AMS and the seal with an empty b=,
 * each relaxed (RFC 8617 §4.1.3), joined by CRLF, the seal last and without its CRLF (RFC 6376
 * §3.7). dkimpy stops at a cv=fail seal without checking it, so the test checks it here.
 */
function sealSignsOwnSet(fields: Record<FieldName, string>, publicKey: KeyObject): boolean {
  const signature = Buffer.from(tagsOf(fields.AS).get('b') ?? '', 'base64');
  const sealWithoutSignature = fields.AS.replace(/(^|;)(\s*b\s*=)[^;]*/, '$1$2');
  const signed = [relaxedField('ARC-Authentication-Results', fields.AAR), relaxedField('ARC-Message-Signature', fields.AMS), relaxedField('ARC-Seal', sealWithoutSignature)].join('\r\n');
  return verify('sha256', Buffer.from(signed), publicKey, signature);
}

const everySetValid = (verdict: DkimpyArcVerification) => verdict.sets.length > 0 && verdict.sets.every((set) => set.asValid && set.amsValid);

const scenarios = readSuite<SignTest>('arc-draft-sign-tests.yml');
const tally = { tests: 0, identical: 0, pinned: 0, verifiedByDkimpy: 0, suiteSealRejected: 0 };
const seen = new Set<string>();

describe('ARC sealing suite', suiteOptions(checkDkimpy()), () => {
  let dns: DnsServer;

  before(async () => {
    dns = await startDnsServer();
  });
  after(async () => {
    await dns?.close();
    console.log(
      `arc sealing: ${tally.tests} tests, ${tally.identical} identical to the suite, ${tally.pinned} differing as pinned ` +
        `(own h=), ${tally.verifiedByDkimpy} sealed and validated by dkimpy; dkimpy rejects the suite's own seal in ${tally.suiteSealRejected}`,
    );
  });

  let previousRecords: Record<string, string> = {};
  for (const scenario of scenarios) {
    describe(scenario.description.trim(), () => {
      const privateKey = createPrivateKey(scenario.privatekey ?? '');
      const publicKey = createPublicKey(privateKey);
      before(() => {
        serveRecords(dns, scenario['txt-records'], previousRecords);
        previousRecords = scenario['txt-records'];
      });

      for (const { id, test: suiteTest } of scenario.cases) {
        seen.add(id);
        test(`${id}: ${suiteTest.description} (${suiteTest.spec})`, async () => {
          tally.tests++;
          const checked = await checkAsMx(mxChecks(dns), suiteTest.message);
          const reported = checked.results.arc?.result;
          // As pipeline/transaction.ts reads it: anything but none or pass is a failed chain.
          const validation: ChainValidation = reported === 'none' || reported === 'pass' ? reported : 'fail';
          const authservId = suiteTest['srv-id'];
          const ourResults = headerValues(checked.split.header, 'Authentication-Results')
            .map((value) => value.replace(/\s+/g, ' ').trim())
            .filter((value) => value.startsWith(`${authservId};`))
            .map((value) => value.slice(authservId.length + 1).trim().replace(/;$/, ''));
          const sealer = new ArcSealer({ domain: scenario.domain ?? '', selector: scenario.sel ?? '', privateKey }, () => new Date(suiteTest.t * 1000));
          const sealed = await sealer.seal(checked.split, validation, `${authservId}; ${ourResults.join('; ')}`);

          const expected = suiteSet(suiteTest);
          const difference = DIFFERENCES[id];
          if (!expected) {
            // RFC 8617 §5.1 step 2 (newest seal cv=fail): no set is added, as the suite expects.
            assert.equal(sealed.sealed, false, `${id}: the suite adds no set`);
            assert.equal(difference, undefined, `${id}: nothing to differ in`);
            tally.identical++;
            return;
          }
          assert.ok(sealed.sealed, `${id}: sealed (${JSON.stringify(sealed)})`);
          const ours = fieldsOf(sealed.headerLines);
          const differing = differingTags(ours, expected.fields);
          if (difference === undefined) {
            assert.deepEqual(differing, [], `${id}: identical to the suite`);
            tally.identical++;
          } else {
            assert.deepEqual(differing, [...difference.tags].sort(), `${id}: the pinned difference changed`);
            tally.pinned++;
          }

          // Still right: dkimpy validates sello's set, and judges the suite's output as pinned.
          const relayed = Buffer.concat([Buffer.from(sealed.headerLines, 'latin1'), checked.message]);
          const verdict = await arcVerifyWithDkimpy(relayed, dns);
          const suiteVerdict = await arcVerifyWithDkimpy(Buffer.concat([Buffer.from(expected.headerLines, 'latin1'), checked.message]), dns);
          const newest = verdict.sets[0];
          assert.equal(newest?.instance, sealed.instance, `${id}: dkimpy read our set first`);
          assert.equal(newest?.amsValid, true, `${id}: dkimpy validates our ARC-Message-Signature (${verdict.reason})`);
          if (sealed.cv === 'fail') {
            // RFC 8617 §5.2 step 2: dkimpy stops at the cv=fail seal, for ours as for the suite's.
            assert.equal(verdict.cv, null, `${id}: ${verdict.reason}`);
            assert.deepEqual(verdict, suiteVerdict, `${id}: dkimpy judges our set as the suite's`);
            assert.ok(sealSignsOwnSet(ours, publicKey), `${id}: our cv=fail seal signs its own set (RFC 8617 §5.1.2)`);
          } else {
            assert.equal(verdict.cv, 'pass', `${id}: dkimpy validates the chain we sealed (${verdict.reason})`);
            assert.ok(everySetValid(verdict), `${id}: every set valid for dkimpy`);
            assert.equal(suiteVerdict.sets[0]?.asValid, false, `${id}: dkimpy rejects the suite's own seal (${suiteVerdict.reason})`);
            assert.equal(suiteVerdict.sets[0]?.amsValid, true, `${id}: and accepts the suite's AMS`);
            tally.suiteSealRejected++;
          }
          tally.verifiedByDkimpy++;
        });
      }
    });
  }

  test('every test of the suite is pinned', () => {
    assert.deepEqual([...seen].sort(), Object.keys(DIFFERENCES).sort());
    assert.equal(seen.size, 17, 'arc-draft-sign-tests.yml has 17 tests');
  });
});

// The ValiMail ARC test suite (test/fixtures/arc-test-suite/, MIT, see its LICENSE.txt) as the
// golden ARC tests read it, and the mx listener's check path they run each message through.
// Owns: reading the suite's YAML documents, serving a scenario's txt-records from the loopback
// DNS server, and running a message the way the mx role does (bare LF → CRLF as
// data.bareLineEndings "normalize", the default; then InboundChecks.inspect over sello's own
// resolver). Must not: judge results (the test files do) or touch the network beyond loopback.

import { readFileSync } from 'node:fs';
import { isMap, isScalar, parseAllDocuments } from 'yaml';
import { parseConfig } from '../../../src/config/load.ts';
import { createResolver } from '../../../src/dns/resolver.ts';
import { InboundChecks, type InboundMessage } from '../../../src/pipeline/inbound.ts';
import { headerFields, prepareMessage, splitMessage, type SplitMessage } from '../../../src/message/index.ts';
import type { DnsServer } from '../../helpers/dns-server.ts';

export interface SuiteCase<Test> {
  id: string;
  test: Test;
  /**
   * The validation suite names four tests twice (as_fields_b_eol_wsp, as_fields_b_head_case,
   * as_fields_b_head_unfold, as_fields_b_inl_wsp). YAML readers keep the later one, which gives
   * the 171 tests every implementation counts; the earlier one is "shadowed", and run as well.
   */
  shadowed: boolean;
}

export interface SuiteScenario<Test> {
  description: string;
  /** In file order, duplicates included. */
  cases: SuiteCase<Test>[];
  /** DNS name → TXT record, folded over lines in the YAML (the line breaks are not part of it). */
  'txt-records': Record<string, string>;
  /** The sealing suite's signing domain, selector and PKCS#1 key (one per scenario). */
  domain?: string;
  sel?: string;
  privatekey?: string;
}

export function readSuite<Test>(file: string): SuiteScenario<Test>[] {
  const path = new URL(`../../fixtures/arc-test-suite/${file}`, import.meta.url);
  return parseAllDocuments(readFileSync(path, 'utf8'), { uniqueKeys: false }).map((document) => {
    if (document.errors.length) throw new Error(`${file}: ${document.errors[0]?.message}`);
    const tests = document.get('tests', true);
    if (!isMap(tests)) throw new Error(`${file}: a document without a tests map`);
    const ids = tests.items.map((pair) => (isScalar(pair.key) ? String(pair.key.value) : ''));
    const cases = tests.items.map((pair, index) => ({
      id: ids[index] as string,
      test: (pair.value as { toJS(document: unknown): unknown }).toJS(document) as Test,
      shadowed: ids.indexOf(ids[index] as string, index + 1) !== -1,
    }));
    const { tests: _, ...rest } = document.toJS() as Record<string, unknown>;
    return { ...rest, cases } as unknown as SuiteScenario<Test>;
  });
}

/** Publishes the scenario's records (and only those) in `dns`. */
export function serveRecords(dns: DnsServer, records: Record<string, string>, previous: Record<string, string> = {}): void {
  for (const name of Object.keys(previous)) dns.remove(name);
  for (const [name, value] of Object.entries(records)) dns.set(name, { TXT: [value.replace(/\r?\n/g, '')] });
}

/** Builds the mx role's inbound checks over sello's resolver, pointed at the test DNS server. */
export function mxChecks(dns: DnsServer): InboundChecks {
  // The records change between scenarios, so nothing is cached.
  const resolver = createResolver({ servers: [{ host: dns.host, port: dns.port }], timeoutMs: 5000, cache: { maxEntries: 0, maxTtlSeconds: 0 } });
  const config = parseConfig({
    hostname: 'mx.sello.test',
    listeners: [{ name: 'mx', role: 'mx', listen: '127.0.0.1:0' }],
    relay: { target: 'dir:/nonexistent' },
    inbound: { localDomains: ['example.net'] },
  });
  return new InboundChecks(config, resolver.resolve);
}

export interface CheckedMessage extends InboundMessage {
  /** The message with CRLF line endings, as relayed. */
  message: Buffer;
  split: SplitMessage;
}

/** The suite's message (LF line endings, as YAML gives it) through the mx role's checks. */
export async function checkAsMx(checks: InboundChecks, suiteMessage: string | null | undefined): Promise<CheckedMessage> {
  const message = prepareMessage(Buffer.from(suiteMessage ?? '', 'utf8'), 'normalize');
  const split = splitMessage(message);
  // No SMTP transaction, so no SPF; the client address only feeds mailauth's smtp.remote-ip.
  const checked = await checks.inspect(headerFields(split.header.toString('latin1')), message, undefined, '192.0.2.25');
  return { ...checked, message, split };
}

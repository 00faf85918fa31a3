// Tests for src/pipeline/engine.ts: every decision the engine owns, through the session contract
// alone (no front end): who may start a transaction, SPF evaluated once and enforced per
// recipient, the recipient policy, who is signed and checked on each role, the header edits, and
// exactly one decision record per transaction. DNS is a zone resolver (a seam), keys are made here.

import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, test } from 'node:test';
import { parseConfig } from '../../../src/config/load.ts';
import { dnsError, type DnsResolve } from '../../../src/dns/types.ts';
import { createMetrics } from '../../../src/observability/metrics.ts';
import { MessageSink, type MessageSource } from '../../../src/message/index.ts';
import { InboundChecks, MessagePipeline, TransactionEngine, type ClientFacts, type EndVerdict, type EngineSession, type FrontEnd } from '../../../src/pipeline/index.ts';
import type { KeyStore } from '../../../src/signing/key-store.ts';
import { Signer } from '../../../src/signing/signer.ts';
import { SigningTable } from '../../../src/signing/table.ts';
import { captureLog } from '../../helpers/log.ts';

const zone: Record<string, string[]> = {
  'spf-fail.test': ['v=spf1 -all'],
  'spf-pass.test': ['v=spf1 ip4:192.0.2.7 -all'],
};
const resolve: DnsResolve = async (name, rrtype) => {
  const records = zone[name.toLowerCase()];
  if (!records) throw dnsError('ENOTFOUND', name, rrtype);
  if (rrtype !== 'TXT') throw dnsError('ENODATA', name, rrtype);
  return records.map((text) => [text]);
};

const privateKey = generateKeyPairSync('ed25519').privateKey;
const keys: KeyStore = {
  get: (domain, selector) => (domain === 'example.com' && selector === 'ed1' ? { domain, selector, algorithm: 'ed25519', privateKey } : undefined),
  warnings: [],
  size: 1,
  loaded: [],
};

function engineFor(overrides: Record<string, unknown> = {}) {
  const config = parseConfig({
    hostname: 'mx.example.org',
    listeners: [{ name: 'in', role: 'mx', listen: '127.0.0.1:0' }],
    inbound: { localDomains: ['example.org'] },
    signing: { keysDir: '/nonexistent', domains: { 'example.com': 'ed1' } },
    ...overrides,
  });
  const log = captureLog();
  const inbound = new InboundChecks(config, resolve);
  const signer = new Signer(new SigningTable(config.signing.domains), keys, config.signing);
  const pipeline = new MessagePipeline(config, signer, inbound);
  const engine = new TransactionEngine({ config, pipeline, inbound, metrics: createMetrics({ defaultMetrics: false }), logger: log.logger });
  const records = () => log.records().filter((record) => record['msg'] === 'transaction');
  return { engine, records };
}

const mx: FrontEnd = { listener: 'in', role: 'mx', signs: false, verifies: true, mtaJudgesRelay: false };
const submission: FrontEnd = { listener: 'sub', role: 'submission', signs: true, verifies: false, mtaJudgesRelay: true };
const milter: FrontEnd = { listener: 'milter', role: 'milter', signs: true, verifies: true, mtaJudgesRelay: true };
const stranger: ClientFacts = { sessionId: 's1', address: '198.51.100.9', addressKnown: true, helo: 'client.example.net', trusted: false };
const message = Buffer.from('From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: hi\r\n\r\nHello\r\n');

describe('who may start a transaction', () => {
  test('submission refuses an unauthenticated, untrusted client with 530 5.7.0 (no signing oracle)', async () => {
    const session = engineFor().engine.session(submission);
    assert.deepEqual(await session.mail('alice@example.com', stranger), { action: 'reject', reply: { code: 530, enhanced: '5.7.0', text: 'Authentication required' } });
    assert.equal(session.transactionOpen, false);
  });

  test('a filter serves only its trusted MTA', async () => {
    const session = engineFor().engine.session({ listener: 'f', role: 'filter', signs: true, verifies: false, mtaJudgesRelay: true });
    assert.equal((await session.mail('alice@example.com', stranger)).action, 'reject');
    assert.equal((await session.mail('alice@example.com', { ...stranger, trusted: true })).action, 'accept');
  });
});

describe('SPF: evaluated at MAIL, enforced at RCPT', () => {
  test('fail refuses each recipient with the RFC 7372 reply, postmaster@ exempt', async () => {
    const { engine, records } = engineFor();
    const session = engine.session(mx);
    assert.equal((await session.mail('bob@spf-fail.test', stranger)).action, 'accept');
    const refused = await session.rcpt('carol@example.org');
    assert.equal(refused.action, 'reject');
    assert.equal(refused.action === 'reject' && refused.reply.enhanced, '5.7.23');
    assert.deepEqual(await session.rcpt('postmaster@example.org'), { action: 'accept' });
    session.abort();
    const [record] = records();
    assert.equal(record?.['outcome'], 'abandoned');
    assert.deepEqual(record?.['refusedRecipients'], [550]);
    assert.equal(record?.['recipients'], 1);
    assert.deepEqual(record?.['spf'], { result: 'fail', identity: 'mailfrom', domain: 'spf-fail.test', action: 'reject' });
  });

  test('every recipient refused: the record says rejected', async () => {
    const { engine, records } = engineFor();
    const session = engine.session(mx);
    await session.mail('bob@spf-fail.test', stranger);
    await session.rcpt('carol@example.org');
    session.abort();
    assert.equal(records()[0]?.['outcome'], 'rejected');
  });

  test('no open relay on mx: a non-local recipient is refused unless the MTA judges the real client', async () => {
    const { engine } = engineFor();
    const judgedHere = engine.session(mx);
    await judgedHere.mail('bob@spf-pass.test', { ...stranger, address: '192.0.2.7' });
    assert.deepEqual(await judgedHere.rcpt('someone@elsewhere.example'), { action: 'reject', reply: { code: 550, enhanced: '5.7.1', text: 'Relaying denied' } });
    const judgedByMta = engine.session({ ...mx, mtaJudgesRelay: true });
    await judgedByMta.mail('bob@spf-pass.test', { ...stranger, address: '192.0.2.7' });
    assert.deepEqual(await judgedByMta.rcpt('someone@elsewhere.example'), { action: 'accept' });
  });

  test('the recipient limit answers 452 4.5.3, counting recipients the MTA refused out', async () => {
    const { engine } = engineFor({ limits: { maxRecipients: 2 } });
    const session = engine.session(mx);
    await session.mail('bob@spf-pass.test', { ...stranger, address: '192.0.2.7' });
    assert.equal((await session.rcpt('a@example.org')).action, 'accept');
    assert.equal((await session.rcpt('b@example.org')).action, 'accept');
    session.recipientRefused(550);
    assert.equal((await session.rcpt('c@example.org')).action, 'accept');
    assert.deepEqual(await session.rcpt('d@example.org'), { action: 'defer', reply: { code: 452, enhanced: '4.5.3', text: 'Too many recipients' } });
  });

  test('a trusted client on mx is neither checked nor refused', async () => {
    const { engine, records } = engineFor();
    const session = engine.session(mx);
    await session.mail('bob@spf-fail.test', { ...stranger, trusted: true });
    assert.deepEqual(await session.rcpt('anyone@elsewhere.example'), { action: 'accept' });
    session.abort();
    assert.equal(records()[0]?.['spf'], undefined);
  });
});

describe('end: header edits, not rewritten bytes', () => {
  test('mx: Authentication-Results and Received-SPF on top, the forged A-R removed by name and index, nothing signed', async () => {
    const { engine, records } = engineFor();
    const session = engine.session(mx);
    await session.mail('bob@spf-pass.test', { ...stranger, address: '192.0.2.7' });
    await session.rcpt('carol@example.org');
    const forged = Buffer.from(
      'Authentication-Results: other.example; spf=pass\r\nAuthentication-Results: mx.example.org; dkim=pass\r\n' + message.toString('latin1'),
      'latin1',
    );
    const verdict = await session.end(forged);
    assert.equal(verdict.action, 'accept');
    if (verdict.action !== 'accept') return;
    assert.deepEqual(verdict.edits.remove, [{ name: 'Authentication-Results', index: 2 }]);
    assert.deepEqual(
      verdict.edits.add.map((field) => field.slice(0, field.indexOf(':'))),
      ['Authentication-Results', 'Received-SPF'],
    );
    assert.match(verdict.edits.add[0] as string, /^Authentication-Results: mx\.example\.org;\r\n spf=pass/);
    assert.ok(verdict.message.equals(forged), 'the message bytes are the ones received');
    session.delivered({ code: 250, queueId: 'Q1' });
    const [record] = records();
    assert.equal(record?.['outcome'], 'relayed');
    assert.equal(record?.['unsigned'], 'listener-does-not-sign');
    assert.equal(record?.['version'], 1);
  });

  test('submission: a DKIM-Signature to add; several From fields refused with 550 5.6.0', async () => {
    const { engine } = engineFor();
    const session = engine.session(submission);
    await session.mail('alice@example.com', { ...stranger, user: 'alice' });
    await session.rcpt('bob@example.org');
    const verdict = await session.end(message);
    assert.equal(verdict.action, 'accept');
    if (verdict.action !== 'accept') return;
    assert.equal(verdict.edits.add.length, 1);
    assert.match(verdict.edits.add[0] as string, /^DKIM-Signature: v=1; a=ed25519-sha256;/);
    assert.deepEqual(verdict.edits.remove, []);
    assert.deepEqual(verdict.record.signatures, [{ domain: 'example.com', selector: 'ed1', algorithm: 'ed25519-sha256' }]);
    session.delivered({ code: 250 });

    await session.mail('alice@example.com', { ...stranger, user: 'alice' });
    await session.rcpt('bob@example.org');
    const twoFrom = await session.end(Buffer.from(`From: x@example.com\r\n${message.toString('latin1')}`, 'latin1'));
    assert.equal(twoFrom.action, 'reject');
    assert.equal(twoFrom.action === 'reject' && twoFrom.reply.enhanced, '5.6.0');
  });

  test('milter: signs authenticated or trusted mail, checks everything else, and never refuses an odd From', async () => {
    const { engine } = engineFor();
    const authenticated = engine.session(milter);
    await authenticated.mail('alice@example.com', { ...stranger, user: 'alice' });
    const signed = await authenticated.end(message);
    assert.ok(signed.action === 'accept' && signed.edits.add.length === 1 && signed.edits.add[0]?.startsWith('DKIM-Signature:'));

    const inbound = engine.session(milter);
    await inbound.mail('bob@spf-pass.test', { ...stranger, address: '192.0.2.7' });
    const checked = await inbound.end(message);
    assert.ok(checked.action === 'accept');
    assert.deepEqual(checked.edits.add.map((field) => field.slice(0, field.indexOf(':'))), ['Authentication-Results', 'Received-SPF']);

    const local = engine.session(milter);
    await local.mail('', { ...stranger, address: '127.0.0.1', trusted: true });
    const noFrom = await local.end(Buffer.from('Subject: cron\r\n\r\nout\r\n'));
    assert.ok(noFrom.action === 'accept' && noFrom.edits.add.length === 0 && noFrom.record.unsigned === 'from-not-single');
  });

  test('a refusal at end writes the record once, with the reason for the log', async () => {
    const { engine, records } = engineFor({ data: { bareLineEndings: 'reject' } });
    const session = engine.session(submission);
    await session.mail('alice@example.com', { ...stranger, user: 'alice' });
    await session.rcpt('bob@example.org');
    const verdict = await session.end(Buffer.from('From: alice@example.com\n\nbare\n'));
    assert.equal(verdict.action, 'reject');
    assert.equal(session.transactionOpen, false);
    session.abort();
    assert.equal(records().length, 1);
    assert.equal(records()[0]?.['outcome'], 'rejected');
  });

  test('a failed delivery is recorded as deferred or rejected by its code', async () => {
    const { engine, records } = engineFor();
    const session = engine.session(submission);
    await session.mail('alice@example.com', { ...stranger, user: 'alice' });
    await session.rcpt('bob@example.org');
    await session.end(message);
    session.failed({ code: 451, enhanced: '4.4.1', text: 'Downstream mail server unreachable, try again later' }, 'connect ECONNREFUSED', { relay: 'smtp://127.0.0.1:1', code: 451 });
    const [record] = records();
    assert.equal(record?.['outcome'], 'deferred');
    assert.equal(record?.['error'], 'connect ECONNREFUSED');
    assert.deepEqual(record?.['relay'], { relay: 'smtp://127.0.0.1:1', code: 451 });
  });
});

describe('the streaming form: receive() then end(sink)', () => {
  test('a message written into the sink in pieces gets the same edits as the whole message passed to end()', async () => {
    const { engine } = engineFor();
    const signedBy = async (send: (session: EngineSession) => Promise<EndVerdict<Buffer | MessageSource>>) => {
      const session = engine.session(submission);
      await session.mail('alice@example.com', { ...stranger, user: 'alice' });
      await session.rcpt('bob@example.org');
      return send(session);
    };
    const whole = await signedBy((session) => session.end(message));
    const streamed = await signedBy(async (session) => {
      const sink = session.receive();
      for (let offset = 0; offset < message.length; offset += 7) await sink.write(message.subarray(offset, offset + 7));
      return session.end(sink);
    });
    assert.ok(whole.action === 'accept' && streamed.action === 'accept');
    // The body hash made while the pieces streamed in is the one made from the whole body.
    const tags = (fields: string[]) => fields.map((field) => [/ h=[^;]+/.exec(field)?.[0], /bh=[^;]+/.exec(field)?.[0]]);
    assert.equal(streamed.edits.add.length, 1);
    assert.ok(tags(whole.edits.add)[0]?.every(Boolean));
    assert.deepEqual(tags(streamed.edits.add), tags(whole.edits.add));
  });

  test('an oversized message in the sink is refused 552 5.3.4 at end, and the record says why', async () => {
    const { engine, records } = engineFor({ limits: { maxMessageSize: 1000 } });
    const session = engine.session(submission);
    await session.mail('alice@example.com', { ...stranger, user: 'alice' });
    await session.rcpt('bob@example.org');
    const sink = session.receive();
    await sink.write(message);
    await sink.write(Buffer.alloc(2000, 0x61));
    const verdict = await session.end(sink);
    assert.deepEqual(verdict.action === 'reject' && verdict.reply, { code: 552, enhanced: '5.3.4', text: 'Message size exceeds fixed maximum message size' });
    assert.equal(records()[0]?.['outcome'], 'rejected');
    assert.match(String(records()[0]?.['error']), /maxMessageSize/);
  });

  test('end() refuses a sink that another transaction received into', async () => {
    const { engine } = engineFor();
    const session = engine.session(submission);
    const other = engine.session(submission);
    for (const each of [session, other]) {
      await each.mail('alice@example.com', { ...stranger, user: 'alice' });
      await each.rcpt('bob@example.org');
    }
    const foreign = other.receive();
    await assert.rejects(session.end(foreign), /must come from this transaction's receive/);
  });
});

describe('the body hash is made only for a message that is signed or sealed', () => {
  const sinkOptions = { maxMessageSize: 1 << 20, maxHeaderSize: 1 << 16, bareLineEndings: 'normalize' as const, nul: 'reject' as const, spillThreshold: Infinity, spillDirectory: '/nonexistent' };
  const pipelineFor = () => {
    const config = parseConfig({ hostname: 'mx.example.org', listeners: [{ name: 'sub', role: 'submission', listen: '127.0.0.1:0' }], signing: { keysDir: '/nonexistent', domains: { 'example.com': 'ed1' } } });
    return new MessagePipeline(config, new Signer(new SigningTable(config.signing.domains), keys, config.signing));
  };
  const options = { signs: true, requireSingleFrom: false };

  test('a From domain the table does not sign: the body is not hashed, and the message is relayed unsigned', async () => {
    const pipeline = pipelineFor();
    const sink = new MessageSink(sinkOptions);
    const work = pipeline.observe(sink, options);
    assert.ok(work.bodyHasher, 'a hasher waits for the header');
    await sink.write(Buffer.from('From: Carol <carol@elsewhere.example>\r\nSubject: hi\r\n\r\nHello\r\n'));
    assert.equal(work.bodyHasher, undefined, 'dropped at the first body bytes');
    const prepared = await pipeline.process(await sink.finish(), options, work);
    assert.deepEqual(prepared.signing, { signed: false, reason: 'domain-not-configured', fromDomain: 'elsewhere.example' });
  });

  test('a From domain the table signs: the body is hashed as it streams, and the signature carries its hash', async () => {
    const pipeline = pipelineFor();
    const sink = new MessageSink(sinkOptions);
    const work = pipeline.observe(sink, options);
    for (const piece of ['From: Alice <alice@example.com>\r\nSubj', 'ect: hi\r\n\r\nHel', 'lo\r\n']) await sink.write(Buffer.from(piece));
    assert.ok(work.bodyHasher);
    const prepared = await pipeline.process(await sink.finish(), options, work);
    assert.equal(prepared.signing.signed, true);
    // RFC 6376 §3.4.4 relaxed "Hello\r\n", SHA-256, base64.
    assert.ok(prepared.edits.add.join('').includes('bh=Ba3gj8+xBPQLJTahTfzW6RbWQ/XPgESxkCi2B66PSQg=;'), prepared.edits.add.join(''));
  });
});

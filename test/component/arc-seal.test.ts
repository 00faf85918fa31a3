// ARC sealing (inbound.arc.seal) end to end in-process: an mx listener (and a filter that verifies
// and signs) in front of a real SMTP sink, a real DNS server on loopback publishing SPF and the
// keys of sello and of an earlier hop. The delivered message is validated as the next hop would:
// mailauth's ARC validator with its own node:dns resolver asking the same DNS server. Earlier hops'
// ARC sets are made with mailauth's sealMessage, not by sello.

import assert from 'node:assert/strict';
import { Resolver } from 'node:dns/promises';
import { rm } from 'node:fs/promises';
import { test, type TestContext } from 'node:test';
import { authenticate, sealMessage } from 'mailauth';
import { startSello, type RunningSello } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import { generateDkimKey } from '../helpers/dkim-keys.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { parseAuthenticationResults } from '../helpers/header-parsers.ts';
import { captureLog } from '../helpers/log.ts';
import { makeKeys } from '../helpers/sello.ts';
import { SmtpDialog, sendMail } from '../helpers/smtp-dialog.ts';
import { startSink, type Sink } from '../helpers/smtp-sink.ts';

const earlierHop = generateDkimKey('rsa-sha256');

interface Setup {
  sink: Sink;
  dns: DnsServer;
  running: RunningSello;
  port: number;
  log: () => Record<string, unknown>[];
  /** The config as given to parseConfig, for reloads. */
  raw: Record<string, unknown>;
}

/**
 * sello with an mx listener (or the given listener) relaying to a sink; `seal` turns on
 * inbound.arc.seal with the RSA key arc1._domainkey.sello.example, published in the DNS server.
 */
async function setup(t: TestContext, options: { seal: boolean; listener?: Record<string, unknown>; signing?: boolean } = { seal: true }): Promise<Setup> {
  const { keysDir, records } = await makeKeys([
    { domain: 'sello.example', selector: 'arc1', algorithm: 'rsa' },
    ...(options.signing ? [{ domain: 'pass.example', selector: 'k1', algorithm: 'rsa' as const }] : []),
  ]);
  t.after(() => rm(keysDir, { recursive: true, force: true }));
  const zone: Record<string, unknown> = {
    'pass.example': { TXT: ['v=spf1 ip4:127.0.0.2 -all'] },
    'hop1._domainkey.forwarder.example': { TXT: [earlierHop.record] },
  };
  for (const [name, value] of records) zone[name] = { TXT: [value] };
  const dns = await startDnsServer(zone as never);
  t.after(() => dns.close());
  const sink = await startSink();
  t.after(() => sink.close());
  const captured = captureLog();
  const raw = {
    hostname: 'mx.sello.test',
    listeners: [options.listener ?? { name: 'mx', role: 'mx', listen: '127.0.0.1:0', greetingDelay: 0 }],
    relay: { target: sink.url, starttls: 'never' },
    inbound: { localDomains: ['example.net'], ...(options.seal ? { arc: { seal: { domain: 'sello.example', selector: 'arc1' } } } : {}) },
    dns: { servers: [dns.address], timeout: '500ms' },
    signing: { keysDir, domains: options.signing ? { 'pass.example': 'k1' } : {} },
  };
  const config = parseConfig(raw);
  const running = await startSello(config, captured.logger);
  t.after(() => running.close());
  const name = config.listeners[0]!.name;
  return {
    sink,
    dns,
    running,
    port: running.addresses.get(name)!.port,
    log: captured.records,
    raw,
  };
}

const message = (subject = 'arc') =>
  Buffer.from(`From: Alice <alice@pass.example>\r\nTo: bob@example.net\r\nSubject: ${subject}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <${subject}@pass.example>\r\n\r\nHello.\r\n`);

/** `data` with an earlier hop's ARC set on top (mailauth's sealMessage; `cv` as that hop claims). */
async function sealedByEarlierHop(data: Buffer, cv: 'none' | 'fail' = 'none'): Promise<Buffer> {
  const set = await sealMessage(data, {
    signingDomain: 'forwarder.example',
    selector: 'hop1',
    privateKey: earlierHop.privateKeyPem,
    authResults: 'forwarder.example; spf=pass smtp.mailfrom=alice@pass.example',
    cv,
  });
  assert.ok(set.length > 0);
  return Buffer.concat([set, data]);
}

function headerFields(data: Buffer): string[] {
  return (data.toString('latin1').split('\r\n\r\n')[0] ?? '').split(/\r\n(?![ \t])/);
}

function named(data: Buffer, name: string): string[] {
  return headerFields(data).filter((field) => field.toLowerCase().startsWith(`${name.toLowerCase()}:`));
}

const nameOf = (field: string) => field.slice(0, field.indexOf(':'));

/** The next hop's view: mailauth's ARC validator, keys from the test DNS server via node:dns. */
/** `dkim`: the result of each DKIM signature (mailauth reports "none" for a message without). */
async function nextHop(data: Buffer, dns: DnsServer): Promise<{ arc: string; instance: number | false; dkim: string[] }> {
  const resolver = new Resolver({ timeout: 2000, tries: 1 });
  resolver.setServers([`${dns.host}:${dns.port}`]);
  const lookup = (name: string, type: string) => (type === 'TXT' ? resolver.resolveTxt(name) : Promise.reject(Object.assign(new Error(type), { code: 'ENOTFOUND' })));
  const verdict = await authenticate(data, { resolver: lookup as never, ip: '192.0.2.1', helo: 'mx.sello.test', sender: 'alice@pass.example', mta: 'next.example', disableBimi: true, disableDmarc: true });
  const arc = verdict.arc as unknown as { status: { result: string }; i: number | false };
  return { arc: arc.status.result, instance: arc.i, dkim: (verdict.dkim.results ?? []).map((result) => result.status.result) };
}

async function seals(running: RunningSello): Promise<Record<string, number>> {
  const text = await running.metrics.registry.metrics();
  return Object.fromEntries([...text.matchAll(/^sello_arc_seals_total\{result="(\w+)"\} (\d+)$/gm)].map((match) => [match[1], Number(match[2])]));
}

test('mx, no chain: one ARC set i=1 cv=none on top, its AAR is our Authentication-Results; the next hop gets arc=pass', async (t) => {
  const { sink, dns, running, port, log } = await setup(t);
  const sent = await sendMail(port, { from: 'alice@pass.example', to: ['bob@example.net'], data: message() }, { localAddress: '127.0.0.2' });
  assert.match(sent.data ?? '', /^250 /);
  const delivered = sink.messages[0]!.data;
  assert.deepEqual(headerFields(delivered).slice(0, 5).map(nameOf), ['ARC-Seal', 'ARC-Message-Signature', 'ARC-Authentication-Results', 'Authentication-Results', 'Received-SPF']);
  const [seal] = named(delivered, 'ARC-Seal');
  assert.match(seal!.replace(/\r\n /g, ' '), /^ARC-Seal: i=1; a=rsa-sha256; t=\d+; cv=none; d=sello\.example; s=arc1; b=[A-Za-z0-9+/ ]+=*$/);
  const [authenticationResults] = named(delivered, 'Authentication-Results');
  assert.equal(named(delivered, 'ARC-Authentication-Results')[0], `ARC-Authentication-Results: i=1; ${authenticationResults!.slice('Authentication-Results: '.length)}`);
  assert.deepEqual(parseAuthenticationResults(authenticationResults!).resinfos.map((r) => `${r.method}=${r.result}`), ['spf=pass', 'dkim=none', 'dmarc=none', 'arc=none']);
  assert.ok(delivered.toString('latin1').endsWith(message().toString('latin1')), 'the message itself is unchanged');
  assert.deepEqual(await nextHop(delivered, dns), { arc: 'pass', instance: 1, dkim: ['none'] });
  assert.deepEqual(await seals(running), { sealed: 1 });
  const record = log().find((entry) => entry['msg'] === 'transaction');
  assert.deepEqual(record?.['arcSeal'], { result: 'sealed', instance: 1, cv: 'none' });
});

test('mx, a valid chain from an earlier hop: sello validates it (arc=pass) and adds i=2 cv=pass; the next hop validates both sets', async (t) => {
  const { sink, dns, running, port } = await setup(t);
  const received = await sealedByEarlierHop(message('forwarded'));
  await sendMail(port, { from: 'alice@pass.example', to: ['bob@example.net'], data: received }, { localAddress: '127.0.0.2' });
  const delivered = sink.messages[0]!.data;
  const results = parseAuthenticationResults(named(delivered, 'Authentication-Results')[0]!);
  assert.equal(results.resinfos.find((r) => r.method === 'arc')?.result, 'pass');
  assert.deepEqual(named(delivered, 'ARC-Seal').map((field) => /\bi=(\d+);.*\bcv=(\w+);/.exec(field.replace(/\r\n /g, ' '))?.slice(1).join(' ')), ['2 pass', '1 none']);
  assert.match(named(delivered, 'ARC-Authentication-Results')[0]!, /^ARC-Authentication-Results: i=2; mx\.sello\.test;\r\n spf=pass /);
  assert.ok(delivered.toString('latin1').endsWith(received.toString('latin1')), 'the earlier set and the message are relayed as received');
  assert.deepEqual(await nextHop(delivered, dns), { arc: 'pass', instance: 2, dkim: ['none'] });
  assert.deepEqual(await seals(running), { sealed: 1 });
});

test('mx, a chain that ended with cv=fail is not sealed again (RFC 8617 §5.1): skipped, counted', async (t) => {
  const { sink, running, port, log } = await setup(t);
  await sendMail(port, { from: 'alice@pass.example', to: ['bob@example.net'], data: await sealedByEarlierHop(message('ended'), 'fail') }, { localAddress: '127.0.0.2' });
  const delivered = sink.messages[0]!.data;
  assert.deepEqual(named(delivered, 'ARC-Seal').length, 1, "only the earlier hop's set");
  assert.deepEqual(await seals(running), { skipped: 1 });
  assert.deepEqual(log().find((entry) => entry['msg'] === 'transaction')?.['arcSeal'], { result: 'skipped', reason: 'chain-already-failed' });
});

test('sealing off (the default): no ARC fields, nothing counted', async (t) => {
  const { sink, running, port } = await setup(t, { seal: false });
  await sendMail(port, { from: 'alice@pass.example', to: ['bob@example.net'], data: message() }, { localAddress: '127.0.0.2' });
  const delivered = sink.messages[0]!.data;
  assert.equal(named(delivered, 'Authentication-Results').length, 1, 'the checks ran');
  assert.deepEqual(headerFields(delivered).filter((field) => /^arc-/i.test(field)), []);
  assert.deepEqual(await seals(running), {});
});

test('a trusted client of mx is not checked, so not sealed', async (t) => {
  const { sink, running, port } = await setup(t, { seal: true, listener: { name: 'mx', role: 'mx', listen: '127.0.0.1:0', greetingDelay: 0, trustedNetworks: ['127.0.0.3/32'] } });
  await sendMail(port, { from: 'alice@pass.example', to: ['bob@example.net'], data: message() }, { localAddress: '127.0.0.3' });
  assert.deepEqual(sink.messages[0]!.data, message());
  assert.deepEqual(await seals(running), {});
});

test('a sealing failure relays the message unsealed (250), with a warning and sello_arc_seals_total{result="failed"}', async (t) => {
  const { sink, running, port, log } = await setup(t);
  // No From field: mailauth refuses to make an ARC-Message-Signature (RFC 6376 §5.4: From MUST be signed).
  const noFrom = Buffer.from('To: bob@example.net\r\nSubject: no from\r\n\r\nHello.\r\n');
  const sent = await sendMail(port, { from: 'alice@pass.example', to: ['bob@example.net'], data: noFrom }, { localAddress: '127.0.0.2' });
  assert.match(sent.data ?? '', /^250 2\.0\.0 /);
  const delivered = sink.messages[0]!.data;
  assert.deepEqual(headerFields(delivered).map(nameOf), ['Authentication-Results', 'Received-SPF', 'To', 'Subject']);
  assert.ok(delivered.toString('latin1').endsWith(noFrom.toString('latin1')));
  assert.deepEqual(await seals(running), { failed: 1 });
  const warning = log().find((entry) => entry['msg'] === 'ARC sealing failed: the message is relayed unsealed');
  assert.equal(warning?.['level'], 40);
  assert.match(String(warning?.['err']), /^ARC sealing with arc1\._domainkey\.sello\.example failed: ENOFROM: /);
  const record = log().find((entry) => entry['msg'] === 'transaction');
  assert.equal((record?.['arcSeal'] as { result?: string } | undefined)?.result, 'failed');
  assert.equal(record?.['outcome'], 'relayed');
});

test('a filter that verifies and signs: checks, then DKIM, then the ARC set on top covering the DKIM-Signature; both verify', async (t) => {
  const { sink, dns, running, port } = await setup(t, {
    seal: true,
    signing: true,
    listener: { name: 'filter', role: 'filter', listen: '127.0.0.1:0', verify: true, sign: true, xforwardPeers: ['127.0.0.1'] },
  });
  const dialog = await SmtpDialog.connect(port);
  assert.match(await dialog.command('EHLO postfix.test'), /XFORWARD/);
  assert.equal(await dialog.command('XFORWARD ADDR=127.0.0.2 HELO=client.test PROTO=ESMTP'), '250 OK');
  assert.match(await dialog.command('MAIL FROM:<alice@pass.example>'), /^250 /);
  assert.match(await dialog.command('RCPT TO:<bob@example.net>'), /^250 /);
  assert.match(await dialog.sendData(message('filtered')), /^250 /);
  await dialog.close();
  const delivered = sink.messages[0]!.data;
  assert.deepEqual(headerFields(delivered).slice(0, 6).map(nameOf), [
    'ARC-Seal',
    'ARC-Message-Signature',
    'ARC-Authentication-Results',
    'DKIM-Signature',
    'Authentication-Results',
    'Received-SPF',
  ]);
  const signedFields = /\bh=([^;]*);/.exec(named(delivered, 'ARC-Message-Signature')[0]!.replace(/\r\n /g, ' '))?.[1]?.split(':').map((name) => name.trim().toLowerCase());
  assert.ok(signedFields?.includes('dkim-signature'), `RFC 8617 §4.1.2: h=${signedFields?.join(':')}`);
  assert.deepEqual(await nextHop(delivered, dns), { arc: 'pass', instance: 1, dkim: ['pass'] });
  assert.deepEqual(await seals(running), { sealed: 1 });
});

test('SIGHUP reload validates the ARC key: a missing or Ed25519 key keeps the running config (still sealing); /readyz counts the key', async (t) => {
  const { sink, running, port, log, raw } = await setup(t);
  assert.deepEqual((await running.readiness()).checks['keys'], 'ok');
  const { keysDir } = await makeKeys([{ domain: 'sello.example', selector: 'ed1', algorithm: 'ed25519' }]);
  t.after(() => rm(keysDir, { recursive: true, force: true }));
  const inbound = raw['inbound'] as Record<string, unknown>;
  const withSeal = (selector: string) => () => Promise.resolve(parseConfig({ ...raw, inbound: { ...inbound, arc: { seal: { domain: 'sello.example', selector } } }, signing: { keysDir } }));
  assert.equal(await running.reload(withSeal('ed1')), false);
  assert.equal(await running.reload(withSeal('missing')), false);
  const failures = log().filter((entry) => entry['msg'] === 'config reload failed: the running configuration stays in effect');
  assert.deepEqual(failures.map((entry) => entry['path']), ['inbound.arc.seal', 'inbound.arc.seal']);
  assert.match(String(failures[0]?.['err']), /ed1\.pem: an Ed25519 key cannot seal ARC/);
  await sendMail(port, { from: 'alice@pass.example', to: ['bob@example.net'], data: message() }, { localAddress: '127.0.0.2' });
  assert.equal(named(sink.messages[0]!.data, 'ARC-Seal').length, 1);
  assert.match(named(sink.messages[0]!.data, 'ARC-Seal')[0]!, /\bs=arc1;/);
});

// Proves the test harness itself works, independently of sello: the loopback DNS server
// (test/helpers/dns-server.ts), dkimpy as signer and verifier (dkimpy.ts), and a real Exim
// (exim.ts) that verifies DKIM through that DNS server and refuses recipients as told.
// Must not: import anything from src/ — if this file fails, the harness is broken, not sello.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { Resolver } from 'node:dns/promises';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import * as dnsPacket from 'dns-packet';
import type { DecodedPacket, RecordType } from 'dns-packet';
import { generateDkimKey, type DkimTestKey } from '../helpers/dkim-keys.ts';
import { signWithDkimpy, verifyWithDkimpy } from '../helpers/dkimpy.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { eximDkimResults, startExim, withoutEximFields, type Exim } from '../helpers/exim.ts';
import { dotStuff, sendMail, SmtpDialog } from '../helpers/smtp-dialog.ts';
import { checkDkimpy, checkExim, checkSwaks, freePort, suiteOptions, toolGate, type ToolCheck } from '../helpers/tools.ts';

// ---------- raw DNS queries, so the server is tested on the wire, not through a resolver ----------

function queryPacket(name: string, type: RecordType, edns?: number): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id: Math.floor(Math.random() * 65535),
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type, name, class: 'IN' }],
    additionals: edns ? [{ type: 'OPT', name: '.', udpPayloadSize: edns, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }] : [],
  });
}

function queryUdp(server: DnsServer, name: string, type: RecordType, options: { edns?: number; timeoutMs?: number } = {}): Promise<DecodedPacket | undefined> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket('udp4');
    const timer = setTimeout(() => {
      socket.close();
      resolve(undefined);
    }, options.timeoutMs ?? 2000);
    socket.on('message', (message) => {
      clearTimeout(timer);
      socket.close();
      resolve(dnsPacket.decode(message));
    });
    socket.on('error', reject);
    socket.send(queryPacket(name, type, options.edns), server.port, server.host);
  });
}

function queryTcp(server: DnsServer, name: string, type: RecordType): Promise<DecodedPacket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: server.host, port: server.port });
    let received = Buffer.alloc(0);
    socket.on('data', (chunk) => {
      received = Buffer.concat([received, chunk]);
      if (received.length >= 2 && received.length >= 2 + received.readUInt16BE(0)) {
        socket.destroy();
        resolve(dnsPacket.decode(received.subarray(2, 2 + received.readUInt16BE(0))));
      }
    });
    socket.on('error', reject);
    const query = queryPacket(name, type);
    const framed = Buffer.alloc(2 + query.length);
    framed.writeUInt16BE(query.length, 0);
    query.copy(framed, 2);
    socket.write(framed);
  });
}

const rcode = (packet: DecodedPacket | undefined): number => (packet?.flags ?? -1) & 0xf;
const answerData = (packet: DecodedPacket | undefined): unknown[] =>
  (packet?.answers ?? []).map((answer) => ('data' in answer ? answer.data : undefined));
const txtStrings = (packet: DecodedPacket | undefined): string[][] =>
  (packet?.answers ?? []).flatMap((answer) =>
    answer.type === 'TXT' ? [(Array.isArray(answer.data) ? answer.data : [answer.data]).map((part) => part.toString())] : [],
  );

describe('dns-server', () => {
  let server: DnsServer;
  const long = 'v=DKIM1; k=rsa; p=' + 'A'.repeat(380); // 398 octets → 255 + 143

  before(async () => {
    server = await startDnsServer({
      'Example.COM.': { TXT: ['v=spf1 -all'], A: ['192.0.2.1'], MX: [{ exchange: 'mx.example.com', priority: 10 }] },
      'long.example.com': { TXT: [long, ['first part ', 'second part']] },
      'alias.example.com': { CNAME: 'example.com' },
      '*.wild.example.com': { A: ['192.0.2.7'] },
      'broken.example.com': { fault: 'servfail' },
      'big.example.com': { TXT: Array.from({ length: 12 }, (_, i) => `record ${i} ${'x'.repeat(60)}`) },
    });
  });
  after(() => server.close());

  test('a TXT string over 255 octets is served as 255-octet character-strings; string[] as given', async () => {
    const response = await queryTcp(server, 'long.example.com', 'TXT');
    const records = txtStrings(response);
    assert.equal(records.length, 2);
    const split = records.find((parts) => parts.length === 2 && parts[0]?.startsWith('v=DKIM1'));
    assert.deepEqual(split?.map((part) => Buffer.byteLength(part)), [255, long.length - 255]);
    assert.equal(split?.join(''), long);
    assert.ok(records.some((parts) => parts.length === 2 && parts[0] === 'first part ' && parts[1] === 'second part'));
    assert.ok(response?.flag_aa, 'authoritative');
  });

  test('names are case-insensitive; NXDOMAIN for absent names, NODATA for absent types', async () => {
    const found = await queryUdp(server, 'EXAMPLE.com', 'A');
    assert.equal(rcode(found), 0);
    assert.deepEqual(answerData(found), ['192.0.2.1']);

    const nodata = await queryUdp(server, 'example.com', 'AAAA');
    assert.equal(rcode(nodata), 0);
    assert.equal(nodata?.answers?.length, 0);

    const nxdomain = await queryUdp(server, 'absent.example.com', 'A');
    assert.equal(rcode(nxdomain), 3);
    assert.equal(nxdomain?.answers?.length, 0);
  });

  test('CNAME is followed inside the zone; wildcards match; MX served', async () => {
    const aliased = await queryUdp(server, 'alias.example.com', 'TXT');
    assert.deepEqual(aliased?.answers?.map((answer) => answer.type), ['CNAME', 'TXT']);
    const wild = await queryUdp(server, 'anything.wild.example.com', 'A');
    assert.deepEqual(wild?.answers?.map((answer) => answer.name), ['anything.wild.example.com']);
    assert.deepEqual(answerData(wild), ['192.0.2.7']);
    const resolver = new Resolver();
    resolver.setServers([server.address]);
    const mx = await resolver.resolveMx('example.com');
    assert.deepEqual(mx.map(({ exchange, priority }) => ({ exchange, priority })), [{ exchange: 'mx.example.com', priority: 10 }]);
  });

  test('servfail and drop modes, globally and per name', async () => {
    assert.equal(rcode(await queryUdp(server, 'broken.example.com', 'TXT')), 2);
    server.setMode('servfail');
    assert.equal(rcode(await queryUdp(server, 'example.com', 'A')), 2);
    server.setMode('drop');
    assert.equal(await queryUdp(server, 'example.com', 'A', { timeoutMs: 300 }), undefined);
    server.setMode('normal');
    assert.equal(rcode(await queryUdp(server, 'example.com', 'A')), 0);
  });

  test('an answer too big for UDP is truncated (TC) and complete over TCP; resolvers fall back', async () => {
    const udp = await queryUdp(server, 'big.example.com', 'TXT');
    assert.ok(udp?.flag_tc, 'TC set');
    assert.equal(udp?.answers?.length, 0);
    const withEdns = await queryUdp(server, 'big.example.com', 'TXT', { edns: 1232 });
    assert.ok(!withEdns?.flag_tc, 'fits in an EDNS(0) payload of 1232');
    const tcp = await queryTcp(server, 'big.example.com', 'TXT');
    assert.equal(tcp.answers?.length, 12);

    const before = server.queries.length;
    const resolver = new Resolver();
    resolver.setServers([server.address]);
    assert.equal((await resolver.resolveTxt('big.example.com')).length, 12);
    assert.ok(server.queries.slice(before).some((query) => query.transport === 'tcp' && query.name === 'big.example.com'));
  });

  test('set and remove change answers at once', async () => {
    server.set('new.example.com', { A: ['192.0.2.9'] });
    assert.equal(rcode(await queryUdp(server, 'new.example.com', 'A')), 0);
    server.remove('new.example.com');
    assert.equal(rcode(await queryUdp(server, 'new.example.com', 'A')), 3);
    assert.throws(() => server.set('bad.example.com', { TXT: [['x'.repeat(256)]] }), /255 octets/);
  });
});

describe('tools', () => {
  const present: ToolCheck = { name: 'present', missing: undefined, install: 'nothing' };
  const absent: ToolCheck = { name: 'absent', missing: 'not on PATH', install: 'absent-pkg' };

  test('a missing tool skips loudly on a workstation and fails under CI', () => {
    const notices: string[] = [];
    const workstation = { ci: false, notify: (text: string) => notices.push(text) };
    assert.equal(toolGate([present], 'x', workstation), undefined);
    assert.deepEqual(notices, []);
    assert.equal(toolGate([present, absent], 'suite x', workstation), 'missing absent (not on PATH)');
    assert.match(notices[0] ?? '', /^SKIPPED: absent \(not on PATH\) — suite x not run; install: absent-pkg$/);
    assert.throws(() => toolGate([absent], 'x', { ci: true, notify: () => assert.fail('no notice under CI') }), /CI must install absent \(absent-pkg\): see \.ci\/run/);
  });

  test('freePort gives a bindable port', async () => {
    const port = await freePort();
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', () => resolve()));
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
});

// ---------- dkimpy and Exim ----------

const MESSAGE = Buffer.from(
  [
    'From: Alice <alice@example.org>',
    'To: Bob <bob@example.net>',
    'Subject: harness check',
    'Date: Mon, 02 Jun 2025 10:00:00 +0000',
    'Message-ID: <harness-1@example.org>',
    '',
    'Hello Bob,',
    '.a line that needs dot-stuffing',
    '',
    'Alice',
    '',
  ].join('\r\n'),
);

function tamper(message: Buffer): Buffer {
  const text = message.toString('latin1');
  return Buffer.from(text.replace('Hello Bob,', 'Hello Eve,'), 'latin1');
}

async function dualSign(message: Buffer, rsa: DkimTestKey, ed25519: DkimTestKey): Promise<Buffer> {
  const headers = ['From', 'To', 'Subject', 'Date', 'Message-ID'];
  const once = await signWithDkimpy(message, { domain: 'example.org', selector: 'rsa', privateKey: rsa.privateKey, headers });
  return signWithDkimpy(once, { domain: 'example.org', selector: 'ed', privateKey: ed25519.privateKey, headers });
}

function swaks(exim: Exim, from: string, to: string, message: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    // -ndf: no "fixups" (swaks would otherwise append a CRLF); we dot-stuff and terminate ourselves.
    const args = ['--server', exim.host, '--port', String(exim.port), '--from', from, '--to', to, '--no-data-fixup', '--data', '-'];
    const child = spawn('swaks', args, {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(output) : reject(new Error(`swaks exited ${code}:\n${output}`))));
    child.stdin.end(dotStuff(message));
  });
}

describe('dkimpy and Exim', suiteOptions(checkExim(), checkDkimpy(), checkSwaks()), () => {
  let exim: Exim;
  let rsa: DkimTestKey;
  let ed25519: DkimTestKey;

  before(async () => {
    rsa = generateDkimKey('rsa-sha256');
    ed25519 = generateDkimKey('ed25519-sha256');
    exim = await startExim({
      zone: {
        'rsa._domainkey.example.org': { TXT: [rsa.record] },
        'ed._domainkey.example.org': { TXT: [ed25519.record] },
      },
      localDomains: ['example.net'],
      refuse: { nobody: '550 5.1.1 no such user', 'busy@example.net': '451 4.3.0 try later' },
    });
  });
  after(() => exim?.close());

  test('the RSA-2048 key record needs more than one character-string', () => {
    assert.ok(Buffer.byteLength(rsa.record) > 255, `record is ${Buffer.byteLength(rsa.record)} octets`);
  });

  test('dkimpy verifies both signatures of an intact dual-signed message', async () => {
    const signed = await dualSign(MESSAGE, rsa, ed25519);
    const verdict = await verifyWithDkimpy(signed, exim.dns);
    assert.deepEqual(
      verdict.signatures.map(({ domain, selector, algorithm, ok }) => ({ domain, selector, algorithm, ok })),
      [
        { domain: 'example.org', selector: 'ed', algorithm: 'ed25519-sha256', ok: true },
        { domain: 'example.org', selector: 'rsa', algorithm: 'rsa-sha256', ok: true },
      ],
    );
  });

  test('dkimpy reports each signature of a tampered message as failed, with a reason', async () => {
    const verdict = await verifyWithDkimpy(tamper(await dualSign(MESSAGE, rsa, ed25519)), exim.dns);
    assert.equal(verdict.signatures.length, 2);
    for (const signature of verdict.signatures) {
      assert.equal(signature.ok, false);
      assert.match(signature.error ?? '', /body hash mismatch/);
    }
  });

  test('dkimpy reports a missing key', async () => {
    const signed = await signWithDkimpy(MESSAGE, { domain: 'example.org', selector: 'unpublished', privateKey: rsa.privateKey });
    const [signature] = (await verifyWithDkimpy(signed, exim.dns)).signatures;
    assert.equal(signature?.ok, false);
    assert.ok(signature?.error, 'an error is given');
  });

  test('Exim (message sent by swaks) passes both signatures and delivers the bytes unchanged', async () => {
    await exim.clearMessages();
    const signed = await dualSign(MESSAGE, rsa, ed25519);
    await swaks(exim, 'alice@example.org', 'bob@example.net', signed);
    const [delivered] = await exim.waitForMessages(1);
    assert.ok(delivered);
    const results = eximDkimResults(delivered).sort((a, b) => a.selector.localeCompare(b.selector));
    assert.deepEqual(results, [
      { domain: 'example.org', selector: 'ed', algorithm: 'ed25519-sha256', bits: '256', status: 'pass', reason: '' },
      { domain: 'example.org', selector: 'rsa', algorithm: 'rsa-sha256', bits: '2048', status: 'pass', reason: '' },
    ]);
    assert.equal(withoutEximFields(delivered).toString('latin1'), signed.toString('latin1'));
    assert.ok(exim.dns.queries.some((query) => query.name === 'rsa._domainkey.example.org' && query.type === 'TXT'));
    assert.match(await exim.mainlog(), /X-Exim-DKIM: d=example\.org s=rsa a=rsa-sha256 b=2048 status=pass reason=/);
  });

  test('Exim fails both signatures of a tampered message', async () => {
    await exim.clearMessages();
    const tampered = tamper(await dualSign(MESSAGE, rsa, ed25519));
    const transaction = await sendMail(exim.port, { from: 'alice@example.org', to: ['bob@example.net'], data: tampered }, { host: exim.host });
    assert.match(transaction.data ?? '', /^250/);
    const [delivered] = await exim.waitForMessages(1);
    assert.ok(delivered);
    const results = eximDkimResults(delivered);
    assert.equal(results.length, 2);
    for (const result of results) assert.deepEqual([result.status, result.reason], ['fail', 'bodyhash_mismatch']);
    const [delivery] = await exim.deliveries();
    assert.deepEqual([delivery?.sender, delivery?.recipient, delivery?.clientAddress, delivery?.helo], [
      'alice@example.org',
      'bob@example.net',
      '127.0.0.1',
      'client.test',
    ]);
  });

  test('Exim refuses recipients at RCPT time with the configured reply; relays nothing', async () => {
    const transaction = await sendMail(
      exim.port,
      { from: 'alice@example.org', to: ['nobody@example.net', 'busy@example.net', 'carol@elsewhere.example', 'bob@example.net'], data: MESSAGE },
      { host: exim.host },
    );
    assert.deepEqual(transaction.rcpt, ['550 5.1.1 no such user', '451 4.3.0 try later', '550 5.7.1 relay not permitted', '250 Accepted']);
    assert.match(transaction.data ?? '', /^250/);
  });

  test('stop() takes Exim down and start() brings it back on the same port', async () => {
    await exim.stop();
    await assert.rejects(SmtpDialog.connect(exim.port, { host: exim.host }), /ECONNREFUSED/);
    await exim.start();
    const dialog = await SmtpDialog.connect(exim.port, { host: exim.host });
    assert.match(dialog.greeting, /^220/);
    await dialog.close();
  });
});

describe('Exim refusing at DATA', suiteOptions(checkExim()), () => {
  let exim: Exim;
  before(async () => {
    exim = await startExim({ localDomains: ['example.net'], refuseData: '554 5.7.1 content rejected' });
  });
  after(() => exim?.close());

  test('the configured reply comes after the message', async () => {
    const transaction = await sendMail(exim.port, { from: 'alice@example.org', to: ['bob@example.net'], data: MESSAGE }, { host: exim.host });
    assert.equal(transaction.data, '554 5.7.1 content rejected');
    assert.deepEqual(await exim.messages(), []);
  });
});

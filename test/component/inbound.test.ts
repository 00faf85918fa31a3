// The mx listener end to end in-process: a real DNS server on loopback publishes SPF, DKIM and
// DMARC records; clients connect from different loopback source addresses (127.0.0.x); a real
// SMTP sink stands in for the MTA. Exact reply bytes are asserted (RFC 7372 codes), and the
// headers sello adds are read back with parsers.

import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { test, type TestContext } from 'node:test';
import { startSello } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { createSignatures } from '../../src/signing/dkim-signature.ts';
import { dnsRecordValue } from '../../src/signing/keys.ts';
import { parseAuthenticationResults, parseReceivedSpf } from '../helpers/header-parsers.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { SmtpDialog, sendMail } from '../helpers/smtp-dialog.ts';
import { makeKeys } from '../helpers/sello.ts';
import { startSink, type Sink } from '../helpers/smtp-sink.ts';

const dkimKey = generateKeyPairSync('rsa', { modulusLength: 2048 });

const ZONE = {
  'pass.example': { TXT: ['v=spf1 ip4:127.0.0.2 -all'] },
  'fail.example': { TXT: ['v=spf1 ip4:127.0.0.99 -all'] },
  'soft.example': { TXT: ['v=spf1 ip4:127.0.0.99 ~all'] },
  'helo.example': { TXT: ['v=spf1 ip4:127.0.0.99 -all'] },
  'broken.example': { TXT: ['v=spf1 ip4:127.0.0.2 foo:bar -all'] },
  'servfail.example': { fault: 'servfail' as const },
  // DKIM + DMARC p=reject for the inbound authentication tests; SPF only softfails, so DMARC
  // rests on the DKIM signature alone.
  'signed.example': { TXT: ['v=spf1 ip4:127.0.0.99 ~all'] },
  's1._domainkey.signed.example': { TXT: [dnsRecordValue(dkimKey.privateKey)] },
  '_dmarc.signed.example': { TXT: ['v=DMARC1; p=reject'] },
};

interface Setup {
  sink: Sink;
  dns: DnsServer;
  port: number;
}

async function setup(t: TestContext, inbound: Record<string, unknown> = {}): Promise<Setup> {
  const dns = await startDnsServer(ZONE as never);
  t.after(() => dns.close());
  const sink = await startSink();
  t.after(() => sink.close());
  const config = parseConfig({
    hostname: 'mx.sello.test',
    listeners: [{ name: 'mx', role: 'mx', listen: '127.0.0.1:0', greetingDelay: 0 }],
    relay: { target: sink.url, starttls: 'never' },
    inbound: { localDomains: ['example.net'], ...inbound },
    dns: { servers: [dns.address], timeout: '500ms' },
  });
  const running = await startSello(config, silentLogger());
  t.after(() => running.close());
  return { sink, dns, port: running.addresses.get('mx')!.port };
}

const message = (from: string, body = 'Hello.\r\n') =>
  Buffer.from(`From: ${from}\r\nTo: bob@example.net\r\nSubject: inbound\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <in@x>\r\n\r\n${body}`);

async function signed(body = 'Hello.\r\n'): Promise<Buffer> {
  const header = Buffer.from('From: Sam <sam@signed.example>\r\nTo: bob@example.net\r\nSubject: signed\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n');
  const signature = await createSignatures(header, Buffer.from(body), [{ domain: 'signed.example', selector: 's1', algorithm: 'rsa', privateKey: dkimKey.privateKey }], {
    signedFields: ['From', 'To', 'Subject', 'Date'],
    oversignedFields: [],
    now: new Date(),
    expiryMs: false,
  });
  return Buffer.concat([Buffer.from(signature), header, Buffer.from(`\r\n${body}`)]);
}

function field(data: Buffer, name: string): string[] {
  const header = data.toString('latin1').split('\r\n\r\n')[0] ?? '';
  return header.split(/\r\n(?![ \t])/).filter((line) => line.toLowerCase().startsWith(`${name.toLowerCase()}:`));
}

test('SPF fail → 550 5.7.23 at RCPT TO with the RFC 7372 text; nothing relayed', async (t) => {
  const { sink, port } = await setup(t);
  const sent = await sendMail(port, { from: 'alice@fail.example', to: ['bob@example.net'], data: message('alice@fail.example') }, { localAddress: '127.0.0.2' });
  assert.equal(sent.mail, '250 Accepted');
  assert.deepEqual(sent.rcpt, ['550 5.7.23 [SPF] 127.0.0.2 is not allowed to send mail from fail.example']);
  assert.equal(sent.dataCommand, undefined);
  assert.equal(sink.messages.length, 0);
});

test('SPF fail: postmaster@ and abuse@ are still accepted (RFC 5321 §4.5.1), the rest refused', async (t) => {
  const { sink, port } = await setup(t);
  const sent = await sendMail(
    port,
    { from: 'alice@fail.example', to: ['postmaster@example.net', 'bob@example.net', 'ABUSE@example.net'], data: message('alice@fail.example') },
    { localAddress: '127.0.0.2' },
  );
  assert.deepEqual(sent.rcpt.map((reply) => reply.slice(0, 10)), ['250 Accepte', '550 5.7.23', '250 Accepte'].map((r) => r.slice(0, 10)));
  assert.match(sent.data ?? '', /^250 2\.0\.0 /);
  assert.deepEqual(sink.messages[0]?.rcptTo, ['postmaster@example.net', 'ABUSE@example.net']);
  assert.equal(parseReceivedSpf(field(sink.messages[0]!.data, 'Received-SPF')[0]!).result, 'fail');
});

test('SPF softfail → relayed with Received-SPF: softfail and spf=softfail in Authentication-Results', async (t) => {
  const { sink, port } = await setup(t);
  const sent = await sendMail(port, { from: 'alice@soft.example', to: ['bob@example.net'], data: message('alice@soft.example') }, { localAddress: '127.0.0.2' });
  assert.match(sent.data ?? '', /^250 2\.0\.0 /);
  const delivered = sink.messages[0]!.data;
  const receivedSpf = parseReceivedSpf(field(delivered, 'Received-SPF')[0]!);
  assert.equal(receivedSpf.result, 'softfail');
  assert.equal(receivedSpf.pairs['client-ip'], '127.0.0.2');
  assert.equal(receivedSpf.pairs['envelope-from'], 'alice@soft.example');
  assert.equal(receivedSpf.pairs.identity, 'mailfrom');
  assert.equal(receivedSpf.pairs.receiver, 'mx.sello.test');
  const results = parseAuthenticationResults(field(delivered, 'Authentication-Results')[0]!);
  assert.equal(results.authservId, 'mx.sello.test');
  assert.deepEqual(results.resinfos.find((r) => r.method === 'spf'), {
    method: 'spf',
    result: 'softfail',
    properties: { 'smtp.mailfrom': 'alice@soft.example' },
  });
  assert.ok(delivered.toString().endsWith(message('alice@soft.example').toString()), 'the message itself is unchanged');
});

test('SPF pass → Received-SPF: pass; the original message follows sello\'s fields unchanged', async (t) => {
  const { sink, port } = await setup(t);
  await sendMail(port, { from: 'alice@pass.example', to: ['bob@example.net'], data: message('alice@pass.example') }, { localAddress: '127.0.0.2' });
  const delivered = sink.messages[0]!.data;
  assert.equal(parseReceivedSpf(field(delivered, 'Received-SPF')[0]!).result, 'pass');
  const results = parseAuthenticationResults(field(delivered, 'Authentication-Results')[0]!);
  assert.deepEqual(results.resinfos.map((r) => `${r.method}=${r.result}`), ['spf=pass', 'dkim=none', 'dmarc=none', 'arc=none']);
});

test('DNS SERVFAIL → 451 4.7.24 temperror; DNS server not answering → 451 4.7.24 within the time budget', async (t) => {
  const { port, dns } = await setup(t, { spf: { timeBudget: '3s' } });
  let sent = await sendMail(port, { from: 'alice@servfail.example', to: ['bob@example.net'], data: message('alice@servfail.example') }, { localAddress: '127.0.0.2' });
  assert.deepEqual(sent.rcpt, ['451 4.7.24 [SPF] temporary DNS failure while checking servfail.example, try again later']);
  dns.setMode('drop');
  const started = performance.now();
  sent = await sendMail(port, { from: 'alice@pass.example', to: ['bob@example.net'], data: message('alice@pass.example') }, { localAddress: '127.0.0.2' });
  const elapsed = performance.now() - started;
  assert.deepEqual(sent.rcpt, ['451 4.7.24 [SPF] temporary DNS failure while checking pass.example, try again later']);
  assert.ok(elapsed < 3_500, `answered after ${Math.round(elapsed)} ms; budget 3 s`);
});

test('permerror is tagged by default, and refused with 550 5.7.24 when the policy says reject', async (t) => {
  const tagged = await setup(t);
  let sent = await sendMail(tagged.port, { from: 'alice@broken.example', to: ['bob@example.net'], data: message('alice@broken.example') }, { localAddress: '127.0.0.2' });
  assert.match(sent.data ?? '', /^250 /);
  assert.equal(parseReceivedSpf(field(tagged.sink.messages[0]!.data, 'Received-SPF')[0]!).result, 'permerror');
  const strict = await setup(t, { spf: { policy: { permerror: 'reject' } } });
  sent = await sendMail(strict.port, { from: 'alice@broken.example', to: ['bob@example.net'], data: message('alice@broken.example') }, { localAddress: '127.0.0.2' });
  assert.deepEqual(sent.rcpt, ['550 5.7.24 [SPF] broken.example has an invalid SPF record']);
});

test('the null sender is judged on postmaster@<HELO> (RFC 7208 §2.4)', async (t) => {
  const { sink, port } = await setup(t);
  let sent = await sendMail(port, { from: '', to: ['bob@example.net'], data: message('mailer-daemon@helo.example') }, { localAddress: '127.0.0.2', helo: 'helo.example' });
  assert.deepEqual(sent.rcpt, ['550 5.7.23 [SPF] 127.0.0.2 is not allowed to send mail from helo.example']);
  sent = await sendMail(port, { from: '', to: ['bob@example.net'], data: message('mailer-daemon@pass.example') }, { localAddress: '127.0.0.2', helo: 'pass.example' });
  assert.match(sent.data ?? '', /^250 /);
  const receivedSpf = parseReceivedSpf(field(sink.messages[0]!.data, 'Received-SPF')[0]!);
  assert.equal(receivedSpf.result, 'pass');
  // envelope-from is the envelope as given (empty); the comment names the mailbox checked.
  assert.equal(receivedSpf.pairs['envelope-from'], '');
  assert.match(receivedSpf.comment, /postmaster@pass\.example/);
});

test('no open relay: a recipient outside localDomains → 550 5.7.1, even with SPF pass', async (t) => {
  const { sink, port } = await setup(t);
  const sent = await sendMail(port, { from: 'alice@pass.example', to: ['someone@elsewhere.example'], data: message('alice@pass.example') }, { localAddress: '127.0.0.2' });
  assert.deepEqual(sent.rcpt, ['550 5.7.1 Relaying denied']);
  assert.equal(sink.messages.length, 0);
});

test('an mx listener offers no AUTH and waits 100 ms before greeting by default', async (t) => {
  const dns = await startDnsServer({});
  t.after(() => dns.close());
  const sink = await startSink();
  t.after(() => sink.close());
  const running = await startSello(
    parseConfig({
      listeners: [{ name: 'mx', role: 'mx', listen: '127.0.0.1:0' }],
      relay: { target: sink.url, starttls: 'never' },
      inbound: { localDomains: ['example.net'] },
      dns: { servers: [dns.address] },
    }),
    silentLogger(),
  );
  t.after(() => running.close());
  const started = performance.now();
  const dialog = await SmtpDialog.connect(running.addresses.get('mx')!.port);
  assert.ok(performance.now() - started >= 95, 'early-talker pause kept on mx');
  assert.doesNotMatch(await dialog.command('EHLO client.test'), /AUTH/);
  await dialog.close();
});

test('DKIM + DMARC p=reject: intact → dkim=pass dmarc=pass; altered body → dkim=fail dmarc=fail; enforcement → 550 5.7.1', async (t) => {
  const tagging = await setup(t);
  await sendMail(tagging.port, { from: 'sam@signed.example', to: ['bob@example.net'], data: await signed() }, { localAddress: '127.0.0.2' });
  const tampered = Buffer.from((await signed()).toString('latin1').replace('Hello.', 'Hello, changed.'), 'latin1');
  await sendMail(tagging.port, { from: 'sam@signed.example', to: ['bob@example.net'], data: tampered }, { localAddress: '127.0.0.2' });
  const [intact, altered] = tagging.sink.messages.map((m) => parseAuthenticationResults(field(m.data, 'Authentication-Results')[0]!));
  const summary = (r: ReturnType<typeof parseAuthenticationResults>) => r.resinfos.map((x) => `${x.method}=${x.result}`);
  assert.deepEqual(summary(intact!), ['spf=softfail', 'dkim=pass', 'dmarc=pass', 'arc=none']);
  const dkim = intact!.resinfos.find((r) => r.method === 'dkim')!;
  assert.equal(dkim.properties['header.i'], '@signed.example');
  assert.equal(dkim.properties['header.s'], 's1');
  assert.deepEqual(summary(altered!), ['spf=softfail', 'dkim=fail', 'dmarc=fail', 'arc=none']);

  const enforcing = await setup(t, { dmarc: { enforce: true } });
  const refused = await sendMail(enforcing.port, { from: 'sam@signed.example', to: ['bob@example.net'], data: tampered }, { localAddress: '127.0.0.2' });
  assert.equal(refused.data, '550 5.7.1 Message rejected by the DMARC policy of signed.example');
  assert.equal(enforcing.sink.messages.length, 0);
  const accepted = await sendMail(enforcing.port, { from: 'sam@signed.example', to: ['bob@example.net'], data: await signed() }, { localAddress: '127.0.0.2' });
  assert.match(accepted.data ?? '', /^250 /);
});

test('incoming Authentication-Results claiming our authserv-id are removed; others are kept (RFC 8601 §5)', async (t) => {
  const { sink, port } = await setup(t);
  const forged = Buffer.concat([
    Buffer.from('Authentication-Results: mx.sello.test; spf=pass smtp.mailfrom=x@pass.example\r\nAuthentication-Results: (c) "MX.Sello.Test"; dkim=pass\r\nAuthentication-Results: other.example; spf=pass\r\n'),
    message('alice@soft.example'),
  ]);
  await sendMail(port, { from: 'alice@soft.example', to: ['bob@example.net'], data: forged }, { localAddress: '127.0.0.2' });
  const fields = field(sink.messages[0]!.data, 'Authentication-Results').map((f) => parseAuthenticationResults(f));
  assert.deepEqual(fields.map((f) => f.authservId), ['mx.sello.test', 'other.example']);
  assert.equal(fields[0]!.resinfos[0]!.result, 'softfail');
});

test('hostile HELO and MAIL FROM still give Received-SPF and Authentication-Results that parse back', async (t) => {
  const { sink, port } = await setup(t);
  const helos = ['evil"host;x=(y)', `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}`, 'h\\o(st', 'hëlo.example'];
  // Quoted local parts with specials, "=" and ";" unquoted, 8-bit: what smtp-server lets through.
  const senders = ['"we;ird"@soft.example', '"x(y)"@soft.example', '"q\\"t"@soft.example', 'a=b;c@soft.example', 'ünï@soft.example'];
  for (const helo of helos) {
    for (const from of senders) {
      const sent = await sendMail(port, { from, to: ['bob@example.net'], data: message('x@soft.example') }, { localAddress: '127.0.0.2', helo });
      assert.match(sent.data ?? '', /^250 /, `${helo} / ${from}: ${JSON.stringify(sent)}`);
    }
  }
  assert.equal(sink.messages.length, helos.length * senders.length);
  let index = 0;
  for (const helo of helos) {
    for (const from of senders) {
      const delivered = sink.messages[index++]!.data;
      const receivedSpf = parseReceivedSpf(field(delivered, 'Received-SPF')[0]!);
      assert.equal(receivedSpf.result, 'softfail');
      // Client values come back exactly, except that 8-bit characters are replaced (no 8-bit garbage).
      const sanitised = (value: string) => value.replace(/[^\x20-\x7e]/g, '?');
      assert.equal(receivedSpf.pairs.helo, sanitised(helo));
      assert.equal(receivedSpf.pairs['envelope-from'], sanitised(from));
      const results = parseAuthenticationResults(field(delivered, 'Authentication-Results')[0]!);
      assert.equal(results.resinfos[0]!.method, 'spf');
      assert.ok(results.resinfos[0]!.properties['smtp.mailfrom'], 'smtp.mailfrom present');
      for (const line of delivered.toString('latin1').split('\r\n')) assert.ok(line.length <= 998);
    }
  }
});

async function verifyingFilter(t: TestContext, extra: Record<string, unknown> = {}, keys = false) {
  const dns = await startDnsServer(ZONE as never);
  t.after(() => dns.close());
  const sink = await startSink();
  t.after(() => sink.close());
  const { keysDir } = await makeKeys(keys ? [{ domain: 'pass.example', selector: 'k1', algorithm: 'ed25519' }] : []);
  const config = parseConfig({
    hostname: 'mx.sello.test',
    listeners: [{ name: 'filter', role: 'filter', listen: '127.0.0.1:0', verify: true, xforwardPeers: ['127.0.0.1'], ...extra }],
    relay: { target: sink.url, starttls: 'never' },
    dns: { servers: [dns.address], timeout: '500ms' },
    signing: { keysDir, domains: keys ? { 'pass.example': 'k1' } : {} },
  });
  const running = await startSello(config, silentLogger());
  t.after(() => running.close());
  return { sink, port: running.addresses.get('filter')!.port };
}

/** The MTA's side of a before-queue filter: XFORWARD with the real client, then the transaction. */
async function viaFilter(port: number, client: { addr?: string; helo: string }, from: string, data: Buffer): Promise<{ rcpt: string; data?: string }> {
  const dialog = await SmtpDialog.connect(port);
  assert.match(await dialog.command('EHLO postfix.test'), /XFORWARD/);
  if (client.addr) assert.equal(await dialog.command(`XFORWARD ADDR=${client.addr} HELO=${client.helo} PROTO=ESMTP`), '250 OK');
  await dialog.command(`MAIL FROM:<${from}>`);
  const rcpt = await dialog.command('RCPT TO:<bob@example.net>');
  const result = rcpt.startsWith('250') ? { rcpt, data: await dialog.sendData(data) } : { rcpt };
  await dialog.close();
  return result;
}

test('a filter with verify: true checks SPF on the client the MTA forwards (XFORWARD) and tags like mx', async (t) => {
  const { sink, port } = await verifyingFilter(t);
  const refused = await viaFilter(port, { addr: '127.0.0.2', helo: 'client.test' }, 'alice@fail.example', message('alice@fail.example'));
  assert.equal(refused.rcpt, '550 5.7.23 [SPF] 127.0.0.2 is not allowed to send mail from fail.example');
  const accepted = await viaFilter(port, { addr: '127.0.0.2', helo: 'client.test' }, 'alice@pass.example', message('alice@pass.example'));
  assert.match(accepted.data ?? '', /^250 /);
  const receivedSpf = parseReceivedSpf(field(sink.messages[0]!.data, 'Received-SPF')[0]!);
  assert.equal(receivedSpf.result, 'pass');
  assert.equal(receivedSpf.pairs['client-ip'], '127.0.0.2', 'the forwarded client, not the MTA');
  assert.equal(receivedSpf.pairs.helo, 'client.test');
  // Without a forwarded client there is nothing to check SPF for; DKIM and DMARC still run.
  await viaFilter(port, { helo: 'client.test' }, 'alice@fail.example', message('alice@fail.example'));
  const unforwarded = sink.messages[1]!.data;
  assert.deepEqual(field(unforwarded, 'Received-SPF'), []);
  assert.deepEqual(parseAuthenticationResults(field(unforwarded, 'Authentication-Results')[0]!).resinfos.map((r) => r.method), ['dkim', 'dmarc', 'arc']);
});

test('a filter that verifies and signs signs last: the signature covers Authentication-Results', async (t) => {
  const { sink, port } = await verifyingFilter(t, { sign: true }, true);
  const accepted = await viaFilter(port, { addr: '127.0.0.2', helo: 'client.test' }, 'alice@pass.example', message('alice@pass.example'));
  assert.match(accepted.data ?? '', /^250 /);
  const delivered = sink.messages[0]!.data.toString('latin1');
  const fields = delivered.split('\r\n\r\n')[0]!.split(/\r\n(?![ \t])/).map((line) => line.slice(0, line.indexOf(':')));
  assert.deepEqual(fields.slice(0, 3), ['DKIM-Signature', 'Authentication-Results', 'Received-SPF']);
});

// The submission and filter listeners end to end in-process: real SMTP in, real SMTP out to a
// sink on loopback, signatures checked with mailauth against the keys' records. Exact reply
// bytes are asserted where clients and admins parse them.

import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { sendMail, SmtpDialog } from '../helpers/smtp-dialog.ts';
import { startSink, type Sink } from '../helpers/smtp-sink.ts';
import { startTestSello, type TestSello } from '../helpers/sello.ts';

const message = (from = 'Alice <alice@example.com>', extra = '') =>
  `From: ${from}\r\nTo: bob@example.net\r\nSubject: hello\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n${extra}\r\nHi Bob.\r\n`;

async function verify(sello: TestSello, data: Buffer) {
  const result = await dkimVerify(data, { resolver: sello.resolver as never });
  return result.results.map((entry) => ({ domain: entry.signingDomain, selector: entry.selector, result: entry.status?.result }));
}

async function setup(t: import('node:test').TestContext, options: { sink?: Parameters<typeof startSink>[0]; config?: Record<string, unknown> } = {}) {
  const sink = await startSink(options.sink);
  t.after(() => sink.close());
  const sello = await startTestSello(t, {
    keys: [
      { domain: 'example.com', selector: 'rsa1', algorithm: 'rsa' },
      { domain: 'example.com', selector: 'ed1', algorithm: 'ed25519' },
    ],
    config: {
      listeners: [
        { name: 'submission', role: 'submission', listen: '127.0.0.1:0', tls: { mode: 'starttls' }, trustedNetworks: ['127.0.0.1/32'] },
        { name: 'closed', role: 'submission', listen: '127.0.0.1:0', tls: { mode: 'starttls' } },
        { name: 'filter', role: 'filter', listen: '127.0.0.1:0' },
      ],
      relay: { target: sink.url, starttls: 'never' },
      ...options.config,
    },
  });
  return { sink, sello };
}

/** One transaction from alice@example.com; `.data` is the reply after the message. */
const submit = (port: number, data: string | Buffer, to = ['bob@example.net']) => sendMail(port, { from: 'alice@example.com', to, data });

test('a trusted client submits; the sink gets the message dual-signed (RSA + Ed25519), both verify', async (t) => {
  const { sink, sello } = await setup(t);
  const sent = await submit(sello.port('submission'), message());
  assert.equal(sent.data, '250 2.0.0 OK: queued as SINK1');
  assert.equal(sink.messages.length, 1);
  const delivered = sink.messages[0]!;
  assert.deepEqual(delivered.rcptTo, ['bob@example.net']);
  assert.ok(delivered.data.toString().endsWith(message()), 'the original bytes follow the signatures unchanged');
  assert.deepEqual(await verify(sello, delivered.data), [
    { domain: 'example.com', selector: 'rsa1', result: 'pass' },
    { domain: 'example.com', selector: 'ed1', result: 'pass' },
  ]);
  const signature = delivered.data.toString().split('\r\n\r\n')[0]!;
  assert.match(signature, /c=relaxed\/relaxed/);
  assert.match(signature, /x=\d+/);
  assert.doesNotMatch(signature, /[; ]l=/);
});

test('oversigning: a Subject or From added after signing breaks both signatures', async (t) => {
  const { sink, sello } = await setup(t);
  await submit(sello.port('submission'), message());
  const signed = sink.messages[0]!.data.toString('latin1');
  for (const added of ['Subject: changed\r\n', 'From: mallory@example.org\r\n', 'Reply-To: mallory@example.org\r\n']) {
    const tampered = Buffer.from(signed.replace('\r\n\r\nHi Bob.', `\r\n${added}\r\nHi Bob.`), 'latin1');
    const results = await verify(sello, tampered);
    assert.deepEqual(results.map((r) => r.result), ['fail', 'fail'], `adding ${added.trim()} must break the signatures`);
  }
});

test('in step: a recipient the MTA refuses is refused at RCPT TO with the MTA\'s own code', async (t) => {
  const { sink, sello } = await setup(t, { sink: { refuseRecipients: { 'nobody@example.net': '550 5.1.1 <nobody@example.net>: Recipient address rejected' } } });
  const dialog = await SmtpDialog.connect(sello.port('submission'));
  await dialog.command('EHLO client.test');
  assert.equal(await dialog.command('MAIL FROM:<alice@example.com>'), '250 Accepted');
  assert.equal(await dialog.command('RCPT TO:<nobody@example.net>'), '550 5.1.1 <nobody@example.net>: Recipient address rejected');
  assert.equal(await dialog.command('RCPT TO:<bob@example.net>'), '250 Accepted');
  assert.equal(await dialog.sendData(message()), '250 2.0.0 OK: queued as SINK1');
  await dialog.close();
  assert.deepEqual(sink.messages[0]?.rcptTo, ['bob@example.net']);
});

test('the MTA unreachable: 451 4.4.1 at MAIL FROM, nothing accepted', async (t) => {
  const { sello } = await setup(t, { config: { relay: { target: 'smtp://127.0.0.1:1', starttls: 'never' } } });
  const dialog = await SmtpDialog.connect(sello.port('submission'));
  await dialog.command('EHLO client.test');
  assert.equal(await dialog.command('MAIL FROM:<alice@example.com>'), '451 4.4.1 Downstream mail server unreachable, try again later');
  await dialog.close();
});

test('the MTA refusing the data: its code is passed on, never 250', async (t) => {
  const { sello } = await setup(t, { sink: { dataReply: '452 4.3.1 Insufficient system storage' } });
  const sent = await submit(sello.port('submission'), message());
  assert.equal(sent.data, '452 4.3.1 Insufficient system storage');
});

test('no signing oracle: an untrusted client without AUTH is refused at MAIL FROM and nothing is relayed', async (t) => {
  const { sink, sello } = await setup(t);
  const dialog = await SmtpDialog.connect(sello.port('closed'));
  await dialog.command('EHLO client.test');
  assert.equal(await dialog.command('MAIL FROM:<alice@example.com>'), '530 5.7.0 Authentication required');
  assert.match(await dialog.command('RCPT TO:<bob@example.net>'), /^503 /);
  await dialog.close();
  assert.equal(sink.messages.length, 0);
});

test('AUTH is passed through to the MTA: wrong password 535 5.7.8, right one signs and relays as that user', async (t) => {
  const { sink, sello } = await setup(t, { sink: { auth: { username: 'alice', password: 's3cret' } } });
  const dialog = await SmtpDialog.connect(sello.port('closed'));
  assert.match(await dialog.command('EHLO client.test'), /250-AUTH PLAIN LOGIN/);
  const plain = (user: string, pass: string) => Buffer.from(`\0${user}\0${pass}`).toString('base64');
  assert.equal(await dialog.command(`AUTH PLAIN ${plain('alice', 'wrong')}`), '535 5.7.8 Authentication credentials invalid');
  assert.match(await dialog.command(`AUTH PLAIN ${plain('alice', 's3cret')}`), /^235 /);
  assert.equal(await dialog.command('MAIL FROM:<alice@example.com>'), '250 Accepted');
  assert.equal(await dialog.command('RCPT TO:<bob@example.net>'), '250 Accepted');
  assert.equal(await dialog.sendData(message()), '250 2.0.0 OK: queued as SINK1');
  await dialog.close();
  assert.equal(sink.messages[0]?.user, 'alice');
  assert.deepEqual((await verify(sello, sink.messages[0]!.data)).map((r) => r.result), ['pass', 'pass']);
});

test('STARTTLS is offered and AUTH is advertised after it', async (t) => {
  const { sello } = await setup(t, { sink: { auth: { username: 'alice', password: 's3cret' } } });
  const dialog = await SmtpDialog.connect(sello.port('closed'));
  assert.match(await dialog.command('EHLO client.test'), /250-STARTTLS/);
  await dialog.startTls();
  const ehlo = await dialog.command('EHLO client.test');
  assert.doesNotMatch(ehlo, /STARTTLS/);
  assert.match(ehlo, /AUTH PLAIN LOGIN/);
  await dialog.close();
});

test('From rules on submission: none or several → 550 5.6.0 and the downstream transaction is aborted', async (t) => {
  const { sink, sello } = await setup(t);
  const noFrom = 'To: bob@example.net\r\nSubject: x\r\n\r\nbody\r\n';
  const twoFields = message('alice@example.com', 'From: eve@example.com\r\n');
  const twoAddresses = message('alice@example.com, eve@example.com');
  const expected = {
    [noFrom]: '550 5.6.0 Message refused: it has no From header field (RFC 5322 section 3.6)',
    [twoFields]: '550 5.6.0 Message refused: it must have exactly one From header field with exactly one address (RFC 5322 section 3.6)',
    [twoAddresses]: '550 5.6.0 Message refused: it must have exactly one From header field with exactly one address (RFC 5322 section 3.6)',
  };
  for (const [data, reply] of Object.entries(expected)) {
    const sent = await submit(sello.port('submission'), data);
    assert.equal(sent.data, reply);
  }
  assert.equal(sink.messages.length, 0, 'nothing was relayed');
});

test('a domain not in the signing table is relayed unsigned', async (t) => {
  const { sink, sello } = await setup(t);
  const sent = await submit(sello.port('submission'), message('carol@example.org'));
  assert.equal(sent.data, '250 2.0.0 OK: queued as SINK1');
  assert.equal(sink.messages[0]?.data.toString(), message('carol@example.org'));
});

test('bare LF is normalised to CRLF before signing (bytes signed = bytes relayed); reject mode refuses it', async (t) => {
  const { sink, sello } = await setup(t);
  const bare = message().replace(/\r\n/g, '\n').replace('Hi Bob.\n', 'Hi Bob.\n.\nstill body\n');
  const dialog = await SmtpDialog.connect(sello.port('submission'));
  await dialog.command('EHLO client.test');
  await dialog.command('MAIL FROM:<alice@example.com>');
  await dialog.command('RCPT TO:<bob@example.net>');
  assert.equal(await dialog.command('DATA'), '354 End data with <CR><LF>.<CR><LF>');
  // Sent raw: the bare-LF lines (including a lone "." between LFs, the smuggling shape).
  dialog.write(Buffer.from(`${bare}\r\n.\r\n`));
  assert.equal(await dialog.readReply(), '250 2.0.0 OK: queued as SINK1');
  await dialog.close();
  const delivered = sink.messages[0]!.data.toString('latin1');
  assert.ok(!/[^\r]\n/.test(delivered) && !/\r[^\n]/.test(delivered), 'only CRLF line endings downstream');
  assert.match(delivered, /Hi Bob\.\r\n\.\r\nstill body\r\n/, 'the lone dot stayed inside the message');
  assert.deepEqual((await verify(sello, sink.messages[0]!.data)).map((r) => r.result), ['pass', 'pass']);

  const strict = await setup(t, { config: { data: { bareLineEndings: 'reject' } } });
  const sent = await submit(strict.sello.port('submission'), Buffer.from(message().replace('Hi Bob.\r\n', 'Hi Bob.\n')));
  assert.equal(sent.data, '550 5.6.0 Message refused: bare CR or LF line ending; lines must end in CRLF (RFC 5322 section 2.3)');
  assert.equal(strict.sink.messages.length, 0);
});

test('message over maxMessageSize → 552 5.3.4, nothing relayed', async (t) => {
  const { sink, sello } = await setup(t, { config: { limits: { maxMessageSize: 2048 } } });
  const sent = await submit(sello.port('submission'), message('alice@example.com', `X-Pad: ${'x'.repeat(4000)}\r\n`));
  assert.equal(sent.data, '552 5.3.4 Message size exceeds fixed maximum message size');
  assert.equal(sink.messages.length, 0);
});

test('too many recipients → 452 4.5.3 (RFC 5321 §4.5.3.1.10)', async (t) => {
  const { sello } = await setup(t, { config: { limits: { maxRecipients: 2 } } });
  const sent = await submit(sello.port('submission'), message(), ['a@example.net', 'b@example.net', 'c@example.net']);
  assert.deepEqual(sent.rcpt, ['250 Accepted', '250 Accepted', '452 4.5.3 Too many recipients']);
  assert.equal(sent.data, '250 2.0.0 OK: queued as SINK1');
});

test('ESMTP parameters are kept downstream: SIZE, BODY=8BITMIME, SMTPUTF8, DSN (RET, ENVID, NOTIFY, ORCPT)', async (t) => {
  const { sink, sello } = await setup(t);
  const dialog = await SmtpDialog.connect(sello.port('submission'));
  assert.match(await dialog.command('EHLO client.test'), /\r\n250[- ]DSN\r\n/);
  assert.equal(await dialog.command('MAIL FROM:<alice@example.com> SIZE=300 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=abc+2Bdef'), '250 Accepted');
  assert.equal(await dialog.command('RCPT TO:<bob@example.net> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;bob@example.net'), '250 Accepted');
  await dialog.sendData(Buffer.from(message().replace('Hi Bob.', 'Grüße, Bob.'), 'utf8'));
  await dialog.close();
  const parameters = sink.messages[0]!.mailParameters;
  assert.equal(parameters.BODY, '8BITMIME');
  assert.equal(parameters.SMTPUTF8, true);
  assert.match(String(parameters.SIZE), /^\d+$/);
  assert.equal(parameters.RET, 'HDRS');
  // xtext (RFC 3461 §4): sent as abc+2Bdef, decoded by the sink; raw forwarding would decode +de as 0xDE.
  assert.equal(parameters.ENVID, 'abc+def');
  assert.deepEqual(sink.messages[0]!.rcptParameters, [{ NOTIFY: 'SUCCESS,DELAY', ORCPT: 'rfc822;bob@example.net' }]);
  assert.deepEqual((await verify(sello, sink.messages[0]!.data)).map((r) => r.result), ['pass', 'pass']);
});

test('the filter listener signs for the loopback MTA and greets at once (no 100 ms early-talker pause)', async (t) => {
  const { sink, sello } = await setup(t);
  // The fastest of five: a loaded machine can only add time, never take the pause away.
  const elapsed: number[] = [];
  for (let attempt = 0; attempt < 5; attempt++) {
    const started = performance.now();
    const dialog = await SmtpDialog.connect(sello.port('filter'));
    elapsed.push(performance.now() - started);
    assert.match(dialog.greeting, /^220 sello\.test ESMTP sello/);
    await dialog.close();
  }
  const fastest = Math.min(...elapsed);
  assert.ok(fastest < 90, `fastest greeting took ${fastest.toFixed(1)} ms; smtp-server's default pause is 100 ms`);
  const sent = await submit(sello.port('filter'), message());
  assert.equal(sent.data, '250 2.0.0 OK: queued as SINK1');
  assert.deepEqual((await verify(sello, sink.messages[0]!.data)).map((r) => r.result), ['pass', 'pass']);
});

test('a client that pipelines QUIT after the final dot and half-closes (as Exim does) still gets the 250 and the 221', async (t) => {
  const { sink, sello } = await setup(t, { sink: { dataDelayMs: 150 } });
  const socket = net.connect({ port: sello.port('filter'), host: '127.0.0.1', allowHalfOpen: true });
  let received = '';
  socket.setEncoding('latin1');
  socket.on('data', (chunk: string) => (received += chunk));
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  socket.write('EHLO exim.test\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n');
  while (!received.includes('354 ')) await new Promise((resolve) => setTimeout(resolve, 5));
  socket.end(`${message()}.\r\nQUIT\r\n`);
  await closed;
  assert.match(received, /\r\n250 2\.0\.0 OK: queued as SINK1\r\n221 /);
  assert.equal(sink.messages.length, 1);
});

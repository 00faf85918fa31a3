// Proves the Postfix test harness (test/helpers/postfix.ts) works, independently of sello: Debian's
// postfix unpacked by setup-postfix.sh delivers byte-exact, refuses recipients as told, logs the
// client to its maillog, resolves through the test DNS server, accepts XCLIENT/XFORWARD/PROXY on
// the listeners configured for them, runs an after-queue content_filter, and stops and starts.
// These are the Postfix configurations sello's interop tests build on.
// Must not: import anything from src/ — if this file fails, the harness is broken, not sello.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startPostfix, withoutPostfixFields, type Postfix, type PostfixDelivery } from '../helpers/postfix.ts';
import { sendMail, SmtpDialog } from '../helpers/smtp-dialog.ts';
import { checkPostfix, freePort, suiteOptions } from '../helpers/tools.ts';

const LONG_LINE = 'x'.repeat(3000); // longer than Postfix's line_length_limit (2048): stored in pieces

function message(id: string, extraHeader = ''): Buffer {
  return Buffer.concat([
    Buffer.from(
      [
        'Received: from upstream.example.org by mx.example.org; Mon, 02 Jun 2025 09:59:59 +0000',
        'From: Alice <alice@example.org>',
        'To: Bob <bob@example.net>',
        `Subject: postfix harness ${id}`,
        ...(extraHeader ? [extraHeader] : []),
        '',
        'Hello Bob,',
        '.a line that needs dot-stuffing',
        LONG_LINE,
        '',
      ].join('\r\n'),
      'latin1',
    ),
    Buffer.from('caf\xe9 in latin1\r\n', 'latin1'),
  ]);
}

/** Connects to a PROXY-protocol listener, sends the header, returns the banner, then QUITs. */
function proxiedGreeting(port: number, header: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let text = '';
    socket.setTimeout(5000, () => {
      socket.destroy();
      reject(new Error(`no banner after PROXY header; got ${JSON.stringify(text)}`));
    });
    socket.on('connect', () => socket.write(header));
    socket.on('data', (chunk) => {
      text += chunk.toString('latin1');
      if (/\r\n$/.test(text)) {
        socket.end('QUIT\r\n');
        resolve(text.replace(/\r\n$/, ''));
      }
    });
    socket.on('error', reject);
  });
}

/** A TCP relay standing in for an after-queue filter: bytes both ways, unchanged. */
async function tcpRelay(listenPort: number, targetPort: number): Promise<net.Server> {
  const server = net.createServer((inbound) => {
    const outbound = net.connect({ host: '127.0.0.1', port: targetPort });
    inbound.pipe(outbound).pipe(inbound);
    inbound.on('error', () => outbound.destroy());
    outbound.on('error', () => inbound.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listenPort, '127.0.0.1', () => resolve());
  });
  return server;
}

describe('Postfix harness', suiteOptions(checkPostfix()), () => {
  let postfix: Postfix;
  let filterPort: number;

  /** The deliveries of one queued message, once there are any (other tests' mail may still arrive). */
  const deliveredAs = async (queueId: string | undefined): Promise<PostfixDelivery[]> => {
    assert.ok(queueId, 'a queue id');
    let found: PostfixDelivery[] = [];
    await waitFor(async () => (found = (await postfix.deliveries()).filter((delivery) => delivery.queueId === queueId)).length > 0);
    return found;
  };

  before(async () => {
    filterPort = await freePort();
    const started = Date.now();
    postfix = await startPostfix({
      localDomains: ['example.net'],
      refuse: { nobody: '550 5.1.1 no such user', 'busy@example.net': '451 4.3.0 try later' },
      zone: {
        '77.2.0.192.in-addr.arpa': { PTR: ['proxied-client.example.org'] },
        'proxied-client.example.org': { A: ['192.0.2.77'] },
      },
      services: {
        // What sello re-injects into: trusts XCLIENT/XFORWARD from loopback, no filter.
        reinject: { options: ['smtpd_authorized_xclient_hosts=127.0.0.0/8', 'smtpd_authorized_xforward_hosts=127.0.0.0/8', 'content_filter='] },
        // Behind a load balancer: the client address comes in the PROXY v1 header.
        proxied: { options: ['smtpd_upstream_proxy_protocol=haproxy'] },
        // After-queue mode: everything accepted here goes to the filter, which sends it back to reinject.
        filtered: { options: ['content_filter=filter:[127.0.0.1]:' + filterPort, 'smtpd_authorized_xclient_hosts=127.0.0.0/8'] },
      },
      masterConfig: ['filter unix - - n - 4 smtp', '  -o smtp_send_xforward_command=yes', '  -o syslog_name=postfix/filter'],
    });
    assert.ok(Date.now() - started < 5000, `started in ${Date.now() - started} ms`);
  });
  after(() => postfix?.close());

  test('a message is delivered byte-exact under the fields Postfix adds; deliveries() has the envelope', async () => {
    await postfix.clearMessages();
    const sent = message('exact');
    const transaction = await sendMail(postfix.port, { from: 'alice@example.org', to: ['bob@example.net', 'carol@example.net'], data: sent });
    assert.match(transaction.greeting, /^220 postfix\.test ESMTP/);
    assert.deepEqual(transaction.rcpt, ['250 2.1.5 Ok', '250 2.1.5 Ok']);
    assert.match(transaction.data ?? '', /^250 2\.0\.0 Ok: queued as \w+$/);
    const queueId = /queued as (\w+)$/.exec(transaction.data ?? '')?.[1];

    const [delivered] = await postfix.waitForMessages(1);
    assert.ok(delivered);
    assert.equal(withoutPostfixFields(delivered).toString('latin1'), sent.toString('latin1'));
    const top = delivered.subarray(0, delivered.length - sent.length).toString('latin1');
    assert.match(
      top,
      new RegExp(
        '^Return-Path: <alice@example\\.org>\\r\\nX-Original-To: (bob|carol)@example\\.net\\r\\nDelivered-To: \\1@example\\.net\\r\\n' +
          `Received: from client\\.test \\(localhost \\[127\\.0\\.0\\.1\\]\\)\\r\\n\\tby postfix\\.test \\(Postfix\\) with ESMTP id ${queueId};\\r\\n\\t[^\\r\\n]+\\r\\n$`,
      ),
    );

    await waitFor(async () => (await postfix.deliveries()).length === 2);
    const deliveries = (await postfix.deliveries()).sort((a, b) => a.recipient.localeCompare(b.recipient));
    assert.deepEqual(
      deliveries.map(({ queueId, sender, recipient, originalRecipient, clientAddress, clientName, helo }) => ({ queueId, sender, recipient, originalRecipient, clientAddress, clientName, helo })),
      ['bob@example.net', 'carol@example.net'].map((recipient) => ({
        queueId,
        sender: 'alice@example.org',
        recipient,
        originalRecipient: recipient,
        clientAddress: '127.0.0.1',
        clientName: 'localhost',
        helo: 'client.test',
      })),
    );
    assert.equal((await postfix.messages()).length, 1, 'one message, two deliveries');
    await postfix.waitForLog(new RegExp(`postfix/smtpd\\[\\d+\\]: ${queueId}: client=localhost\\[127\\.0\\.0\\.1\\]`));
  });

  test('withoutPostfixFields keeps everything below the fields of this Postfix', () => {
    const foreign = Buffer.from('Received: from a by b.example (Postfix) with ESMTP id X;\r\n\tdate\r\nSubject: s\r\n\r\nbody\r\n');
    assert.equal(withoutPostfixFields(foreign).toString(), foreign.toString());
    const delivered = Buffer.from(`Return-Path: <>\r\nDelivered-To: b@example.net\r\nReceived: from h (n [192.0.2.1])\r\n\tby postfix.test (Postfix) with ESMTP id Y;\r\n\tdate\r\n${foreign.toString()}`);
    assert.equal(withoutPostfixFields(delivered).toString(), foreign.toString());
  });

  test('refused recipients get the configured code at RCPT; other domains are not relayed', async () => {
    const transaction = await sendMail(postfix.port, {
      from: 'alice@example.org',
      to: ['nobody@example.net', 'Busy@Example.NET', 'carol@elsewhere.example', 'bob@example.net'],
      data: message('refusals'),
    });
    assert.deepEqual(transaction.rcpt, [
      '550 5.1.1 <nobody@example.net>: Recipient address rejected: no such user',
      '451 4.3.0 <Busy@Example.NET>: Recipient address rejected: try later',
      '554 5.7.1 <carol@elsewhere.example>: Relay access denied',
      '250 2.1.5 Ok',
    ]);
    assert.match(transaction.data ?? '', /^250 /);
    await postfix.waitForLog(/NOQUEUE: reject: RCPT from localhost\[127\.0\.0\.1\]: 550 5\.1\.1 <nobody@example\.net>/);
    assert.deepEqual((await deliveredAs(queueIdOf(transaction.data))).map((delivery) => delivery.recipient), ['bob@example.net']);
  });

  test('XCLIENT from an authorized host sets the client that the maillog and Received show', async () => {
    await postfix.clearMessages();
    const dialog = await SmtpDialog.connect(postfix.ports['reinject'] as number);
    try {
      assert.match(await dialog.command('EHLO sello.test'), /^250-XCLIENT .*\bADDR\b/m);
      assert.match(await dialog.command('XCLIENT ADDR=192.0.2.55 NAME=[UNAVAILABLE]'), /^220 /);
      assert.match(await dialog.command('EHLO client.example'), /^250/);
      assert.equal(await dialog.command('MAIL FROM:<alice@example.org>'), '250 2.1.0 Ok');
      assert.equal(await dialog.command('RCPT TO:<bob@example.net>'), '250 2.1.5 Ok');
      const reply = await dialog.sendData(message('xclient'));
      const queueId = /queued as (\w+)$/.exec(reply)?.[1];
      assert.ok(queueId, reply);
      await postfix.waitForLog(new RegExp(`postfix/reinject/smtpd\\[\\d+\\]: ${queueId}: client=unknown\\[192\\.0\\.2\\.55\\]`));
      const [delivery] = await deliveredAs(queueId);
      assert.deepEqual([delivery?.clientAddress, delivery?.clientName, delivery?.helo], ['192.0.2.55', 'unknown', 'client.example']);
    } finally {
      await dialog.close();
    }
  });

  test('XCLIENT is refused where it is not authorized (the main smtpd)', async () => {
    const dialog = await SmtpDialog.connect(postfix.port);
    try {
      assert.doesNotMatch(await dialog.command('EHLO sello.test'), /XCLIENT/);
      assert.equal(await dialog.command('XCLIENT ADDR=192.0.2.55'), '550 5.7.0 Error: insufficient authorization');
    } finally {
      await dialog.close();
    }
  });

  test('XFORWARD from an authorized host is logged as the original client', async () => {
    const dialog = await SmtpDialog.connect(postfix.ports['reinject'] as number);
    try {
      assert.match(await dialog.command('EHLO sello.test'), /^250-XFORWARD .*\bADDR\b/m);
      assert.equal(await dialog.command('XFORWARD ADDR=192.0.2.66 NAME=[UNAVAILABLE] HELO=orig.example PROTO=ESMTP'), '250 2.0.0 Ok');
      assert.equal(await dialog.command('MAIL FROM:<alice@example.org>'), '250 2.1.0 Ok');
      assert.equal(await dialog.command('RCPT TO:<bob@example.net>'), '250 2.1.5 Ok');
      const queueId = /queued as (\w+)$/.exec(await dialog.sendData(message('xforward')))?.[1];
      assert.ok(queueId);
      await postfix.waitForLog(new RegExp(`${queueId}: client=localhost\\[127\\.0\\.0\\.1\\], orig_client=unknown\\[192\\.0\\.2\\.66\\]`));
      await deliveredAs(queueId);
    } finally {
      await dialog.close();
    }
  });

  test('a PROXY-protocol listener takes the client from the header and resolves it through the test DNS', async () => {
    const greeting = await proxiedGreeting(postfix.ports['proxied'] as number, 'PROXY TCP4 192.0.2.77 127.0.0.1 40000 25\r\n');
    assert.match(greeting, /^220 postfix\.test ESMTP/);
    await postfix.waitForLog(/postfix\/proxied\/smtpd\[\d+\]: connect from proxied-client\.example\.org\[192\.0\.2\.77\]/);
    assert.ok(postfix.dns.queries.some((query) => query.name === '77.2.0.192.in-addr.arpa' && query.type === 'PTR'), 'PTR asked of the test DNS');
  });

  test('after-queue content_filter: deferred while the filter is down, delivered through it with XFORWARD', async () => {
    await postfix.clearMessages();
    const dialog = await SmtpDialog.connect(postfix.ports['filtered'] as number);
    let queueId: string | undefined;
    try {
      await dialog.command('EHLO sello.test');
      assert.match(await dialog.command('XCLIENT ADDR=192.0.2.88 NAME=[UNAVAILABLE]'), /^220 /);
      await dialog.command('EHLO client.example');
      assert.equal(await dialog.command('MAIL FROM:<alice@example.org>'), '250 2.1.0 Ok');
      assert.equal(await dialog.command('RCPT TO:<bob@example.net>'), '250 2.1.5 Ok');
      queueId = /queued as (\w+)$/.exec(await dialog.sendData(message('after-queue')))?.[1];
    } finally {
      await dialog.close();
    }
    assert.ok(queueId);
    await postfix.waitForLog(new RegExp(`${queueId}: .*relay=none.*connect to 127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${filterPort}: Connection refused`));
    assert.deepEqual(await postfix.queued(), [queueId]);
    assert.deepEqual(await postfix.messages(), []);

    const relay = await tcpRelay(filterPort, postfix.ports['reinject'] as number);
    try {
      await postfix.flushQueue();
      const [delivered] = await postfix.waitForMessages(1);
      assert.ok(delivered);
      assert.equal(withoutPostfixFields(delivered).toString('latin1'), message('after-queue').toString('latin1').replace(LONG_LINE, foldedBySmtpClient(LONG_LINE)));
      assert.equal(countReceivedByPostfix(delivered), 2, 'one Received per smtpd hop');
      await postfix.waitForLog(new RegExp(`postfix/reinject/smtpd\\[\\d+\\]: \\w+: client=localhost\\[127\\.0\\.0\\.1\\], orig_queue_id=${queueId}, orig_client=unknown\\[192\\.0\\.2\\.88\\]`));
      await waitFor(async () => (await postfix.queued()).length === 0);
    } finally {
      await new Promise((resolve) => relay.close(resolve));
    }
  });

  test('stop() takes every Postfix process down; start() brings it back on the same ports', async () => {
    const masterPid = Number((await readFile(path.join(postfix.dir, 'queue', 'pid', 'master.pid'), 'latin1')).trim());
    assert.ok(processRuns(masterPid));
    await postfix.stop();
    assert.ok(!processRuns(masterPid), 'master gone');
    for (const port of Object.values(postfix.ports)) await assert.rejects(SmtpDialog.connect(port), /ECONNREFUSED/);
    await postfix.start();
    const dialog = await SmtpDialog.connect(postfix.port);
    assert.match(dialog.greeting, /^220 postfix\.test/);
    await dialog.close();
    await postfix.clearMessages();
    const transaction = await sendMail(postfix.ports['reinject'] as number, { from: 'alice@example.org', to: ['bob@example.net'], data: message('restart') });
    assert.match(transaction.data ?? '', /^250 /);
    await deliveredAs(queueIdOf(transaction.data));
  });

  test('the maillog has no warnings: the generated configuration is clean', async () => {
    const log = await postfix.maillog();
    assert.match(log, /postfix\/master\[\d+\]: daemon started -- version 3\.\d+/);
    assert.deepEqual(log.split('\n').filter((line) => /\b(warning|error|fatal|panic):/.test(line)), []);
  });
});

describe('Postfix harness options', suiteOptions(checkPostfix()), () => {
  test('a mainConfig parameter replaces the harness value without an "overriding" warning', async (t) => {
    const postfix = await startPostfix({ cleanupWith: t, mainConfig: ['smtpd_recipient_restrictions = reject'] });
    const transaction = await sendMail(postfix.port, { from: 'alice@example.org', to: ['bob@example.net'], data: message('options') });
    assert.deepEqual(transaction.rcpt, ['554 5.7.1 <bob@example.net>: Recipient address rejected: Access denied']);
    await postfix.waitForLog(/NOQUEUE: reject: RCPT from localhost\[127\.0\.0\.1\]: 554 5\.7\.1/);
    assert.doesNotMatch(await postfix.maillog(), /overriding earlier entry/);
  });

  test('bad options fail before anything starts', async () => {
    await assert.rejects(startPostfix({ refuse: { bob: 'no such user' } }), /refuse\[bob\] must be/);
    await assert.rejects(startPostfix({ services: { smtpd: {} } }), /bad service name/);
    await assert.rejects(startPostfix({ smtpdOptions: ['not an option'] }), /bad -o option/);
    await assert.rejects(startPostfix({ localDomains: ['bad domain'] }), /bad local domain/);
  });
});

// ---------- small helpers ----------

async function waitFor(condition: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function queueIdOf(reply: string | undefined): string | undefined {
  return /^250 2\.0\.0 Ok: queued as (\w+)$/.exec(reply ?? '')?.[1];
}

function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function countReceivedByPostfix(message: Buffer): number {
  const header = message.subarray(0, message.indexOf('\r\n\r\n')).toString('latin1');
  return (header.match(/^Received: [^\r\n]*\r\n\tby postfix\.test \(Postfix\)/gm) ?? []).length;
}

/**
 * Postfix's smtp client (smtp_line_length_limit = 998) breaks a longer line by inserting CRLF and
 * a space, so that no line it sends, the space included, exceeds 998 octets. Direct delivery keeps
 * the line whole; a filter in after-queue mode sees (and may sign) the broken one.
 */
function foldedBySmtpClient(line: string): string {
  const pieces = [line.slice(0, 998)];
  for (let offset = 998; offset < line.length; offset += 997) pieces.push(line.slice(offset, offset + 997));
  return pieces.join('\r\n ');
}

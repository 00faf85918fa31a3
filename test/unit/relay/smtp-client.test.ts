// SmtpClient against a real SMTP server (smtp-server) on loopback: in-step replies, AUTH
// passthrough, envelope parameters, STARTTLS, LMTP.
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { SMTPServer, type SMTPServerAddress, type SMTPServerOptions } from 'smtp-server';
import { RelayError } from '../../../src/errors.ts';
import { SmtpClient } from '../../../src/relay/smtp-client.ts';
import { clientOptions, selfSignedCertificate } from './fake-mta.ts';

interface Recorded {
  mailFrom: SMTPServerAddress[];
  rcptTo: SMTPServerAddress[];
  messages: Buffer[];
  authMethods: string[];
  secure: boolean[];
}

async function startServer(options: SMTPServerOptions): Promise<{ port: number; recorded: Recorded; close(): Promise<void> }> {
  const recorded: Recorded = { mailFrom: [], rcptTo: [], messages: [], authMethods: [], secure: [] };
  const server = new SMTPServer({
    disableReverseLookup: true,
    authOptional: true,
    allowInsecureAuth: true,
    hideENHANCEDSTATUSCODES: false,
    closeTimeout: 200,
    logger: false,
    onMailFrom(address, session, callback) {
      recorded.mailFrom.push(address);
      recorded.secure.push(session.secure);
      callback();
    },
    onRcptTo(address, _session, callback) {
      recorded.rcptTo.push(address);
      if (address.address.startsWith('unknown@')) {
        callback(Object.assign(new Error(`<${address.address}>: Recipient unknown`), { responseCode: 550 }));
      } else callback();
    },
    onData(stream, _session, callback) {
      const parts: Buffer[] = [];
      stream.on('data', (part: Buffer) => parts.push(part));
      stream.on('end', () => {
        recorded.messages.push(Buffer.concat(parts));
        callback(null, 'Ok: queued as 4Xb2Kq1z0Mz9');
      });
    },
    ...options,
  });
  server.on('error', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.server.address() as AddressInfo;
  return { port, recorded, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

test('in step: per-RCPT replies with the server own codes, DATA reply with queue id', async () => {
  const server = await startServer({});
  try {
    const client = await SmtpClient.open(clientOptions(server.port));
    assert.deepEqual(await client.mailFrom('sender@example.com', {}), { code: 250, enhanced: '2.1.0', text: 'Accepted' });
    assert.deepEqual(await client.rcptTo('known@example.com', {}), { code: 250, enhanced: '2.1.5', text: 'Accepted' });
    assert.deepEqual(await client.rcptTo('unknown@example.com', {}), {
      code: 550,
      enhanced: '5.1.1',
      text: '<unknown@example.com>: Recipient unknown',
    });
    const message = 'From: a@example.com\r\nSubject: hi\r\n\r\n.dot line\r\nbody\r\n';
    const answer = await client.data([Buffer.from(message)]);
    assert.equal(answer.code, 250);
    assert.equal(answer.queueId, '4Xb2Kq1z0Mz9');
    assert.equal(server.recorded.messages[0]?.toString(), message);
    assert.deepEqual(
      server.recorded.rcptTo.map((address) => address.address),
      ['known@example.com', 'unknown@example.com'],
    );
    // A second transaction on the same session after RSET.
    await client.reset();
    await client.mailFrom('', {});
    await client.rcptTo('known@example.com', {});
    assert.equal((await client.data([Buffer.from('Subject: bounce\r\n\r\nx\r\n')])).code, 250);
    assert.equal(server.recorded.mailFrom[1]?.address, '');
    await client.close();
    assert.equal(client.closed, true);
  } finally {
    await server.close();
  }
});

test('envelope parameters are forwarded when the server advertises their extensions', async () => {
  const server = await startServer({ hideDSN: false, size: 10_000_000 });
  try {
    const client = await SmtpClient.open(clientOptions(server.port));
    assert.equal(client.capabilities.dsn, true);
    assert.equal(client.capabilities.size, 10_000_000);
    const mail = await client.mailFrom('sender@example.com', {
      size: 1234,
      body: '8BITMIME',
      smtpUtf8: true,
      ret: 'HDRS',
      envid: 'QQ314159',
    });
    assert.equal(mail.code, 250);
    assert.equal((await client.rcptTo('known@example.com', { notify: 'SUCCESS,FAILURE', orcpt: 'rfc822;known@example.com' })).code, 250);
    assert.deepEqual(server.recorded.mailFrom[0]?.args, {
      SIZE: '1234',
      BODY: '8BITMIME',
      SMTPUTF8: true,
      RET: 'HDRS',
      ENVID: 'QQ314159',
    });
    assert.deepEqual(server.recorded.rcptTo[0]?.args, { NOTIFY: 'SUCCESS,FAILURE', ORCPT: 'rfc822;known@example.com' });
    await client.close();
  } finally {
    await server.close();
  }
});

test('parameters are dropped when not advertised; 8BITMIME and SMTPUTF8 are refused, not downgraded', async () => {
  const server = await startServer({ hideDSN: true, hide8BITMIME: true, hideSMTPUTF8: true });
  try {
    const client = await SmtpClient.open(clientOptions(server.port));
    assert.deepEqual(await client.mailFrom('sender@example.com', { body: '8BITMIME' }), {
      code: 554,
      enhanced: '5.6.3',
      text: 'Message needs 8BITMIME, which the next hop does not support',
    });
    assert.deepEqual(await client.mailFrom('sender@example.com', { smtpUtf8: true }), {
      code: 553,
      enhanced: '5.6.7',
      text: 'Message needs SMTPUTF8, which the next hop does not support',
    });
    assert.equal(server.recorded.mailFrom.length, 0, 'refused before MAIL FROM was sent');
    const mail = await client.mailFrom('sender@example.com', { size: 99, body: '7BIT', ret: 'FULL', envid: 'X1' });
    assert.equal(mail.code, 250);
    assert.equal((await client.rcptTo('known@example.com', { notify: 'NEVER', orcpt: 'rfc822;known@example.com' })).code, 250);
    assert.deepEqual(server.recorded.mailFrom[0]?.args, false, 'no SIZE (not advertised), no BODY, no DSN parameters');
    assert.deepEqual(server.recorded.rcptTo[0]?.args, false);
    await client.close();
  } finally {
    await server.close();
  }
});

const users = new Map([['alice', 'correct horse']]);
const authServerOptions = (authMethods: string[], methodsSeen: string[] = []): SMTPServerOptions => ({
  authMethods,
  onAuth(auth, _session, callback) {
    methodsSeen.push(auth.method);
    if (users.get(auth.username ?? '') === auth.password) callback(null, { user: auth.username });
    else callback(new Error('Invalid username or password'));
  },
});

for (const mechanism of ['PLAIN', 'LOGIN'] as const) {
  test(`AUTH ${mechanism} passthrough: 235 on success, 535 on failure`, async () => {
    const methodsSeen: string[] = [];
    const server = await startServer(authServerOptions(['PLAIN', 'LOGIN'], methodsSeen));
    try {
      const client = await SmtpClient.open(clientOptions(server.port));
      const refused = await client.authenticate({ mechanism, username: 'alice', password: 'wrong' });
      assert.equal(refused.code, 535);
      assert.equal(refused.enhanced, '5.7.8');
      const accepted = await client.authenticate({ mechanism, username: 'alice', password: 'correct horse' });
      assert.equal(accepted.code, 235);
      assert.equal(accepted.enhanced, '2.7.0');
      assert.deepEqual(methodsSeen, [mechanism, mechanism]);
      await client.close();
    } finally {
      await server.close();
    }
  });
}

test('AUTH: the other mechanism is used when the client one is not offered; none offered → 454 4.7.0', async () => {
  let usedMethod = '';
  const loginOnly = await startServer({
    ...authServerOptions(['LOGIN']),
    onAuth(auth, _session, callback) {
      usedMethod = auth.method;
      callback(null, { user: auth.username });
    },
  });
  try {
    const client = await SmtpClient.open(clientOptions(loginOnly.port));
    assert.equal((await client.authenticate({ mechanism: 'PLAIN', username: 'alice', password: 'correct horse' })).code, 235);
    assert.equal(usedMethod, 'LOGIN');
    await client.close();
  } finally {
    await loginOnly.close();
  }
  const noAuth = await startServer({ disabledCommands: ['AUTH'] });
  try {
    const client = await SmtpClient.open(clientOptions(noAuth.port));
    assert.deepEqual(await client.authenticate({ mechanism: 'PLAIN', username: 'alice', password: 'x' }), {
      code: 454,
      enhanced: '4.7.0',
      text: 'Temporary authentication failure',
    });
    await client.close();
  } finally {
    await noAuth.close();
  }
});

test('STARTTLS with a self-signed certificate: EHLO again over TLS, AUTH then offered', async () => {
  const { key, cert } = selfSignedCertificate();
  const server = await startServer({ key, cert, allowInsecureAuth: false, authMethods: ['PLAIN'], onAuth: (_a, _s, cb) => cb(null, { user: 'x' }) });
  try {
    const client = await SmtpClient.open(clientOptions(server.port, { starttls: 'required' }));
    assert.equal(client.tlsActive, true);
    assert.equal(client.capabilities.startTls, false, 'capabilities are those of the EHLO after TLS');
    assert.ok(client.capabilities.authMechanisms.has('PLAIN'), 'smtp-server offers AUTH only over TLS');
    assert.equal((await client.authenticate({ mechanism: 'PLAIN', username: 'u', password: 'p' })).code, 235);
    await client.mailFrom('sender@example.com', {});
    await client.rcptTo('known@example.com', {});
    assert.equal((await client.data([Buffer.from('Subject: tls\r\n\r\nsecret\r\n')])).code, 250);
    assert.deepEqual(server.recorded.secure, [true]);
    await client.close();
  } finally {
    await server.close();
  }
});

test('STARTTLS: certificate verification on → a self-signed certificate is a tls error', async () => {
  const { key, cert } = selfSignedCertificate();
  const server = await startServer({ key, cert });
  try {
    await assert.rejects(
      SmtpClient.open(clientOptions(server.port, { starttls: 'required', tlsRejectUnauthorized: true })),
      (error: unknown) => error instanceof RelayError && error.kind === 'tls' && /self-signed|self signed/i.test(error.message),
    );
  } finally {
    await server.close();
  }
});

test('STARTTLS required but not offered → tls error; opportunistic → clear text', async () => {
  const server = await startServer({ disabledCommands: ['STARTTLS'] });
  try {
    await assert.rejects(
      SmtpClient.open(clientOptions(server.port, { starttls: 'required' })),
      (error: unknown) => error instanceof RelayError && error.kind === 'tls' && /does not offer STARTTLS/.test(error.message),
    );
    const client = await SmtpClient.open(clientOptions(server.port, { starttls: 'opportunistic' }));
    assert.equal(client.tlsActive, false);
    assert.equal((await client.mailFrom('sender@example.com', {})).code, 250);
    await client.close();
  } finally {
    await server.close();
  }
});

test('LMTP against smtp-server: LHLO, one reply per recipient, folded', async () => {
  const server = await startServer({
    lmtp: true,
    onData(stream, session, callback) {
      stream.resume();
      stream.on('end', () => {
        const results = session.envelope.rcptTo.map((recipient) =>
          recipient.address.startsWith('full@')
            ? Object.assign(new Error('Mailbox full'), { responseCode: 452 })
            : `<${recipient.address}> Q${recipient.address.length} Saved`,
        );
        (callback as (error: Error | null, results: (string | Error)[]) => void)(null, results);
      });
    },
  });
  try {
    const client = await SmtpClient.open(clientOptions(server.port, { protocol: 'lmtp' }));
    await client.mailFrom('sender@example.com', {});
    await client.rcptTo('a@example.com', {});
    await client.rcptTo('full@example.com', {});
    const answer = await client.data([Buffer.from('Subject: lmtp\r\n\r\nx\r\n')]);
    assert.equal(answer.code, 451);
    assert.equal(answer.text, 'Mailbox full');
    assert.deepEqual(
      answer.recipientReplies?.map(({ recipient, reply }) => [recipient, reply.code]),
      [
        ['a@example.com', 250],
        ['full@example.com', 452],
      ],
    );
    await client.reset();
    await client.mailFrom('sender@example.com', {});
    await client.rcptTo('b@example.com', {});
    const delivered = await client.data([Buffer.from('Subject: lmtp\r\n\r\ny\r\n')]);
    assert.equal(delivered.code, 250);
    assert.equal(delivered.queueId, 'Q13');
    await client.close();
  } finally {
    await server.close();
  }
});

// Local AUTH (listener auth.credentials) end to end in-process: sello checks the password itself,
// the MTA (a real SMTP sink) is never sent AUTH, XCLIENT passes the login on as LOGIN=, and the
// embedded dir: target, which cannot check passwords, gets AUTH through a credentials file.

import assert from 'node:assert/strict';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { hashPassword } from '../../src/auth/credentials.ts';
import { parseConfig } from '../../src/config/load.ts';
import { captureLog } from '../helpers/log.ts';
import { startTestSello } from '../helpers/sello.ts';
import { SmtpDialog } from '../helpers/smtp-dialog.ts';
import { startSink, type SinkOptions } from '../helpers/smtp-sink.ts';
import { tempDir } from '../helpers/tools.ts';

const message = 'From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: local auth\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <local@example.com>\r\n\r\nHi Bob.\r\n';
const plain = (user: string, password: string) => Buffer.from(`\0${user}\0${password}`).toString('base64');
// Cheap scrypt parameters: the same format and code path, a thousandth of the work.
const FAST = { logN: 10, r: 8, p: 1 };

async function credentialsFile(t: TestContext, users: Record<string, string>): Promise<string> {
  const dir = await tempDir(t, 'sello-auth-');
  const file = path.join(dir, 'credentials');
  const lines = await Promise.all(Object.entries(users).map(async ([user, password]) => `${user}:${await hashPassword(password, FAST)}`));
  await writeFile(file, `# sello passwd output\n${lines.join('\n')}\n`, { mode: 0o600 });
  return file;
}

async function setup(t: TestContext, options: { sink?: SinkOptions; relay?: Record<string, unknown>; credentials: string }) {
  const sink = await startSink(options.sink);
  t.after(() => sink.close());
  const log = captureLog();
  const sello = await startTestSello(t, {
    keys: [{ domain: 'example.com', selector: 'rsa1', algorithm: 'rsa' }],
    logger: log.logger,
    config: {
      listeners: [{ name: 'submission', role: 'submission', listen: '127.0.0.1:0', tls: { mode: 'starttls' }, auth: { credentials: options.credentials } }],
      relay: { target: sink.url, starttls: 'never', ...options.relay },
    },
  });
  return { sink, sello, log };
}

test('local AUTH: sello checks the password, the MTA is never sent AUTH, the mail is signed; failures are 535 5.7.8 and logged without the password', async (t) => {
  const credentials = await credentialsFile(t, { 'alice@example.com': 'correct horse', bob: 'battery staple' });
  // The sink offers no AUTH at all: only sello can have checked the password.
  const { sink, sello, log } = await setup(t, { credentials });
  const dialog = await SmtpDialog.connect(sello.port('submission'));
  assert.match(await dialog.command('EHLO client.test'), /250-AUTH PLAIN LOGIN/);
  assert.equal(await dialog.command(`AUTH PLAIN ${plain('alice@example.com', 'wrong horse')}`), '535 5.7.8 Authentication credentials invalid');
  assert.equal(await dialog.command(`AUTH PLAIN ${plain('mallory', 'correct horse')}`), '535 5.7.8 Authentication credentials invalid');
  assert.equal(await dialog.command(`AUTH PLAIN ${plain('alice@example.com', 'correct horse')}`), '235 Authentication successful');
  assert.equal(await dialog.command('MAIL FROM:<alice@example.com>'), '250 Accepted');
  assert.equal(await dialog.command('RCPT TO:<bob@example.net>'), '250 Accepted');
  assert.equal(await dialog.sendData(message), '250 2.0.0 OK: queued as SINK1');
  await dialog.close();
  assert.equal(sink.messages.length, 1);
  assert.equal(sink.messages[0]!.user, undefined, 'no AUTH downstream');
  const verified = await dkimVerify(sink.messages[0]!.data, { resolver: sello.resolver as never });
  assert.deepEqual(verified.results.map((result) => result.status?.result), ['pass']);
  const text = log.text();
  assert.equal(text.match(/authentication failed \(local credentials\)/g)?.length, 2);
  for (const secret of ['wrong horse', 'correct horse', '$scrypt$']) assert.ok(!text.includes(secret), `log must not contain ${secret}`);
});

test('AUTH LOGIN works the same way; without AUTH an untrusted client is still refused (no signing oracle)', async (t) => {
  const credentials = await credentialsFile(t, { bob: 'battery staple' });
  const { sink, sello } = await setup(t, { credentials });
  const anonymous = await SmtpDialog.connect(sello.port('submission'));
  await anonymous.command('EHLO client.test');
  assert.equal(await anonymous.command('MAIL FROM:<alice@example.com>'), '530 5.7.0 Authentication required');
  await anonymous.close();
  const dialog = await SmtpDialog.connect(sello.port('submission'));
  await dialog.command('EHLO client.test');
  assert.equal(await dialog.command('AUTH LOGIN'), '334 VXNlcm5hbWU6');
  assert.equal(await dialog.command(Buffer.from('bob').toString('base64')), '334 UGFzc3dvcmQ6');
  assert.equal(await dialog.command(Buffer.from('battery staple').toString('base64')), '235 Authentication successful');
  assert.equal(await dialog.command('MAIL FROM:<alice@example.com>'), '250 Accepted');
  await dialog.close();
  assert.equal(sink.messages.length, 0);
});

test('local AUTH with forward: xclient: the MTA is told LOGIN=<user> with the client address', async (t) => {
  const credentials = await credentialsFile(t, { 'alice@example.com': 'correct horse' });
  const { sink, sello } = await setup(t, { credentials, sink: { useXClient: true }, relay: { forward: 'xclient' } });
  const dialog = await SmtpDialog.connect(sello.port('submission'), { localAddress: '127.0.0.3' });
  await dialog.command('EHLO client.test');
  assert.equal(await dialog.command(`AUTH PLAIN ${plain('alice@example.com', 'correct horse')}`), '235 Authentication successful');
  assert.equal(await dialog.command('MAIL FROM:<alice@example.com>'), '250 Accepted');
  assert.equal(await dialog.command('RCPT TO:<bob@example.net>'), '250 Accepted');
  assert.equal(await dialog.sendData(message), '250 2.0.0 OK: queued as SINK1');
  await dialog.close();
  const client = sink.messages[0]!.client;
  assert.equal(client.xClient['LOGIN'], 'alice@example.com');
  assert.equal(client.remoteAddress, '127.0.0.3');
});

test('the dir: target cannot check passwords, so AUTH is offered only with a credentials file', async (t) => {
  const credentials = await credentialsFile(t, { bob: 'battery staple' });
  const mail = await tempDir(t, 'sello-dir-');
  const sello = await startTestSello(t, {
    keys: [{ domain: 'example.com', selector: 'rsa1', algorithm: 'rsa' }],
    config: {
      listeners: [
        { name: 'local', role: 'submission', listen: '127.0.0.1:0', auth: { credentials } },
        { name: 'passthrough', role: 'submission', listen: '127.0.0.1:0' },
      ],
      relay: { target: `dir:${mail}` },
    },
  });
  const passthrough = await SmtpDialog.connect(sello.port('passthrough'));
  assert.doesNotMatch(await passthrough.command('EHLO client.test'), /AUTH/);
  await passthrough.close();
  const dialog = await SmtpDialog.connect(sello.port('local'));
  assert.match(await dialog.command('EHLO client.test'), /250-AUTH PLAIN LOGIN/);
  assert.equal(await dialog.command(`AUTH PLAIN ${plain('bob', 'battery staple')}`), '235 Authentication successful');
  assert.equal(await dialog.command('MAIL FROM:<alice@example.com>'), '250 Accepted');
  assert.equal(await dialog.command('RCPT TO:<bob@example.net>'), '250 Accepted');
  assert.match(await dialog.sendData(message), /^250 /);
  await dialog.close();
  const files = (await readdir(mail)).filter((name) => name.endsWith('.eml'));
  assert.equal(files.length, 1);
  assert.match(await readFile(path.join(mail, files[0]!), 'utf8'), /DKIM-Signature: v=1; a=rsa-sha256; .*d=example\.com/s);
});

test('reload: a changed credentials file takes effect for new sessions; a broken one keeps the old users', async (t) => {
  const credentials = await credentialsFile(t, { bob: 'old password' });
  const { sello, sink } = await setup(t, { credentials });
  const auth = async (password: string) => {
    const dialog = await SmtpDialog.connect(sello.port('submission'));
    await dialog.command('EHLO client.test');
    const reply = await dialog.command(`AUTH PLAIN ${plain('bob', password)}`);
    await dialog.close();
    return reply;
  };
  assert.equal(await auth('old password'), '235 Authentication successful');
  await writeFile(credentials, `bob:${await hashPassword('new password', FAST)}\n`);
  // The same config again: what SIGHUP does after the file changed.
  const sameConfig = async () =>
    parseConfig({
      hostname: 'sello.test',
      listeners: [{ name: 'submission', role: 'submission', listen: '127.0.0.1:0', tls: { mode: 'starttls' }, auth: { credentials } }],
      relay: { target: sink.url, starttls: 'never' },
      signing: { keysDir: sello.keysDir, domains: { 'example.com': 'rsa1' } },
    });
  assert.equal(await sello.running.reload(sameConfig), true);
  assert.equal(await auth('new password'), '235 Authentication successful');
  assert.equal(await auth('old password'), '535 5.7.8 Authentication credentials invalid');
  await writeFile(credentials, 'bob:not-a-hash\n');
  assert.equal(await sello.running.reload(sameConfig), false);
  assert.equal(await auth('new password'), '235 Authentication successful');
});

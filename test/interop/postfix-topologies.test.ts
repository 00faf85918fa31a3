// Topologies 1, 3 and 4 (PRODUCT.md §1) end to end with a real Postfix 3.x (Debian's package, run
// by test/helpers/postfix.ts): the shipped master.cf snippets in config/postfix/ and the shipped
// sello configs in config/examples/postfix-*.yaml are read from disk and used as they are — only
// the ports are replaced by free ones (and sello's keys directory and DNS server by the test's).
// Clients connect from 127.0.0.2, so "the real client" (127.0.0.2) and sello (127.0.0.1) differ in
// Postfix's maillog. The site around the snippets is played by the test: Cyrus SASL with a
// sasldb (Debian's /etc/postfix/sasl/smtpd.conf layout) for the users, a self-signed certificate
// for the submission port, and "the Internet": remote.example is delivered into the harness's
// maildir (transport_maps → virtual:) while staying foreign to Postfix's relay rules.
// Delivered copies are verified by dkimpy against the keys published in the test DNS server.

import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parse } from 'yaml';
import { startSello, type RunningSello } from '../../src/app.ts';
import { hashPassword } from '../../src/auth/credentials.ts';
import { parseConfig } from '../../src/config/load.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { SmtpTarget } from '../../src/relay/smtp-target.ts';
import { verifyWithDkimpy } from '../helpers/dkimpy.ts';
import type { Zone } from '../helpers/dns-server.ts';
import { parseAuthenticationResults, parseReceivedSpf } from '../helpers/header-parsers.ts';
import { startPostfix, withoutPostfixFields, type Postfix, type PostfixDelivery } from '../helpers/postfix.ts';
import { checkCyrusSasl, setUpSite, SITE_MAIN_CF } from '../helpers/postfix-site.ts';
import { keysForSigningTable, makeKeys } from '../helpers/sello.ts';
import { SmtpDialog, sendMail } from '../helpers/smtp-dialog.ts';
import { checkDkimpy, checkPostfix, freePort, removeTempDir, suiteOptions, tempDir } from '../helpers/tools.ts';

const ROOT = path.join(import.meta.dirname, '../..');
const CLIENT = '127.0.0.2';
const USER = { name: 'alice', password: 'wonderland' };

/** sello's keys, made per suite; removed when the file is done (a suite may restart sello). */
const keysDirs: string[] = [];
after(() => Promise.all(keysDirs.map((dir) => removeTempDir(dir))));

// ---------- the shipped files ----------

type Replacement = readonly [from: string | RegExp, to: string];

/** A shipped master.cf snippet as master.cf lines, with each replacement made (each must apply). */
async function shippedMaster(file: string, replacements: readonly Replacement[]): Promise<string[]> {
  let text = await readFile(path.join(ROOT, 'config/postfix', file), 'utf8');
  for (const [from, to] of replacements) {
    const global = typeof from === 'string' ? from : new RegExp(from.source, `${from.flags.replace('g', '')}g`);
    assert.ok(typeof global === 'string' ? text.includes(global) : global.test(text), `config/postfix/${file} has ${String(from)}`);
    text = typeof global === 'string' ? text.replaceAll(global, to) : text.replace(global, to);
  }
  return text.split('\n');
}

type SigningTable = Record<string, string | string[]>;
type RawSelloConfig = {
  listeners: { name: string; listen: string }[];
  relay: { target: string };
  signing: { keysDir: string; domains: SigningTable };
  dns?: unknown;
};

/**
 * A shipped sello config with its keys made (one per selector of its signing table: "ed…"
 * Ed25519, else RSA, as test/unit/config/examples.test.ts does) and their DNS records.
 */
async function shippedSello(file: string): Promise<{ raw: RawSelloConfig; records: Map<string, string> }> {
  const raw = parse(await readFile(path.join(ROOT, 'config/examples', file), 'utf8')) as RawSelloConfig;
  const unique = keysForSigningTable(raw.signing.domains);
  const { keysDir, records } = await makeKeys(unique, await tempDir());
  keysDirs.push(keysDir);
  raw.signing.keysDir = keysDir;
  return { raw, records };
}

async function runSello(raw: RawSelloConfig): Promise<RunningSello> {
  return startSello(parseConfig(raw), silentLogger());
}

function portOf(sello: RunningSello, listener: string): number {
  const address = sello.addresses.get(listener);
  assert.ok(address, `sello listener ${listener}`);
  return address.port;
}

// ---------- the site around the snippets ----------

const ZONE: Zone = {
  'pass.example': { TXT: ['v=spf1 ip4:127.0.0.2 -all'] },
  'fail.example': { TXT: ['v=spf1 ip4:192.0.2.1 -all'] },
};

function zoneWith(records: Map<string, string>): Zone {
  return { ...ZONE, ...Object.fromEntries([...records].map(([name, value]) => [name, { TXT: [value] }])) };
}

// ---------- clients ----------

const DATE = 'Mon, 23 Nov 2026 10:00:00 +0000';

function message(from: string, to: string, subject: string): Buffer {
  return Buffer.from(`From: ${from}\r\nTo: ${to}\r\nSubject: ${subject}\r\nDate: ${DATE}\r\nMessage-ID: <${subject.replace(/\W+/g, '-')}@client.test>\r\n\r\nHello from ${CLIENT}.\r\n`);
}

const plain = (user: string, password: string) => `AUTH PLAIN ${Buffer.from(`\0${user}\0${password}`).toString('base64')}`;

type Submission = { tls?: boolean; auth?: { user: string; password: string }; from: string; to: string; data: Buffer };
type SubmissionReplies = { auth?: string; mail: string; rcpt: string; data?: string };

/** A mail client on 127.0.0.2: EHLO, optionally STARTTLS and AUTH PLAIN, one message. */
async function submit(port: number, submission: Submission): Promise<SubmissionReplies> {
  const dialog = await SmtpDialog.connect(port, { localAddress: CLIENT });
  try {
    assert.match(await dialog.command('EHLO client.test'), /^250/);
    if (submission.tls) {
      await dialog.startTls();
      assert.match(await dialog.command('EHLO client.test'), /^250/);
    }
    const replies: Partial<SubmissionReplies> = {};
    if (submission.auth) replies.auth = await dialog.command(plain(submission.auth.user, submission.auth.password));
    replies.mail = await dialog.command(`MAIL FROM:<${submission.from}>`);
    replies.rcpt = replies.mail.startsWith('250') ? await dialog.command(`RCPT TO:<${submission.to}>`) : '';
    if (replies.rcpt.startsWith('250')) replies.data = await dialog.sendData(submission.data);
    return replies as SubmissionReplies;
  } finally {
    await dialog.close();
  }
}

function queueIdOf(reply: string | undefined): string {
  const queueId = /^250 2\.0\.0 (?:Ok|OK): queued as (\w+)$/.exec(reply ?? '')?.[1];
  assert.ok(queueId, `a queue id in ${JSON.stringify(reply)}`);
  return queueId;
}

async function waitFor<T>(probe: () => Promise<T | undefined>, what: string, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The one delivery of the message Postfix queued as `queueId` (its last smtpd hop). */
async function deliveredAs(postfix: Postfix, queueId: string): Promise<PostfixDelivery> {
  return waitFor(async () => (await postfix.deliveries()).find((delivery) => delivery.queueId === queueId), `delivery of ${queueId}\n${(await postfix.maillog()).split('\n').slice(-30).join('\n')}`);
}

/** Whether something listens on 127.0.0.1:port and greets with 220 (the snippets' own smtpds). */
async function greets(port: number): Promise<boolean> {
  try {
    const dialog = await SmtpDialog.connect(port);
    await dialog.close();
    return dialog.greeting.startsWith('220');
  } catch {
    return false;
  }
}

/** The client address of each Received field, top down ("from helo (name [address])"). */
function receivedFrom(data: Buffer): string[] {
  return headerFields(data, 'Received').map((field) => /^Received: from \S+ \(\S+ \[([^\]]+)\]\)/i.exec(field)?.[1] ?? '?');
}

/** The maillog's warning, error, fatal and panic lines, except those matching `expected`. */
async function maillogProblems(postfix: Postfix, expected?: RegExp): Promise<string[]> {
  return (await postfix.maillog()).split('\n').filter((line) => /\b(warning|error|fatal|panic):/.test(line) && !expected?.test(line));
}

function headerFields(data: Buffer, name: string): string[] {
  const header = data.toString('latin1').split('\r\n\r\n')[0] ?? '';
  return header.split(/\r\n(?![ \t])/).filter((line) => line.toLowerCase().startsWith(`${name.toLowerCase()}:`));
}

/** dkimpy's verdict on every signature of a delivered copy, as "d/s: ok". */
async function dkimpyVerdicts(postfix: Postfix, delivery: PostfixDelivery): Promise<string[]> {
  const result = await verifyWithDkimpy(delivery.data, postfix.dns);
  return result.signatures.map((signature) => `${signature.domain}/${signature.selector}: ${signature.ok ? 'ok' : signature.error}`);
}

const SIGNED = ['example.com/rsa2026: ok', 'example.com/ed2026: ok'];

/** An 8-bit UTF-8 message, told apart by its Message-ID. */
function eightBit(id: string): Buffer {
  return Buffer.from(
    `From: Alice <alice@example.com>\r\nTo: bob@remote.example\r\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\nDate: ${DATE}\r\n` +
      `Message-ID: <${id}@client.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n` +
      'Grüße aus Köln — ½ € ✓\r\n',
    'utf8',
  );
}

/**
 * The authenticated user sends eightBit(id) with the envelope parameters PRODUCT.md §3 keeps:
 * BODY=8BITMIME and SMTPUTF8, and when the server offers DSN, RET=HDRS ENVID=<id> and NOTIFY=SUCCESS
 * ORCPT — as a careful client does, only what was offered. BDAT when the server offers
 * CHUNKING (Postfix's submission does; it speaks DATA to its filters). Returns the EHLO reply
 * (after STARTTLS) and the reply to the message.
 */
async function submitEnvelope(port: number, tls: boolean, id: string): Promise<{ ehlo: string; reply: string }> {
  const dialog = await SmtpDialog.connect(port, { localAddress: CLIENT });
  try {
    let ehlo = await dialog.command('EHLO client.test');
    if (tls) {
      await dialog.startTls();
      ehlo = await dialog.command('EHLO client.test');
    }
    const offers = (keyword: string) => new RegExp(`^250[- ]${keyword}\\b`, 'm').test(ehlo);
    assert.ok(offers('8BITMIME') && offers('SMTPUTF8'), ehlo);
    assert.match(await dialog.command(plain(USER.name, USER.password)), /^235 /);
    const dsn = offers('DSN');
    assert.match(await dialog.command(`MAIL FROM:<alice@example.com> BODY=8BITMIME SMTPUTF8${dsn ? ` RET=HDRS ENVID=${id}` : ''}`), /^250 /);
    assert.match(await dialog.command(`RCPT TO:<bob@remote.example>${dsn ? ' NOTIFY=SUCCESS ORCPT=rfc822;bob@remote.example' : ''}`), /^250 /);
    const data = eightBit(id);
    if (!offers('CHUNKING')) return { ehlo, reply: await dialog.sendData(data) };
    dialog.write(Buffer.concat([Buffer.from(`BDAT ${data.length} LAST\r\n`), data]));
    return { ehlo, reply: await dialog.readReply() };
  } finally {
    await dialog.close();
  }
}

const QUEUED = /^250 2\.0\.0 (?:Ok|OK): (?:\d+ bytes )?queued as \w+$/;

/** eightBit(id) arrived byte for byte (no 7-bit downgrade) and its signatures verify. */
async function assertEightBitSigned(postfix: Postfix, id: string): Promise<void> {
  const delivery = await waitFor(async () => (await postfix.deliveries()).find((candidate) => candidate.data.includes(eightBit(id))), `the 8-bit message ${id}`);
  assert.equal(delivery.recipient, 'bob@remote.example');
  assert.deepEqual(await dkimpyVerdicts(postfix, delivery), SIGNED);
}

/**
 * Postfix's success notice for eightBit(id) came back to alice@example.com with the ENVID and
 * the ORCPT, headers only (RET=HDRS), and says "delivered": NOTIFY reached the Postfix that
 * delivered the message (a hop that drops it makes the one before it say "relayed").
 */
async function assertDsnKept(postfix: Postfix, ehlo: string, id: string): Promise<void> {
  assert.match(ehlo, /^250[- ]DSN\b/m, 'DSN offered to the mail client');
  const notice = await waitFor(async () => (await postfix.deliveries()).find((candidate) => candidate.recipient === 'alice@example.com' && candidate.data.includes(id)), `the DSN for ${id}`);
  const text = notice.data.toString('utf8');
  assert.match(text, new RegExp(`^Original-Envelope-Id: ${id}\r$`, 'm'));
  assert.match(text, /^Original-Recipient: rfc822;bob@remote\.example\r$/m);
  assert.match(text, /^Action: delivered\r$/m);
  assert.ok(!text.includes('Grüße aus Köln'), 'RET=HDRS: the headers, not the body');
}


// ---------- topology 1 ----------

describe('topology 1: sello (mx, submission) in front of Postfix, XCLIENT', suiteOptions(checkPostfix(), checkDkimpy(), checkCyrusSasl()), () => {
  let postfix: Postfix;
  let sello: RunningSello;
  let mxPort: number;
  let submissionPort: number;

  before(async () => {
    const inPort = await freePort();
    const { raw, records } = await shippedSello('postfix-in-front.yaml');
    postfix = await startPostfix({
      zone: zoneWith(records),
      localDomains: ['example.net'],
      mainConfig: SITE_MAIN_CF,
      masterConfig: await shippedMaster('master-in-front.cf', [['127.0.0.1:2525', `127.0.0.1:${inPort}`]]),
    });
    await setUpSite(postfix, { [USER.name]: USER.password });
    assert.ok(await greets(inPort), 'the snippet\'s smtpd listens');
    assert.equal(raw.relay.target, 'smtp://127.0.0.1:2525');
    raw.relay.target = `smtp://127.0.0.1:${inPort}`;
    for (const listener of raw.listeners) listener.listen = '127.0.0.1:0';
    raw.dns = { servers: [postfix.dns.address], timeout: '2s' };
    sello = await runSello(raw);
    mxPort = portOf(sello, 'mx');
    submissionPort = portOf(sello, 'submission');
  });
  after(async () => {
    await sello?.close();
    await postfix?.close();
  });

  test('outbound: AUTH passes through to Postfix\'s SASL; the mail leaves Postfix signed (dkimpy), logged under the real client', async () => {
    const sent = await submit(submissionPort, { tls: true, auth: { user: USER.name, password: USER.password }, from: 'alice@example.com', to: 'bob@remote.example', data: message('Alice <alice@example.com>', 'bob@remote.example', 'topology 1 outbound') });
    assert.equal(sent.auth, '235 Authentication successful');
    assert.equal(sent.rcpt, '250 Accepted');
    const queueId = queueIdOf(sent.data);
    const delivery = await deliveredAs(postfix, queueId);
    assert.equal(delivery.recipient, 'bob@remote.example');
    assert.equal(delivery.clientAddress, CLIENT, 'Postfix\'s Received names the XCLIENT client, not sello');
    assert.deepEqual(await dkimpyVerdicts(postfix, delivery), SIGNED);
    await postfix.waitForLog(new RegExp(`postfix/sello-in/smtpd\\[\\d+\\]: ${queueId}: client=unknown\\[127\\.0\\.0\\.2\\], sasl_method=PLAIN, sasl_username=alice@postfix\\.test`));
  });

  test('8BITMIME and SMTPUTF8: an 8-bit message arrives unchanged and signed', async () => {
    assert.match((await submitEnvelope(submissionPort, false, 't1-8bit')).reply, QUEUED);
    await assertEightBitSigned(postfix, 't1-8bit');
  });

  test('DSN: RET, ENVID, NOTIFY and ORCPT reach Postfix (its success notice carries them)', async () => {
    const { ehlo, reply } = await submitEnvelope(submissionPort, false, 't1-dsn');
    assert.match(reply, QUEUED);
    await assertDsnKept(postfix, ehlo, 't1-dsn');
  });

  test('a wrong password is refused by Postfix\'s SASL (535), for the real client', async () => {
    const sent = await submit(submissionPort, { auth: { user: USER.name, password: 'guess' }, from: 'alice@example.com', to: 'bob@remote.example', data: message('alice@example.com', 'bob@remote.example', 'wrong password') });
    assert.equal(sent.auth, '535 5.7.8 Authentication credentials invalid');
    assert.equal(sent.mail, '530 5.7.0 Authentication required');
    await postfix.waitForLog(/postfix\/sello-in\/smtpd\[\d+\]: warning: unknown\[127\.0\.0\.2\]: SASL PLAIN authentication failed/);
  });

  test('inbound on mx: Received-SPF and Authentication-Results; Postfix logs the real client', async () => {
    const sent = await sendMail(mxPort, { from: 'carol@pass.example', to: ['bob@example.net'], data: message('Carol <carol@pass.example>', 'bob@example.net', 'topology 1 inbound') }, { localAddress: CLIENT, helo: 'client.test' });
    assert.deepEqual(sent.rcpt, ['250 Accepted']);
    const queueId = queueIdOf(sent.data);
    const delivery = await deliveredAs(postfix, queueId);
    assert.equal(delivery.clientAddress, CLIENT);
    const [receivedSpf] = headerFields(delivery.data, 'Received-SPF');
    assert.ok(receivedSpf, 'Received-SPF');
    const spf = parseReceivedSpf(receivedSpf);
    assert.deepEqual([spf.result, spf.pairs['client-ip'], spf.pairs['envelope-from']], ['pass', CLIENT, 'carol@pass.example']);
    const [authenticationResults] = headerFields(delivery.data, 'Authentication-Results');
    assert.ok(authenticationResults, 'Authentication-Results');
    const results = parseAuthenticationResults(authenticationResults);
    assert.equal(results.authservId, 'mail.example.com');
    assert.deepEqual(results.resinfos.map((resinfo) => `${resinfo.method}=${resinfo.result}`), ['spf=pass', 'dkim=none', 'dmarc=none', 'arc=none']);
    assert.deepEqual(headerFields(delivery.data, 'DKIM-Signature'), [], 'mx never signs');
    await postfix.waitForLog(new RegExp(`postfix/sello-in/smtpd\\[\\d+\\]: ${queueId}: client=unknown\\[127\\.0\\.0\\.2\\]$`, 'm'));
  });

  test('SPF fail is refused at RCPT with 550 5.7.23; Postfix never gets the recipient', async () => {
    const sent = await sendMail(mxPort, { from: 'mallory@fail.example', to: ['bob@example.net'], data: message('mallory@fail.example', 'bob@example.net', 'spf fail') }, { localAddress: CLIENT });
    assert.equal(sent.mail, '250 Accepted');
    assert.deepEqual(sent.rcpt, ['550 5.7.23 [SPF] 127.0.0.2 is not allowed to send mail from fail.example']);
    assert.equal(sent.dataCommand, undefined);
    assert.doesNotMatch(await postfix.maillog(), /from=<mallory@fail\.example>/);
  });

  test('no open relay: relaying is refused to the unauthenticated client (Postfix judges the XCLIENT client on mx; sello on submission)', async () => {
    const viaMx = await sendMail(mxPort, { from: 'mallory@pass.example', to: ['victim@remote.example'], data: message('mallory@pass.example', 'victim@remote.example', 'relay via mx') }, { localAddress: CLIENT });
    assert.deepEqual(viaMx.rcpt, ['554 5.7.1 <victim@remote.example>: Relay access denied']);
    await postfix.waitForLog(/postfix\/sello-in\/smtpd\[\d+\]: NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.2\]: 554 5\.7\.1 <victim@remote\.example>: Relay access denied/);
    const viaSubmission = await submit(submissionPort, { from: 'mallory@example.com', to: 'victim@remote.example', data: message('mallory@example.com', 'victim@remote.example', 'relay via submission') });
    assert.equal(viaSubmission.mail, '530 5.7.0 Authentication required');
    assert.ok(!(await postfix.deliveries()).some((delivery) => delivery.recipient === 'victim@remote.example'));
  });

  test('readiness: the snippet\'s smtpd passes the XCLIENT probe; the main smtpd, where sello is not authorized, fails it and names the setting', async () => {
    const report = await sello.readiness();
    assert.deepEqual(report, { ready: true, checks: Object.fromEntries(Object.keys(report.checks).map((name) => [name, 'ok'])) });
    assert.ok(Object.keys(report.checks).includes(`relay ${sello.config.relay.target}`), JSON.stringify(report));
    const unauthorized = `smtp://127.0.0.1:${postfix.port}`;
    const target = new SmtpTarget({ url: unauthorized, starttls: 'never', tlsRejectUnauthorized: false, helo: 'sello.test', forward: 'xclient', timeouts: { connectMs: 5000, commandMs: 5000, dataMs: 5000 } });
    await assert.rejects(target.probe(), {
      message: `${unauthorized} does not offer XCLIENT, which relay.forward: xclient needs (Postfix: is sello's address in smtpd_authorized_xclient_hosts?)`,
    });
  });

  test('local AUTH (auth.credentials): sello checks the password, XCLIENT LOGIN= makes Postfix relay for that user and log it', async () => {
    // A user Postfix's SASL does not know: only sello's credentials file can let them relay.
    const dir = await tempDir();
    const credentials = path.join(dir, 'credentials');
    await writeFile(credentials, `dave@example.com:${await hashPassword('tarragon', { logN: 10, r: 8, p: 1 })}\n`, { mode: 0o600 });
    const raw = parse(await readFile(path.join(ROOT, 'config/examples/postfix-in-front.yaml'), 'utf8')) as RawSelloConfig;
    // The running sello's keys: the test DNS server publishes their records.
    raw.signing.keysDir = sello.config.signing.keysDir;
    raw.relay.target = sello.config.relay.target;
    raw.listeners = [{ name: 'local-auth', role: 'submission', listen: '127.0.0.1:0', tls: { mode: 'starttls' }, auth: { credentials } } as RawSelloConfig['listeners'][number]];
    const local = await runSello(raw);
    try {
      const port = portOf(local, 'local-auth');
      const wrong = await submit(port, { auth: { user: 'dave@example.com', password: 'parsley' }, from: 'dave@example.com', to: 'bob@remote.example', data: message('dave@example.com', 'bob@remote.example', 'local auth wrong') });
      assert.equal(wrong.auth, '535 5.7.8 Authentication credentials invalid');
      assert.equal(wrong.mail, '530 5.7.0 Authentication required');
      const sent = await submit(port, { auth: { user: 'dave@example.com', password: 'tarragon' }, from: 'dave@example.com', to: 'bob@remote.example', data: message('Dave <dave@example.com>', 'bob@remote.example', 'local auth') });
      assert.equal(sent.auth, '235 Authentication successful');
      assert.equal(sent.rcpt, '250 Accepted', 'Postfix relays to a remote domain for the XCLIENT login');
      const queueId = queueIdOf(sent.data);
      const delivery = await deliveredAs(postfix, queueId);
      assert.equal(delivery.clientAddress, CLIENT);
      assert.deepEqual(await dkimpyVerdicts(postfix, delivery), SIGNED);
      await postfix.waitForLog(new RegExp(`postfix/sello-in/smtpd\\[\\d+\\]: ${queueId}: client=unknown\\[127\\.0\\.0\\.2\\], sasl_method=XCLIENT, sasl_username=dave@example\\.com`));
      assert.doesNotMatch(await postfix.maillog(), /dave@example\.com.*authentication failed/, 'Postfix was never asked to check the password');
    } finally {
      await local.close();
      await removeTempDir(dir);
    }
  });

  test('the shipped lines are clean: no warning in the maillog but the wrong password\'s', async () => {
    assert.deepEqual(await maillogProblems(postfix, /: warning: (SASL authentication failure: Password verification failed|unknown\[127\.0\.0\.2\]: SASL PLAIN authentication failed)/), []);
  });
});

// ---------- topologies 3 and 4: shared ----------

type FilterSetup = {
  postfix: Postfix;
  sello: RunningSello;
  selloConfig: RawSelloConfig;
  submissionPort: number;
  /** Postfix's port-25 service: the snippet's own (topology 3) or the harness's untouched one. */
  port25: number;
  /** sello's listeners by name: "filter" (signs), and in topology 3 "inbound" (verifies). */
  selloPorts: Record<string, number>;
  reinjectPort: number;
};

/**
 * Postfix with one of the filter snippets and sello with its example config, on free ports in
 * place of 587, 25 (when the snippet has its own `smtp inet`), 10025, 10026 and 10027.
 */
async function startFilterTopology(snippet: string, selloFile: string): Promise<FilterSetup> {
  const shippedPorts = { filter: 10025, reinject: 10026, inbound: 10027 };
  const ports = { submission: await freePort(), smtp: await freePort(), filter: await freePort(), reinject: await freePort(), inbound: await freePort() };
  const text = await readFile(path.join(ROOT, 'config/postfix', snippet), 'utf8');
  const ownsPort25 = /^smtp +inet /m.test(text);
  const { raw, records } = await shippedSello(selloFile);
  const postfix = await startPostfix({
    zone: zoneWith(records),
    localDomains: ['example.net'],
    mainConfig: SITE_MAIN_CF,
    masterConfig: await shippedMaster(snippet, [
      [/^submission(?= +inet )/m, `127.0.0.1:${ports.submission}`],
      ...(ownsPort25 ? [[/^smtp(?= +inet )/m, `127.0.0.1:${ports.smtp}`] as const, [`:${shippedPorts.inbound}`, `:${ports.inbound}`] as const] : []),
      [`:${shippedPorts.filter}`, `:${ports.filter}`],
      [`:${shippedPorts.reinject}`, `:${ports.reinject}`],
    ]),
  });
  await setUpSite(postfix, { [USER.name]: USER.password });
  const port25 = ownsPort25 ? ports.smtp : postfix.port;
  for (const port of [ports.submission, port25, ports.reinject]) assert.ok(await greets(port), `the snippet's smtpd on ${port} listens`);
  const selloPorts: Record<string, number> = {};
  for (const listener of raw.listeners) {
    const name = listener.name as keyof typeof shippedPorts;
    assert.equal(listener.listen, `127.0.0.1:${shippedPorts[name]}`, `${selloFile}: listener ${listener.name}`);
    listener.listen = `127.0.0.1:${ports[name]}`;
    selloPorts[name] = ports[name];
  }
  assert.equal(raw.relay.target, `smtp://127.0.0.1:${shippedPorts.reinject}`);
  raw.relay.target = `smtp://127.0.0.1:${ports.reinject}`;
  raw.dns = { servers: [postfix.dns.address], timeout: '2s' };
  const sello = await runSello(raw);
  return { postfix, sello, selloConfig: raw, submissionPort: ports.submission, port25, selloPorts, reinjectPort: ports.reinject };
}

/** The open-relay attempts every filter topology must refuse, by the public and the loopback ports. */
async function assertNoOpenRelay(setup: FilterSetup): Promise<void> {
  const { postfix, submissionPort, port25, selloPorts, reinjectPort } = setup;
  const attempt = { from: 'mallory@example.com', to: 'victim@remote.example', data: message('CEO <ceo@example.com>', 'victim@remote.example', 'open relay?') };
  // Submission without AUTH (after STARTTLS, which the port requires): Postfix refuses at RCPT.
  const viaSubmission = await submit(submissionPort, { ...attempt, tls: true });
  assert.equal(viaSubmission.rcpt, '554 5.7.1 <victim@remote.example>: Recipient address rejected: Access denied');
  // Port 25: Postfix refuses at RCPT, before anything reaches a filter.
  const viaPort25 = await submit(port25, attempt);
  assert.equal(viaPort25.rcpt, '554 5.7.1 <victim@remote.example>: Relay access denied');
  // sello's filter ports from another loopback address: not the MTA, refused at MAIL.
  for (const port of Object.values(selloPorts)) assert.equal((await submit(port, attempt)).mail, '550 5.7.1 Relaying denied');
  // The re-injection port relays for sello (127.0.0.1) only.
  const viaReinject = await submit(reinjectPort, attempt);
  assert.equal(viaReinject.rcpt, '554 5.7.1 <victim@remote.example>: Recipient address rejected: Access denied');
  assert.ok(!(await postfix.deliveries()).some((delivery) => delivery.recipient === 'victim@remote.example'));
}

/** Port-25 mail from a stranger forging our From: delivered, never signed. Returns the delivery. */
async function assertForgeryUnsigned(setup: FilterSetup): Promise<PostfixDelivery> {
  const sent = await submit(setup.port25, { from: 'ceo@example.com', to: 'bob@example.net', data: message('CEO <ceo@example.com>', 'bob@example.net', 'forged from') });
  const delivery = await deliveredAs(setup.postfix, queueIdOf(sent.data));
  assert.deepEqual(headerFields(delivery.data, 'DKIM-Signature'), []);
  return delivery;
}

// ---------- topology 3 ----------

describe('topology 3: sello as Postfix\'s before-queue filter (smtpd_proxy_filter, XFORWARD)', suiteOptions(checkPostfix(), checkDkimpy(), checkCyrusSasl()), () => {
  let setup: FilterSetup;

  before(async () => {
    setup = await startFilterTopology('master-before-queue.cf', 'postfix-before-queue.yaml');
  });
  after(async () => {
    await setup?.sello.close();
    await setup?.postfix.close();
  });

  test('outbound: an authenticated user\'s mail is signed before Postfix queues it (dkimpy); the logs keep the real client', async () => {
    const { postfix, submissionPort } = setup;
    const sent = await submit(submissionPort, { tls: true, auth: { user: USER.name, password: USER.password }, from: 'alice@example.com', to: 'bob@remote.example', data: message('Alice <alice@example.com>', 'bob@remote.example', 'topology 3 outbound') });
    assert.equal(sent.auth, '235 2.7.0 Authentication successful');
    // The final reply is sello's, carrying the re-injection smtpd's queue id.
    const queueId = queueIdOf(sent.data);
    const delivery = await deliveredAs(postfix, queueId);
    assert.equal(delivery.recipient, 'bob@remote.example');
    assert.deepEqual(await dkimpyVerdicts(postfix, delivery), SIGNED);
    // Received: the re-injection smtpd's (from sello: XFORWARD changes logs only), then, below
    // sello's signatures, the submission smtpd's (the client).
    assert.deepEqual(receivedFrom(delivery.data), ['127.0.0.1', CLIENT]);
    const log = await postfix.waitForLog(new RegExp(`postfix/sello-reinject/smtpd\\[\\d+\\]: ${queueId}: client=localhost\\[127\\.0\\.0\\.1\\], orig_client=unknown\\[127\\.0\\.0\\.2\\]$`, 'm'));
    assert.match(log, /postfix\/submission\/smtpd\[\d+\]: NOQUEUE: client=unknown\[127\.0\.0\.2\], sasl_method=PLAIN, sasl_username=alice@postfix\.test/);
    await postfix.waitForLog(new RegExp(`postfix/submission/smtpd\\[\\d+\\]: proxy-accept: END-OF-MESSAGE: 250 2\\.0\\.0 OK: queued as ${queueId}; from=<alice@example\\.com> to=<bob@remote\\.example>`));
  });

  test('BDAT, 8BITMIME and SMTPUTF8 through the proxy: an 8-bit message arrives unchanged and signed', async () => {
    assert.match((await submitEnvelope(setup.submissionPort, true, 't3-8bit')).reply, QUEUED);
    await assertEightBitSigned(setup.postfix, 't3-8bit');
  });

  test('DSN through the proxy: Postfix forwards RET, ENVID, NOTIFY and ORCPT verbatim, sello passes them on', async () => {
    const { ehlo, reply } = await submitEnvelope(setup.submissionPort, true, 't3-dsn');
    assert.match(reply, QUEUED);
    await assertDsnKept(setup.postfix, ehlo, 't3-dsn');
  });

  test('sello down: the client gets a 4xx at the end of DATA and keeps the message; nothing is queued', async () => {
    const { postfix, submissionPort } = setup;
    await setup.sello.close();
    try {
      const sent = await submit(submissionPort, { tls: true, auth: { user: USER.name, password: USER.password }, from: 'alice@example.com', to: 'bob@remote.example', data: message('Alice <alice@example.com>', 'bob@remote.example', 'topology 3 while sello is down') });
      assert.equal(sent.data, '451 4.3.0 Error: queue file write error');
      await postfix.waitForLog(/postfix\/submission\/smtpd\[\d+\]: warning: connect to proxy filter 127\.0\.0\.1:\d+: Connection refused/);
      const log = await postfix.waitForLog(/postfix\/submission\/smtpd\[\d+\]: proxy-reject: END-OF-MESSAGE: 451 4\.3\.0 Error: queue file write error; from=<alice@example\.com>/);
      assert.doesNotMatch(log, /message-id=<topology-3-while-sello-is-down@client\.test>/, 'never queued');
    } finally {
      setup.sello = await runSello(setup.selloConfig);
    }
  });

  test('no open relay through any port: submission without AUTH, port 25, sello\'s filter ports, the re-injection port', async () => {
    await assertNoOpenRelay(setup);
  });

  test('inbound on port 25: sello\'s verifying filter adds Received-SPF and Authentication-Results for the XFORWARD client', async () => {
    const { postfix, port25 } = setup;
    const sent = await submit(port25, { from: 'carol@pass.example', to: 'bob@example.net', data: message('Carol <carol@pass.example>', 'bob@example.net', 'topology 3 inbound') });
    assert.equal(sent.rcpt, '250 2.1.5 Ok');
    const queueId = queueIdOf(sent.data);
    const delivery = await deliveredAs(postfix, queueId);
    const [receivedSpf] = headerFields(delivery.data, 'Received-SPF');
    assert.ok(receivedSpf, 'Received-SPF');
    const spf = parseReceivedSpf(receivedSpf);
    assert.deepEqual([spf.result, spf.pairs['client-ip'], spf.pairs['envelope-from'], spf.pairs.helo], ['pass', CLIENT, 'carol@pass.example', 'client.test']);
    const [authenticationResults] = headerFields(delivery.data, 'Authentication-Results');
    assert.ok(authenticationResults, 'Authentication-Results');
    const results = parseAuthenticationResults(authenticationResults);
    assert.equal(results.authservId, 'mail.example.com');
    assert.deepEqual(results.resinfos.map((resinfo) => `${resinfo.method}=${resinfo.result}`), ['spf=pass', 'dkim=none', 'dmarc=none', 'arc=none']);
    assert.deepEqual(headerFields(delivery.data, 'DKIM-Signature'), [], 'the inbound filter never signs');
    assert.deepEqual(receivedFrom(delivery.data), ['127.0.0.1', CLIENT]);
    await postfix.waitForLog(new RegExp(`postfix/sello-reinject/smtpd\\[\\d+\\]: ${queueId}: client=localhost\\[127\\.0\\.0\\.1\\], orig_client=unknown\\[127\\.0\\.0\\.2\\]$`, 'm'));
  });

  test('SPF fail on port 25 is refused at RCPT with 550 5.7.23, in step through the proxy; postmaster@ is still reachable', async () => {
    const { postfix, port25 } = setup;
    const sent = await sendMail(port25, { from: 'mallory@fail.example', to: ['bob@example.net', 'postmaster@example.net'], data: message('mallory@fail.example', 'bob@example.net', 'topology 3 spf fail') }, { localAddress: CLIENT });
    assert.deepEqual(sent.rcpt, ['550 5.7.23 [SPF] 127.0.0.2 is not allowed to send mail from fail.example', '250 2.1.5 Ok']);
    const delivery = await deliveredAs(postfix, queueIdOf(sent.data));
    assert.equal(delivery.recipient, 'postmaster@example.net');
    assert.equal(parseReceivedSpf(headerFields(delivery.data, 'Received-SPF')[0] ?? '').result, 'fail');
    // Postfix logs a filter's refusal as a warning, not as "NOQUEUE: reject".
    await postfix.waitForLog(/postfix\/smtpd\[\d+\]: warning: proxy 127\.0\.0\.1:\d+ rejected "RCPT TO:<bob@example\.net>": "550 5\.7\.23 \[SPF\] 127\.0\.0\.2 is not allowed to send mail from fail\.example"/);
  });

  test('port 25 never reaches the signing filter: a stranger\'s forged From: example.com is delivered unsigned (and checked)', async () => {
    const delivery = await assertForgeryUnsigned(setup);
    assert.equal(headerFields(delivery.data, 'Received-SPF').length, 1);
  });

  test('the shipped lines are clean: no warning in the maillog but the refusal\'s and sello being down', async () => {
    // The SPF refusal; the sello-down test: smtpd's warning, and the postmaster notice of the failed
    // proxy connection (notify_classes "software"), which has no mailbox here.
    const expected = /: warning: (proxy 127\.0\.0\.1:\d+ rejected "RCPT TO:<bob@example\.net>": "550 5\.7\.23 .*"|connect to proxy filter 127\.0\.0\.1:\d+: Connection refused|\w+: undeliverable postmaster notification discarded)$/;
    assert.deepEqual(await maillogProblems(setup.postfix, expected), []);
  });
});

// ---------- topology 4 ----------

describe('topology 4: sello as Postfix\'s after-queue filter (content_filter, XFORWARD)', suiteOptions(checkPostfix(), checkDkimpy(), checkCyrusSasl()), () => {
  let setup: FilterSetup;

  before(async () => {
    setup = await startFilterTopology('master-after-queue.cf', 'postfix-after-queue.yaml');
  });
  after(async () => {
    await setup?.sello.close();
    await setup?.postfix.close();
  });

  /** Submits as the authenticated user; returns the queue id of the submission smtpd. */
  const submitSigned = async (subject: string): Promise<string> => {
    const sent = await submit(setup.submissionPort, { tls: true, auth: { user: USER.name, password: USER.password }, from: 'alice@example.com', to: 'bob@remote.example', data: message('Alice <alice@example.com>', 'bob@remote.example', subject) });
    assert.equal(sent.auth, '235 2.7.0 Authentication successful');
    return queueIdOf(sent.data);
  };

  /** The queue id the re-injection smtpd gave the message first queued as `firstId`. */
  const reinjectedAs = async (firstId: string): Promise<string> => {
    const log = await setup.postfix.waitForLog(new RegExp(`postfix/sello-reinject/smtpd\\[\\d+\\]: \\w+: client=localhost\\[127\\.0\\.0\\.1\\], orig_queue_id=${firstId}, orig_client=\\S*\\[127\\.0\\.0\\.2\\]`));
    return new RegExp(`sello-reinject/smtpd\\[\\d+\\]: (\\w+): client=localhost\\[127\\.0\\.0\\.1\\], orig_queue_id=${firstId}`).exec(log)?.[1] as string;
  };

  test('outbound: queued, handed to sello by the sello transport, signed (dkimpy), re-injected with the real client in the logs', async () => {
    const { postfix } = setup;
    const filterPort = setup.selloPorts['filter'];
    const firstId = await submitSigned('topology 4 outbound');
    const secondId = await reinjectedAs(firstId);
    await postfix.waitForLog(new RegExp(`postfix/sello/smtp\\[\\d+\\]: ${firstId}: to=<bob@remote\\.example>, relay=127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${filterPort}, .*status=sent \\(250 2\\.0\\.0 OK: queued as ${secondId}\\)`));
    const delivery = await deliveredAs(postfix, secondId);
    assert.equal(delivery.recipient, 'bob@remote.example');
    assert.deepEqual(receivedFrom(delivery.data), ['127.0.0.1', CLIENT], 'the re-injection smtpd\'s Received, then the submission smtpd\'s');
    assert.deepEqual(await dkimpyVerdicts(postfix, delivery), SIGNED);
    assert.equal(withoutPostfixFields(delivery.data).subarray(0, 16).toString(), 'DKIM-Signature: ', 'sello\'s signatures directly below Postfix\'s fields');
  });

  test('sello down: the message waits in Postfix\'s queue, and leaves signed once sello is back', async () => {
    const { postfix } = setup;
    const filterPort = setup.selloPorts['filter'];
    await setup.sello.close();
    const firstId = await submitSigned('topology 4 while sello is down');
    await postfix.waitForLog(new RegExp(`postfix/sello/smtp\\[\\d+\\]: ${firstId}: .*status=deferred \\(connect to 127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${filterPort}: Connection refused\\)`));
    assert.ok((await postfix.queued()).includes(firstId), 'still queued');
    setup.sello = await runSello(setup.selloConfig);
    await postfix.flushQueue();
    const delivery = await deliveredAs(postfix, await reinjectedAs(firstId));
    assert.deepEqual(await dkimpyVerdicts(postfix, delivery), SIGNED);
  });

  test('BDAT, 8BITMIME and SMTPUTF8: an 8-bit message arrives unchanged and signed', async () => {
    assert.match((await submitEnvelope(setup.submissionPort, true, 't4-8bit')).reply, QUEUED);
    await assertEightBitSigned(setup.postfix, 't4-8bit');
  });

  test('DSN survives the second queue trip: the notice says delivered, not relayed', async () => {
    const { ehlo, reply } = await submitEnvelope(setup.submissionPort, true, 't4-dsn');
    assert.match(reply, QUEUED);
    await assertDsnKept(setup.postfix, ehlo, 't4-dsn');
  });

  test('no open relay through any port: submission without AUTH, port 25, sello\'s filter ports, the re-injection port', async () => {
    await assertNoOpenRelay(setup);
  });

  test('port 25 has no content_filter: a stranger\'s forged From: example.com is delivered unsigned', async () => {
    await assertForgeryUnsigned(setup);
  });

  test('the shipped lines are clean: no warning in the maillog', async () => {
    assert.deepEqual(await maillogProblems(setup.postfix), []);
  });
});

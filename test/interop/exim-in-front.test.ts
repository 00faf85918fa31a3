// Topology 1 (PRODUCT.md §1): sello in front of a real Exim. The shipped Exim lines
// (config/exim/main-behind-sello.conf) are included verbatim into Exim's configuration, and sello
// runs the shipped config/examples/in-front-of-exim.yaml with only addresses, ports, the keys dir
// and the DNS server replaced. Exim is set up like Debian's default: relay_from_hosts = 127.0.0.1
// (MAIN_RELAY_NETS) and authenticators that Debian only advertises under TLS unless
// AUTH_SERVER_ALLOW_NOTLS_PASSWORDS is set.
//   Internet (127.0.0.2)    → sello mx         ┐ PROXY v2 from 127.0.0.1
//   mail client (127.0.0.3) → sello submission ┴→ Exim (hosts_proxy) → local maildir / "Internet"
// Exim must see and judge the real client: without PROXY every connection would come from
// 127.0.0.1, which Debian's relay_from_hosts lets relay anywhere (an open relay).

import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { parse } from 'yaml';
import { startSello, type RunningSello } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { verifyWithDkimpy } from '../helpers/dkimpy.ts';
import { eximDkimResults, startExim, withoutEximFields, type Exim } from '../helpers/exim.ts';
import { parseAuthenticationResults, parseReceivedSpf } from '../helpers/header-parsers.ts';
import { makeKeys } from '../helpers/sello.ts';
import { dotStuff, SmtpDialog, sendMail } from '../helpers/smtp-dialog.ts';
import { checkDkimpy, checkExim, freePort, suiteOptions } from '../helpers/tools.ts';

const root = path.join(import.meta.dirname, '../..');
const snippets = path.join(root, 'config/exim');
const exampleFile = path.join(root, 'config/examples/in-front-of-exim.yaml');

type Example = {
  hostname: string;
  listeners: { name: string; role: string; listen: string; trustedNetworks?: string[] }[];
  relay: { target: string; forward: string };
  signing: { keysDir: string; domains: Record<string, string | string[]> };
  inbound?: { localDomains?: string[] };
  dns?: unknown;
};

const INTERNET_CLIENT = '127.0.0.2';
const MAIL_CLIENT = '127.0.0.3';

const message = (from: string, to: string, subject: string) =>
  Buffer.from(`From: ${from}\r\nTo: ${to}\r\nSubject: ${subject}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <${subject.replace(/\W+/g, '-')}@example>\r\n\r\nHello through sello.\r\n`);

/** The whole header fields called `name` in a delivered message (folded lines kept). */
function fields(data: Buffer, name: string): string[] {
  const header = data.toString('latin1').split('\r\n\r\n')[0] ?? '';
  return header.split(/\r\n(?![ \t])/).filter((line) => line.toLowerCase().startsWith(`${name.toLowerCase()}:`));
}

const base64 = (text: string) => Buffer.from(text).toString('base64');

type Submission = { ehlo: string; auth: string; mail?: string; rcpt?: string; data?: string };

/** A mail client: EHLO, STARTTLS, EHLO, AUTH (PLAIN or LOGIN), then one transaction if AUTH succeeded. */
async function submit(
  port: number,
  options: { user: string; password: string; mechanism: 'PLAIN' | 'LOGIN'; from: string; to: string; data: Buffer },
): Promise<Submission> {
  const dialog = await SmtpDialog.connect(port, { localAddress: MAIL_CLIENT });
  try {
    assert.match(await dialog.command('EHLO client.test'), /STARTTLS/);
    await dialog.startTls();
    const ehlo = await dialog.command('EHLO client.test');
    let auth: string;
    if (options.mechanism === 'PLAIN') {
      auth = await dialog.command(`AUTH PLAIN ${base64(`\0${options.user}\0${options.password}`)}`);
    } else {
      auth = await dialog.command('AUTH LOGIN');
      if (auth.startsWith('334')) auth = await dialog.command(base64(options.user));
      if (auth.startsWith('334')) auth = await dialog.command(base64(options.password));
    }
    // MAIL FROM even after a refused AUTH: sello must then refuse it (530).
    const result: Submission = { ehlo, auth, mail: await dialog.command(`MAIL FROM:<${options.from}>`) };
    if (!auth.startsWith('235')) return result;
    result.rcpt = await dialog.command(`RCPT TO:<${options.to}>`);
    if (result.rcpt.startsWith('250')) result.data = await dialog.sendData(options.data);
    return result;
  } finally {
    await dialog.close();
  }
}

/** A mail client on the implicit-TLS port (465, RFC 8314): TLS from the first byte, then SMTP. */
async function implicitTlsClient(port: number): Promise<{ greeting: string; command(line: string): Promise<string>; write(bytes: Buffer): Promise<string>; close(): void }> {
  const raw = net.connect({ port, host: '127.0.0.1', localAddress: MAIL_CLIENT });
  await new Promise<void>((resolve, reject) => {
    raw.once('connect', resolve);
    raw.once('error', reject);
  });
  const socket = tls.connect({ socket: raw, rejectUnauthorized: false });
  let buffer = '';
  let wake: (() => void) | undefined;
  socket.setEncoding('latin1');
  socket.on('data', (data: string) => {
    buffer += data;
    wake?.();
  });
  socket.on('error', () => wake?.());
  socket.on('close', () => wake?.());
  const reply = async (): Promise<string> => {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const match = /^(?:\d{3}-.*\r\n)*\d{3}(?: .*)?\r\n/.exec(buffer);
      if (match) {
        buffer = buffer.slice(match[0].length);
        return match[0].slice(0, -2);
      }
      if (socket.destroyed || Date.now() > deadline) throw new Error(`no reply; unread: ${JSON.stringify(buffer)}`);
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 100);
      });
    }
  };
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', resolve);
    socket.once('error', reject);
  });
  const greeting = await reply();
  return {
    greeting,
    command: (line) => {
      socket.write(`${line}\r\n`);
      return reply();
    },
    write: (bytes) => {
      socket.write(bytes);
      return reply();
    },
    close: () => socket.end('QUIT\r\n'),
  };
}

describe('topology 1: sello in front of Exim (PROXY v2, AUTH passed through)', suiteOptions(checkExim(), checkDkimpy()), () => {
  let exim: Exim;
  let sello: RunningSello;
  let mxPort: number;
  let submissionPort: number;
  let submissionsPort: number;
  let eximPort: number;
  let selectors: string[];
  /** The shipped example with test addresses, as sello runs it. */
  let testConfig: Example;
  let keysDir: string;

  before(async () => {
    const example = parse(await readFile(exampleFile, 'utf8')) as Example;
    // What this topology rests on, as shipped: PROXY v2 to Exim on 127.0.0.1:2525, and no
    // localDomains (Exim, seeing the real client, decides what mx may relay).
    assert.equal(example.relay.forward, 'proxy-v2');
    assert.equal(example.relay.target, 'smtp://127.0.0.1:2525');
    assert.equal(example.inbound?.localDomains, undefined);
    assert.deepEqual(example.listeners.map((l) => l.role), ['mx', 'submission', 'submission']);
    selectors = [example.signing.domains['example.com'] ?? []].flat();
    assert.deepEqual(selectors, ['rsa2026', 'ed2026']);

    const made = await makeKeys(selectors.map((selector) => ({ domain: 'example.com', selector, algorithm: selector.startsWith('ed') ? 'ed25519' : 'rsa' })));
    // Exim's port for sello: PROXY is required there and only there (the harness greets Exim on its other port).
    keysDir = made.keysDir;
    const records = made.records;
    eximPort = await freePort();
    exim = await startExim({
      zone: {
        ...Object.fromEntries([...records].map(([name, value]) => [name, { TXT: [value] }])),
        'pass.example': { TXT: [`v=spf1 ip4:${INTERNET_CLIENT} -all`] },
        'fail.example': { TXT: ['v=spf1 ip4:192.0.2.99 -all'] },
      },
      localDomains: ['example.com'],
      extraPorts: [eximPort],
      mainConfig: [
        `SELLO_EXIM_PORT = ${eximPort}`,
        `.include ${snippets}/main-behind-sello.conf`,
        // Test instrumentation, not shipped: what Exim's proxy variables hold (\$: expanded when the ACL runs).
        'acl_smtp_helo = accept logwrite = PROXY-VARS session=\\$proxy_session client=\\$sender_host_address proxy=\\$proxy_local_address listener=\\$proxy_external_address:\\$proxy_external_port received_port=\\$received_port',
      ],
      users: { alice: 'wonderland' },
      // Debian's plain_server / login_server (conf.d/auth/30_exim4-config_examples): TLS only, unless the macro.
      authenticatorLines: ['.ifndef AUTH_SERVER_ALLOW_NOTLS_PASSWORDS', 'server_advertise_condition = ${if eq{$tls_in_cipher}{}{}{*}}', '.endif'],
      // Debian's default relay_from_hosts (MAIN_RELAY_NETS): the host itself, i.e. sello's address.
      relayFromHosts: ['127.0.0.1'],
      refuse: { nobody: '550 5.1.1 nobody: no such user here' },
      captureRemote: true,
      logSelector: ['+proxy'],
    });

    example.hostname = 'mail.example.com';
    for (const listener of example.listeners) listener.listen = '127.0.0.1:0';
    example.relay.target = `smtp://127.0.0.1:${eximPort}`;
    example.signing.keysDir = keysDir;
    example.dns = { servers: [exim.dns.address], timeout: '1s' };
    testConfig = structuredClone(example);
    sello = await startSello(parseConfig(example), silentLogger());
    mxPort = sello.addresses.get('mx')!.port;
    submissionPort = sello.addresses.get('submission')!.port;
    submissionsPort = sello.addresses.get('submissions')!.port;
  });
  after(async () => {
    await sello?.close();
    await exim?.close();
    if (keysDir) await rm(keysDir, { recursive: true, force: true });
  });

  test('inbound: SPF pass → Exim delivers with Received-SPF and Authentication-Results, and records the real client (127.0.0.2), not sello', async () => {
    await exim.clearMessages();
    const sent = await sendMail(
      mxPort,
      { from: 'alice@pass.example', to: ['bob@example.com', 'nobody@example.com'], data: message('Alice <alice@pass.example>', 'bob@example.com', 'inbound pass') },
      { localAddress: INTERNET_CLIENT, helo: 'client.pass.example' },
    );
    // In step: Exim's own RCPT replies, its queue id in the 250 for DATA.
    assert.deepEqual(sent.rcpt, ['250 Accepted', '550 5.1.1 nobody: no such user here']);
    const queued = /^250 2\.0\.0 OK: queued as (\S+)$/.exec(sent.data ?? '');
    assert.ok(queued, JSON.stringify(sent));
    await exim.waitForMessages(1);
    const [delivery, ...more] = await exim.deliveries();
    assert.equal(more.length, 0);
    assert.equal(delivery!.eximId, queued[1]);
    assert.equal(delivery!.recipient, 'bob@example.com');
    assert.equal(delivery!.clientAddress, INTERNET_CLIENT, 'Exim\'s $sender_host_address is the client sello served');

    const receivedSpf = parseReceivedSpf(fields(delivery!.data, 'Received-SPF')[0]!);
    assert.equal(receivedSpf.result, 'pass');
    assert.equal(receivedSpf.pairs['client-ip'], INTERNET_CLIENT);
    assert.equal(receivedSpf.pairs['envelope-from'], 'alice@pass.example');
    assert.equal(receivedSpf.pairs.helo, 'client.pass.example');
    assert.equal(receivedSpf.pairs.receiver, 'mail.example.com');
    const results = fields(delivery!.data, 'Authentication-Results').map(parseAuthenticationResults);
    assert.equal(results.length, 1);
    assert.equal(results[0]!.authservId, 'mail.example.com');
    assert.deepEqual(results[0]!.resinfos.find((r) => r.method === 'spf'), { method: 'spf', result: 'pass', properties: { 'smtp.mailfrom': 'alice@pass.example' } });

    // Exim's log: the client's address as the host, sello (127.0.0.1) only as the proxy (PRX=,
    // log_selector +proxy); the HELO name is sello's (relay.helo), the client's is in Received-SPF.
    const arrival = (await exim.mainlog()).split('\n').find((line) => line.includes(` ${queued[1]} <= alice@pass.example `));
    assert.match(arrival ?? '', / H=\(mail\.example\.com\) \[127\.0\.0\.2\]:\d+ P=esmtp PRX=127\.0\.0\.1 /, await exim.mainlog());
    // In ACLs: $proxy_external_port is the sello listener the client reached (mx here), $received_port Exim's own.
    assert.match(await exim.mainlog(), new RegExp(`PROXY-VARS session=yes client=127\\.0\\.0\\.2 proxy=127\\.0\\.0\\.1 listener=127\\.0\\.0\\.1:${mxPort} received_port=${eximPort}\n`));
  });

  test('inbound: SPF fail → 550 5.7.23 at RCPT TO from sello; nothing reaches Exim\'s queue', async () => {
    await exim.clearMessages();
    const sent = await sendMail(mxPort, { from: 'mallory@fail.example', to: ['bob@example.com'], data: message('mallory@fail.example', 'bob@example.com', 'spf fail') }, { localAddress: INTERNET_CLIENT });
    assert.equal(sent.mail, '250 Accepted');
    assert.deepEqual(sent.rcpt, [`550 5.7.23 [SPF] ${INTERNET_CLIENT} is not allowed to send mail from fail.example`]);
    assert.equal(sent.dataCommand, undefined);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.deepEqual(await exim.deliveries(), []);
    assert.doesNotMatch(await exim.mainlog(), /<= mallory@fail\.example /);
  });

  test('outbound: a mail client authenticates (AUTH passed through to Exim\'s authenticator) and its mail leaves Exim DKIM-signed; Exim and dkimpy verify', async () => {
    await exim.clearMessages();
    const sent = await submit(submissionPort, {
      user: 'alice',
      password: 'wonderland',
      mechanism: 'PLAIN',
      from: 'alice@example.com',
      to: 'carol@remote.example',
      data: message('Alice <alice@example.com>', 'carol@remote.example', 'outbound signed'),
    });
    assert.match(sent.ehlo, /^250-AUTH PLAIN LOGIN$/m);
    assert.match(sent.auth, /^235 /);
    assert.equal(sent.rcpt, '250 Accepted');
    const queued = /^250 2\.0\.0 OK: queued as (\S+)$/.exec(sent.data ?? '');
    assert.ok(queued, JSON.stringify(sent));
    const [delivered] = await exim.waitForMessages(1, 15_000);
    const [delivery] = await exim.deliveries();
    assert.equal(delivery!.recipient, 'carol@remote.example', 'delivered "to the Internet" (harness captureRemote)');
    assert.equal(delivery!.clientAddress, MAIL_CLIENT);
    const byExim = eximDkimResults(delivered!).map(({ domain, selector, status }) => [domain, selector, status]);
    assert.deepEqual(byExim.sort(), selectors.map((selector) => ['example.com', selector, 'pass']).sort());
    const byDkimpy = await verifyWithDkimpy(withoutEximFields(delivered!), exim.dns);
    assert.deepEqual(byDkimpy.signatures.map((s) => [s.selector, s.ok, s.error]).sort(), selectors.map((selector) => [selector, true, undefined]).sort());
    // Exim authenticated the user itself (A=plain:alice) and logged the real client.
    const arrival = (await exim.mainlog()).split('\n').find((line) => line.includes(` ${queued[1]} <= alice@example.com `));
    assert.match(arrival ?? '', / H=\(mail\.example\.com\) \[127\.0\.0\.3\]:\d+ P=esmtpa A=plain:alice PRX=127\.0\.0\.1 /, await exim.mainlog());
    assert.match(await exim.mainlog(), new RegExp(`PROXY-VARS session=yes client=127\\.0\\.0\\.3 proxy=127\\.0\\.0\\.1 listener=127\\.0\\.0\\.1:${submissionPort} received_port=${eximPort}\n`));
  });

  test('outbound over implicit TLS (the submissions listener, 465): AUTH LOGIN passed through, mail signed and relayed', async () => {
    await exim.clearMessages();
    const client = await implicitTlsClient(submissionsPort);
    try {
      assert.match(client.greeting, /^220 /);
      assert.match(await client.command('EHLO client.test'), /^250-AUTH PLAIN LOGIN$/m);
      assert.equal(await client.command('AUTH LOGIN'), '334 VXNlcm5hbWU6');
      assert.equal(await client.command(base64('alice')), '334 UGFzc3dvcmQ6');
      assert.match(await client.command(base64('wonderland')), /^235 /);
      assert.equal(await client.command('MAIL FROM:<alice@example.com>'), '250 Accepted');
      assert.equal(await client.command('RCPT TO:<dave@remote.example>'), '250 Accepted');
      assert.match(await client.command('DATA'), /^354 /);
      assert.match(await client.write(dotStuff(message('Alice <alice@example.com>', 'dave@remote.example', 'implicit tls'))), /^250 2\.0\.0 OK: queued as /);
    } finally {
      client.close();
    }
    const [delivered] = await exim.waitForMessages(1, 15_000);
    const [delivery] = await exim.deliveries();
    assert.equal(delivery!.recipient, 'dave@remote.example');
    assert.equal(delivery!.clientAddress, MAIL_CLIENT);
    assert.deepEqual(eximDkimResults(delivered!).map((r) => r.status), ['pass', 'pass']);
    assert.match(await exim.mainlog(), / H=\(mail\.example\.com\) \[127\.0\.0\.3\]:\d+ P=esmtpa A=login:alice PRX=127\.0\.0\.1 .* for dave@remote\.example\n/);
  });

  test('outbound: a wrong password is refused by Exim, and sello answers 535 5.7.8; the client cannot send', async () => {
    await exim.clearMessages();
    const sent = await submit(submissionPort, {
      user: 'alice',
      password: 'not-the-password',
      mechanism: 'LOGIN',
      from: 'alice@example.com',
      to: 'carol@remote.example',
      data: message('Alice <alice@example.com>', 'carol@remote.example', 'wrong password'),
    });
    assert.equal(sent.auth, '535 5.7.8 Authentication credentials invalid');
    assert.equal(sent.mail, '530 5.7.0 Authentication required');
    assert.match(await exim.mainlog(), /login authenticator failed for \(mail\.example\.com\) \[127\.0\.0\.3\]/);
    assert.deepEqual(await exim.deliveries(), []);
  });

  test('no open relay: mx → foreign domain refused by Exim (it sees 127.0.0.2, not its relay_from_hosts 127.0.0.1); submission without AUTH → 530 5.7.0; with AUTH → signed and relayed', async () => {
    await exim.clearMessages();
    const viaMx = await sendMail(mxPort, { from: 'alice@pass.example', to: ['victim@remote.example'], data: message('alice@pass.example', 'victim@remote.example', 'relay attempt') }, { localAddress: INTERNET_CLIENT });
    assert.equal(viaMx.mail, '250 Accepted');
    // Exim's reply (the harness ACL's text), not sello's "550 5.7.1 Relaying denied": Exim judged the real client.
    assert.deepEqual(viaMx.rcpt, ['550 5.7.1 relay not permitted']);
    assert.match(await exim.mainlog(), / H=\(mail\.example\.com\) \[127\.0\.0\.2\]:\d+ F=<alice@pass\.example> rejected RCPT <victim@remote\.example>: 550 5\.7\.1 relay not permitted/);

    const unauthenticated = await sendMail(submissionPort, { from: 'alice@example.com', to: ['victim@remote.example'], data: message('alice@example.com', 'victim@remote.example', 'no auth') }, { localAddress: MAIL_CLIENT });
    assert.equal(unauthenticated.mail, '530 5.7.0 Authentication required');
    assert.equal(unauthenticated.dataCommand, undefined);

    const authenticated = await submit(submissionPort, {
      user: 'alice',
      password: 'wonderland',
      mechanism: 'LOGIN',
      from: 'alice@example.com',
      to: 'victim@remote.example',
      data: message('Alice <alice@example.com>', 'victim@remote.example', 'authenticated relay'),
    });
    assert.match(authenticated.data ?? '', /^250 2\.0\.0 OK: queued as /, JSON.stringify(authenticated));
    const [delivered] = await exim.waitForMessages(1, 15_000);
    assert.deepEqual((await exim.deliveries()).map((d) => d.recipient), ['victim@remote.example']);
    assert.deepEqual(eximDkimResults(delivered!).map((r) => r.status), ['pass', 'pass']);
  });

  test('submission trustedNetworks: Exim judges those clients by their own address too — relayed only if Exim trusts them as well (relay_from_hosts)', async () => {
    await exim.clearMessages();
    const config = structuredClone(testConfig);
    for (const listener of config.listeners) if (listener.role === 'submission') listener.trustedNetworks = ['127.0.0.1/32', '127.0.0.4/32'];
    const trusting = await startSello(parseConfig(config), silentLogger());
    try {
      const port = trusting.addresses.get('submission')!.port;
      // 127.0.0.1 (e.g. a web application on this host) is in Exim's relay_from_hosts as well.
      const local = await sendMail(port, { from: 'app@example.com', to: ['erin@remote.example'], data: message('App <app@example.com>', 'erin@remote.example', 'trusted local') }, { localAddress: '127.0.0.1' });
      assert.match(local.data ?? '', /^250 2\.0\.0 OK: queued as /, JSON.stringify(local));
      const [delivered] = await exim.waitForMessages(1, 15_000);
      assert.deepEqual(eximDkimResults(delivered!).map((r) => r.status), ['pass', 'pass']);
      assert.equal((await exim.deliveries())[0]!.clientAddress, '127.0.0.1');
      // 127.0.0.4 is trusted by sello only: sello lets it send without AUTH, Exim refuses to relay for it.
      const other = await sendMail(port, { from: 'app@example.com', to: ['erin@remote.example', 'bob@example.com'], data: message('App <app@example.com>', 'erin@remote.example', 'trusted by sello only') }, { localAddress: '127.0.0.4' });
      assert.equal(other.mail, '250 Accepted');
      assert.deepEqual(other.rcpt, ['550 5.7.1 relay not permitted', '250 Accepted']);
      assert.match(other.data ?? '', /^250 /);
      await exim.waitForMessages(2);
      assert.deepEqual((await exim.deliveries()).map((d) => [d.recipient, d.clientAddress]), [['erin@remote.example', '127.0.0.1'], ['bob@example.com', '127.0.0.4']]);
    } finally {
      await trusting.close();
    }
  });

  test('Exim offers AUTH only on connections that came through sello ($proxy_session): not to a direct client', async () => {
    const direct = await SmtpDialog.connect(exim.port, { localAddress: MAIL_CLIENT });
    try {
      const ehlo = await direct.command('EHLO client.test');
      assert.match(ehlo, /^250[- ]/);
      assert.doesNotMatch(ehlo, /AUTH/);
      assert.match(await direct.command(`AUTH PLAIN ${base64('\0alice\0wonderland')}`), /^503 /);
    } finally {
      await direct.close();
    }
  });
});

// Tests for `sello import opendkim` (src/cli/import-opendkim.ts, opendkim-config.ts): Debian's own
// OpenDKIM configurations (test/fixtures/opendkim/debian) and ones written here — KeyTable with
// SigningTable in file and refile form, "%" and wildcard entries, host lists, Socket and Mode —
// each first accepted by the real `opendkim -n` (Debian's opendkim, installed by .ci/run), then
// converted to a milter listener on OpenDKIM's socket; the YAML must pass sello's own validation
// (check-config, with the keys where OpenDKIM had them), and everything not converted must be on
// stderr, one line each.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { parse } from 'yaml';
import { importOpendkim } from '../../../src/cli/import-opendkim.ts';
import { main } from '../../../src/cli/run.ts';
import { parseConfig } from '../../../src/config/load.ts';
import { generateKey } from '../../../src/signing/keys.ts';
import { runCommand } from '../../helpers/cli.ts';
import { findExecutable, requireTool, type ToolCheck } from '../../helpers/tools.ts';

const debian = join(import.meta.dirname, '..', '..', 'fixtures', 'opendkim', 'debian');

function checkOpendkim(): ToolCheck {
  const binary = findExecutable(['/usr/sbin/opendkim']);
  return { name: 'opendkim', missing: binary ? undefined : '/usr/sbin/opendkim not found', install: 'apt-get install opendkim' };
}

/** Real OpenDKIM's own check of a configuration (opendkim(8) -n: parse, open the tables, exit). */
function assertOpendkimAccepts(file: string): void {
  const run = spawnSync('/usr/sbin/opendkim', ['-n', '-x', file], { encoding: 'utf8', timeout: 10_000 });
  assert.equal(run.status, 0, `opendkim -n rejects ${file}: ${run.stderr}`);
}

async function directory(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'sello-import-opendkim-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A real key file where OpenDKIM keeps them (PKCS#8 here; PKCS#1 works the same), mode 0600. */
async function keyFile(dir: string, name: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, generateKey('rsa'), { mode: 0o600 });
  await chmod(path, 0o600);
  return path;
}

/** The converted YAML must be a valid sello config; with the keys present check-config says OK. */
async function assertSelloAccepts(dir: string, yaml: string, keys: number): Promise<void> {
  const file = join(dir, 'sello.yaml');
  await writeFile(file, yaml);
  const run = await runCommand(main, ['check-config', '--config', file]);
  assert.equal(run.err, '');
  assert.equal(run.out, `${file}: OK (1 listener(s), ${keys} signing key(s))\n`);
  assert.equal(run.code, 0);
}

test("Debian's default /etc/opendkim.conf (signing commented out): a milter on its unix socket, five settings listed", async () => {
  const file = join(debian, 'opendkim.conf');
  const { yaml, notes } = await importOpendkim(file);
  const config = parseConfig(parse(yaml));
  assert.deepEqual(config.signing.domains, {});
  assert.equal(config.signing.expiry, false, 'no SignatureTTL: no x= tag, as OpenDKIM');
  assert.equal(config.logging.format, 'text', 'Syslog yes: text lines for the journal');
  assert.deepEqual(
    config.listeners.map((listener) => [listener.name, listener.role, listener.listen, listener.sign, listener.verify, listener.trustedNetworks]),
    [['milter', 'milter', { host: '', port: 0, path: '/run/opendkim/opendkim.sock' }, undefined, undefined, ['127.0.0.1']]],
    'Socket local:PATH → the same socket; Mode unset = sv: signs and verifies; no InternalHosts: OpenDKIM\'s default 127.0.0.1',
  );
  assert.match(yaml, /^# sello creates the socket \(mode 0660\): its directory must be writable by the sello user/m);
  assert.match(yaml, /^# The milter verifies too \(OpenDKIM Mode v\): unlike OpenDKIM it also checks SPF at RCPT and refuses\n# a fail \(550 5\.7\.23, inbound\.spf\.policy\); set inbound\.spf\.policy\.fail: tag to only record it\.$/m);
  assert.deepEqual(
    notes.map((line) => line.split(': ').slice(0, 2).join(': ')),
    [
      `${file}:13: Canonicalization relaxed/simple`,
      `${file}:30: UserID opendkim`,
      `${file}:31: UMask 007`,
      `${file}:42: PidFile /run/opendkim/opendkim.pid`,
      `${file}:50: TrustAnchorFile /usr/share/dns/root.key`,
    ],
  );
  assert.ok(!yaml.includes('oversign'), 'OversignHeaders From is within sello\'s default oversigned fields');
});

test("Debian's opendkim.conf.simple: Domain, Selector, KeyFile become one signing entry with its key file", async () => {
  const file = join(debian, 'opendkim.conf.simple');
  const { yaml, notes } = await importOpendkim(file);
  const config = parseConfig(parse(yaml));
  assert.deepEqual(config.listeners[0]?.listen, { host: '127.0.0.1', port: 8891 }, 'Socket inet:8891@localhost → inet:127.0.0.1:8891, what smtpd_milters already names');
  assert.deepEqual(config.signing.domains, { localhost: 'default' });
  assert.deepEqual(config.signing.keyFiles, { 'default._domainkey.localhost': '/var/db/dkim/localhost.private' });
  assert.deepEqual(
    notes.map((line) => line.split(': ')[1]),
    ['Canonicalization relaxed/simple', 'ReportAddress postmaster@localhost', 'SendReports yes'],
  );
});

test("Debian's opendkim.conf.simple-verify (Mode v): a verifying milter (sign: false); nothing is signed", async () => {
  const { yaml, notes } = await importOpendkim(join(debian, 'opendkim.conf.simple-verify'));
  const config = parseConfig(parse(yaml));
  assert.deepEqual(config.signing.domains, {});
  assert.deepEqual([config.listeners[0]?.role, config.listeners[0]?.sign, config.listeners[0]?.verify], ['milter', false, undefined]);
  assert.ok(!notes.some((line) => /: Mode /.test(line)), notes.join('\n'));
  assert.match(yaml, /^# The milter verifies too/m, 'a verifying milter says that it refuses SPF fails, which OpenDKIM never did');
});

test('KeyTable + SigningTable files: domains, ".domain" subdomains, "%" key names and d=, host lists, TTL, oversigning', async (t) => {
  if (!requireTool(t, checkOpendkim())) return;
  const dir = await directory(t);
  const mail = await keyFile(dir, 'example.com.mail.private');
  const dated = await keyFile(dir, 'example.org.202611.private');
  const edKey = await keyFile(dir, 'example.org.ed.private');
  const other = await keyFile(dir, 'other.private');
  await writeFile(
    join(dir, 'key.table'),
    [
      '# name                      domain:selector:keyfile',
      `mail._domainkey.example.com example.com:mail:${mail}`,
      `example.org                 %:202611:${join(dir, '%.202611.private')}`,
      `ed.example.org              example.org:ed:${edKey}`,
      `other                       example.net:other:${other}`,
      '',
    ].join('\n'),
  );
  await writeFile(
    join(dir, 'signing.table'),
    [
      'example.com        mail._domainkey.example.com',
      '.example.com       mail._domainkey.example.com',
      'example.org        %',
      'example.org        ed.example.org',
      'bob@example.com    mail._domainkey.example.com',
      'example.info       other',
      'example.biz        missing',
      '',
    ].join('\n'),
  );
  await writeFile(join(dir, 'TrustedHosts'), '127.0.0.1\n::1\nlocalhost\n192.168.0.0/16\nmail.example.com\n');
  const conf = join(dir, 'opendkim.conf');
  await writeFile(
    conf,
    [
      'Syslog            no',
      'Canonicalization  relaxed/relaxed',
      'Mode              sv',
      `KeyTable          file:${join(dir, 'key.table')}`,
      `SigningTable      file:${join(dir, 'signing.table')}`,
      'MultipleSignatures yes',
      `InternalHosts     file:${join(dir, 'TrustedHosts')}`,
      `ExternalIgnoreList file:${join(dir, 'TrustedHosts')}`,
      'OversignHeaders   From,List-Id,Sender',
      'SignatureTTL      86400',
      'Nameservers       127.0.0.53,192.0.2.53',
      'Socket            inet:8891@localhost',
      '',
    ].join('\n'),
  );
  assertOpendkimAccepts(conf);

  const { yaml, notes } = await importOpendkim(conf);
  const written = parse(yaml);
  assert.deepEqual(written.signing.domains, { 'example.com': 'mail', '*.example.com': 'mail', 'example.org': ['202611', 'ed'] });
  assert.deepEqual(written.signing.keyFiles, {
    'mail._domainkey.example.com': mail,
    '202611._domainkey.example.org': dated, // "%" in the key file name is the From domain
    'ed._domainkey.example.org': edKey,
  });
  assert.ok(yaml.includes('      - "202611"\n'), 'a numeric selector is written quoted');
  assert.equal(written.signing.expiry, '86400s');
  assert.deepEqual(written.signing.oversign.slice(-2), ['List-Id', 'Sender'], 'oversigning is never weaker than sello\'s default');
  assert.deepEqual(written.listeners[0], { name: 'milter', role: 'milter', listen: 'inet:127.0.0.1:8891', trustedNetworks: ['127.0.0.1', '::1', '192.168.0.0/16'] }, 'the milter judges the real client: the whole InternalHosts list');
  assert.deepEqual(written.dns, { servers: ['127.0.0.53:53', '192.0.2.53:53'] });
  assert.equal(written.logging, undefined, 'Syslog no: JSON logs stay');

  const table = join(dir, 'signing.table');
  const hosts = join(dir, 'TrustedHosts');
  assert.deepEqual(notes, [
    `${hosts}:5: mail.example.com: trustedNetworks takes addresses and networks, not host names: add the host's address`,
    `${conf}:8: ExternalIgnoreList file:${hosts}: only silences OpenDKIM's "external host tried to send mail as" log line; sello logs no such line, and signs for InternalHosts (trustedNetworks) and logged-in senders only`,
    `${table}:5: bob@example.com mail._domainkey.example.com: sello signs by From domain, not per address; give the domain its own entry if every address of it should be signed`,
    `${table}:6: example.info other: signs mail from example.info with d=example.net; sello signs with the From domain itself, so this entry is left out`,
    `${table}:7: example.biz missing: no key "missing" in the KeyTable`,
  ]);
  await assertSelloAccepts(dir, yaml, 3);
});

test('a refile SigningTable: *@domain, *@*.domain, "%" keys; per-address, catch-all and odd globs listed', async (t) => {
  if (!requireTool(t, checkOpendkim())) return;
  const dir = await directory(t);
  const keys = { com: await keyFile(dir, 'example.com.private'), net: await keyFile(dir, 'example.net.private') };
  await writeFile(join(dir, 'key.table'), `com example.com:s2026:${keys.com}\nexample.net %:s2026:${join(dir, '%.private')}\n`);
  await writeFile(
    join(dir, 'signing.table'),
    [
      '*@example.com      com',
      '*@*.example.com    com    @example.com',
      '*@example.net      %',
      'alice@example.org  com',
      '*@*example.com     com',
      '*@example.com      com',
      '*                  com',
      '',
    ].join('\n'),
  );
  const conf = join(dir, 'opendkim.conf');
  await writeFile(conf, `KeyTable ${join(dir, 'key.table')}\nSigningTable refile:${join(dir, 'signing.table')}\nSocket inet:8891@localhost\nCanonicalization relaxed/relaxed\n`);
  assertOpendkimAccepts(conf);

  const { yaml, notes } = await importOpendkim(conf);
  const written = parse(yaml);
  assert.deepEqual(written.signing.domains, { 'example.com': 's2026', '*.example.com': 's2026', 'example.net': 's2026' });
  assert.deepEqual(written.signing.keyFiles, { 's2026._domainkey.example.com': keys.com, 's2026._domainkey.example.net': keys.net });
  const table = join(dir, 'signing.table');
  assert.deepEqual(notes, [
    `${table}:2: *@*.example.com com    @example.com: the signer @example.com (i=) is not set by sello; signatures carry no i= (RFC 6376 §3.5 default: @d=)`,
    `${table}:4: alice@example.org com: sello signs by From domain, not per address; give the domain its own entry if every address of it should be signed`,
    `${table}:5: *@*example.com com: only *@domain and *@*.domain patterns have a sello equivalent`,
    `${table}:6: *@example.com com: example.com already signs with s2026; without MultipleSignatures OpenDKIM applies only the first match`,
    `${table}:7: * com: signs mail from any domain; sello signs only the domains listed in signing.domains (add each one)`,
  ]);
  await assertSelloAccepts(dir, yaml, 2);
});

test('Domain list with SubDomains: each domain and its subdomains, one key file', async (t) => {
  if (!requireTool(t, checkOpendkim())) return;
  const dir = await directory(t);
  const key = await keyFile(dir, 'default.private');
  const conf = join(dir, 'opendkim.conf');
  await writeFile(conf, `Domain example.com,example.org\nSelector default\nKeyFile ${key}\nSubDomains yes\nSocket inet:8891@localhost\nRequireSafeKeys false\n`);
  assertOpendkimAccepts(conf);
  const { yaml } = await importOpendkim(conf);
  const written = parse(yaml);
  assert.deepEqual(written.signing.domains, { 'example.com': 'default', '*.example.com': 'default', 'example.org': 'default', '*.example.org': 'default' });
  assert.deepEqual(written.signing.keyFiles, { 'default._domainkey.example.com': key, 'default._domainkey.example.org': key });
  assert.equal(written.signing.allowUnsafeKeys, true, 'RequireSafeKeys false');
  await assertSelloAccepts(dir, yaml, 2); // two domains, one key each: the wildcard entries reuse them
});

test('Socket forms → the milter listener on the same socket; Mode s → verify: false; InternalHosts networks kept, names and exclusions listed', async (t) => {
  if (!requireTool(t, checkOpendkim())) return;
  const dir = await directory(t);
  const key = await keyFile(dir, 'default.private');
  const cases: { socket: string; mode: string; listen: string; sign: boolean | undefined; verify: boolean | undefined; note?: RegExp }[] = [
    { socket: 'inet:8891@127.0.0.1', mode: 's', listen: 'inet:127.0.0.1:8891', sign: undefined, verify: false },
    { socket: 'inet6:8892@[::1]', mode: 'v', listen: 'inet:[::1]:8892', sign: false, verify: undefined },
    { socket: 'local:/var/spool/postfix/opendkim/opendkim.sock', mode: 'sv', listen: 'unix:/var/spool/postfix/opendkim/opendkim.sock', sign: undefined, verify: undefined },
    { socket: 'inet:12301', mode: 'vs', listen: 'inet:127.0.0.1:12301', sign: undefined, verify: undefined, note: /Socket inet:12301: sello's milter listens on loopback or a unix socket only .*: inet:127\.0\.0\.1:12301; the MTA must run on this machine$/ },
    { socket: 'inet:8891@192.0.2.25', mode: 's', listen: 'inet:127.0.0.1:8891', sign: undefined, verify: false, note: /Socket inet:8891@192\.0\.2\.25: sello's milter listens on loopback or a unix socket only/ },
  ];
  for (const [index, item] of cases.entries()) {
    const conf = join(dir, `opendkim-${index}.conf`);
    await writeFile(
      conf,
      [`Socket ${item.socket}`, `Mode ${item.mode}`, 'Domain example.com', 'Selector default', `KeyFile ${key}`, 'InternalHosts 127.0.0.1, 10.0.0.0/8, [2001:db8::]/32, !10.1.2.3, relay.example.com', 'Canonicalization relaxed/relaxed', 'AuthservID mx.example.com', 'RequireSafeKeys false', ''].join('\n'),
    );
    assertOpendkimAccepts(conf);
    const { yaml, notes } = await importOpendkim(conf);
    const written = parse(yaml);
    assert.deepEqual(written.listeners, [
      { name: 'milter', role: 'milter', listen: item.listen, ...(item.sign === undefined ? {} : { sign: item.sign }), ...(item.verify === undefined ? {} : { verify: item.verify }), trustedNetworks: ['127.0.0.1', '10.0.0.0/8', '2001:db8::/32'] },
    ], item.socket);
    assert.deepEqual(written.inbound, { authservId: 'mx.example.com' });
    assert.equal(/^# The milter verifies too/m.test(yaml), item.verify !== false, 'the SPF remark only where the milter verifies');
    const hostNotes = notes.filter((line) => line.includes(': InternalHosts: '));
    assert.deepEqual(hostNotes, [
      `${conf}:6: InternalHosts: !10.1.2.3: trustedNetworks has no exclusions: leave the host out of the networks around it (list smaller networks)`,
      `${conf}:6: InternalHosts: relay.example.com: trustedNetworks takes addresses and networks, not host names: add the host's address`,
    ]);
    const socketNotes = notes.filter((line) => line.includes(': Socket '));
    assert.equal(socketNotes.length, item.note ? 1 : 0, notes.join('\n'));
    if (item.note) assert.match(socketNotes[0] ?? '', item.note);
    await assertSelloAccepts(dir, yaml, 1);
  }
});

test('the command: YAML on stdout, one "not converted:" line per item on stderr; a missing file is one line, exit 1', async (t) => {
  const ok = await runCommand(main, ['import', 'opendkim', join(debian, 'opendkim.conf.simple')]);
  assert.equal(ok.code, 0);
  assert.match(ok.out, /^# sello configuration converted from .*opendkim\.conf\.simple/);
  assert.equal(ok.err.split('\n').filter(Boolean).length, 3);
  assert.ok(ok.err.split('\n').filter(Boolean).every((line) => line.startsWith('not converted: ')));

  const dir = await directory(t);
  const missing = await runCommand(main, ['import', 'opendkim', join(dir, 'nope.conf')]);
  assert.deepEqual([missing.code, missing.out, missing.err], [1, '', `sello import: cannot read ${join(dir, 'nope.conf')}: no such file\n`]);
  const conf = join(dir, 'opendkim.conf');
  await writeFile(conf, `KeyTable file:${join(dir, 'absent.table')}\nSigningTable refile:${join(dir, 'absent.table')}\n`);
  const absentTable = await runCommand(main, ['import', 'opendkim', conf]);
  assert.deepEqual([absentTable.code, absentTable.err], [1, `sello import: cannot read ${join(dir, 'absent.table')}: no such file\n`]);

  const unknown = await runCommand(main, ['import', 'rspamd']);
  assert.equal(unknown.code, 2);
  assert.match(unknown.err, /^sello import: cannot import "rspamd": the one source is opendkim/);
});

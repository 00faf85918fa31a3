// The site around a harness Postfix (test/helpers/postfix.ts) that the Postfix interop tests
// share: Cyrus SASL with a sasldb for the users (Debian's layout), a self-signed certificate for
// the submission port, and "the Internet" (remote.example delivered into the harness maildir).
// Must not: start Postfix or sello (the tests do).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { selfSignedCertificate } from '../../src/smtp/tls.ts';
import type { Postfix } from './postfix.ts';
import { SYSTEM_PYTHON, type ToolCheck } from './tools.ts';

/** main.cf of the site: Cyrus SASL (Debian layout), a certificate, and the stand-in Internet. */
export const SITE_MAIN_CF = [
  'smtpd_sasl_type = cyrus',
  'smtpd_sasl_path = smtpd',
  'smtpd_sasl_local_domain = $myhostname',
  'smtpd_tls_cert_file = $config_directory/tls-cert.pem',
  'smtpd_tls_key_file = $config_directory/tls-key.pem',
  // "The Internet": mail for remote.example (and for example.com, the users' own domain, not
  // hosted here: the DSNs sent to them) lands in the harness maildir. Both stay foreign domains
  // for smtpd (not in mydestination, virtual_mailbox_domains or relay_domains), so
  // reject_unauth_destination refuses them to anyone not allowed to relay.
  'transport_maps = inline:{remote.example=virtual:, example.com=virtual:}',
];

/**
 * The files SITE_MAIN_CF names, in Postfix's config directory: Cyrus reads
 * $config_directory/sasl/smtpd.conf (Debian's /etc/postfix/sasl/smtpd.conf); the users are in a
 * sasldb (Berkeley DB hash, as saslpasswd2 writes it: key "user\0realm\0userPassword"), written
 * with the system Python's dbm.ndbm, which is Berkeley DB on Debian (Debian's Postfix looks only
 * there and in /usr/lib/sasl: cyrus_sasl_config_path had no effect). Postfix is restarted, since
 * its smtpd processes read the SASL configuration when they start.
 */
export async function setUpSite(postfix: Postfix, users: Record<string, string>): Promise<void> {
  const etc = path.join(postfix.dir, 'etc');
  const sasl = path.join(etc, 'sasl');
  await mkdir(sasl, { mode: 0o755 });
  const sasldb = path.join(sasl, 'sasldb2');
  await writeFile(path.join(sasl, 'smtpd.conf'), `pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: ${sasldb}.db\nmech_list: PLAIN LOGIN\n`, { mode: 0o644 });
  const script = [
    'import dbm.ndbm, json, sys',
    "users = json.load(sys.stdin)",
    "db = dbm.ndbm.open(sys.argv[1], 'c', 0o644)",
    "for name, password in users.items(): db[name.encode() + b'\\0' + sys.argv[2].encode() + b'\\0userPassword'] = password.encode()",
    'db.close()',
  ].join('\n');
  const written = spawnSync(SYSTEM_PYTHON, ['-c', script, sasldb, postfix.hostname], { input: JSON.stringify(users), encoding: 'utf8' });
  assert.equal(written.status, 0, `writing the sasldb failed: ${written.stderr}`);
  const certificate = selfSignedCertificate(postfix.hostname);
  await writeFile(path.join(etc, 'tls-cert.pem'), certificate.cert, { mode: 0o644 });
  await writeFile(path.join(etc, 'tls-key.pem'), certificate.key, { mode: 0o600 });
  await postfix.stop();
  await postfix.start();
}

/** Cyrus SASL's PLAIN, LOGIN and sasldb plugins, and a Python whose dbm.ndbm writes Berkeley DB. */
export function checkCyrusSasl(): ToolCheck {
  const install = 'libsasl2-modules (PLAIN, LOGIN), libsasl2-modules-db (sasldb), python3';
  const pluginDirs = ['/usr/lib/sasl2', ...readdirSync('/usr/lib').filter((name) => name.endsWith('-linux-gnu')).map((name) => `/usr/lib/${name}/sasl2`)];
  const plugins = ['libplain.so', 'liblogin.so', 'libsasldb.so'];
  if (!pluginDirs.some((dir) => plugins.every((plugin) => existsSync(path.join(dir, plugin))))) {
    return { name: 'cyrus-sasl', missing: `no ${plugins.join(', ')} in ${pluginDirs.join(' or ')}`, install };
  }
  const ndbm = spawnSync(SYSTEM_PYTHON, ['-c', "import dbm.ndbm; assert 'Berkeley' in dbm.ndbm.library"], { encoding: 'utf8' });
  if (ndbm.status !== 0) return { name: 'cyrus-sasl', missing: `${SYSTEM_PYTHON}: no Berkeley DB dbm.ndbm`, install };
  return { name: 'cyrus-sasl', missing: undefined, install };
}

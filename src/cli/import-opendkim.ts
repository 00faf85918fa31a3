// `sello import opendkim [/etc/opendkim.conf]`: print the sello YAML that does what an OpenDKIM
// configuration does — a milter listener on OpenDKIM's own Socket, so the MTA's milter line stays
// as it is — and list on stderr, one line each, every setting or table entry it cannot express.
// Owns: the OpenDKIM → sello mapping (docs/debian.md "Coming from OpenDKIM").
// Must not: copy, move or rewrite keys (they are referenced where they are, signing.keyFiles),
// write any file, or call process.exit.

import { stringify } from 'yaml';
import { isIP } from 'node:net';
import { DEFAULT_OVERSIGNED_FIELDS, isLoopback } from '../config/schema.ts';
import { UsageError } from '../errors.ts';
import { validateDomain, validateSelector } from '../signing/keys.ts';
import { parseCommandArgs } from './args.ts';
import type { Command } from './io.ts';
import { isTrue, readDataset, readOpendkimConfig, type Dataset, type OpendkimConfig, type OpendkimSetting } from './opendkim-config.ts';

export const importUsage = `usage: sello import opendkim [FILE]

Reads an OpenDKIM configuration (default /etc/opendkim.conf) with its KeyTable, SigningTable and
host lists, and prints the equivalent sello configuration (YAML) on stdout: a milter listener on
OpenDKIM's Socket (Mode s: sign only, v: verify only), so the MTA's smtpd_milters or
INPUT_MAIL_FILTER line stays as it is. Keys stay where they are (signing.keyFiles). Everything
sello cannot express is listed on stderr, one line each.
Check the result with: sello check-config --config FILE

options:
  -h, --help          show this help
`;

export const DEFAULT_OPENDKIM_CONFIG = '/etc/opendkim.conf';

/** OpenDKIM's usual socket (Debian's opendkim.conf.simple, Postfix's and Sendmail's how-tos). */
const DEFAULT_MILTER_LISTEN = 'inet:127.0.0.1:8891';

/** opendkim.conf(5) InternalHosts: "If not specified, the default of 127.0.0.1 is applied." */
const OPENDKIM_DEFAULT_INTERNAL_HOSTS = ['127.0.0.1'];

export interface ImportResult {
  /** The sello configuration, YAML with a comment header. */
  yaml: string;
  /** What could not be expressed, one line each: "<file>:<line>: <setting>: <why>". */
  notes: string[];
}

interface TableKey {
  /** d=, or "%" for the From domain. */
  domain: string;
  selector: string;
  keyFile: string;
}

/** Settings that need nothing in sello: logging is always on (one record per transaction). */
const CONVERTED_SILENTLY = new Set(['syslogsuccess', 'logwhy']);

/** Settings with no sello equivalent, and why (the note says what to do instead). */
const NO_EQUIVALENT: Record<string, string> = {
  userid: 'sello runs as the user its systemd unit names (User=)',
  umask: 'sello makes its unix socket mode 0660: put the MTA\'s user in sello\'s group (docs/milter.md)',
  pidfile: 'systemd tracks the process',
  trustanchorfile: 'sello does not validate DNSSEC itself; point dns.servers at a validating resolver',
  sendreports: 'sello sends no failure reports',
  reportaddress: 'sello sends no failure reports',
  autorestart: 'systemd restarts sello (Restart=)',
  background: 'systemd runs sello in the foreground',
  peerlist: 'only the MTA reaches sello: its milter listens on loopback or a unix socket',
  externalignorelist: 'only silences OpenDKIM\'s "external host tried to send mail as" log line; sello logs no such line, and signs for InternalHosts (trustedNetworks) and logged-in senders only',
};

export async function importOpendkim(path: string): Promise<ImportResult> {
  const config = await readOpendkimConfig(path);
  const notes: string[] = [];
  const handled = new Set<string>();
  const setting = (name: string): OpendkimSetting | undefined => {
    handled.add(name);
    return config.settings.get(name);
  };
  const note = (where: OpendkimSetting | string, why: string) => {
    notes.push(typeof where === 'string' ? `${where}: ${why}` : `${config.path}:${where.line}: ${where.name} ${where.value}: ${why}`);
  };

  const signing = await signingTable(config, setting, note);
  const listen = milterListen(setting('socket'), note);
  const listener: Record<string, unknown> = { name: 'milter', role: 'milter', listen };
  // opendkim.conf(5) Mode: "s" signer, "v" verifier, default "sv"; the milter's sign/verify default to true.
  const mode = setting('mode');
  const modes = (mode?.value ?? 'sv').toLowerCase();
  if (mode && !/^[sv]+$/.test(modes)) note(mode, 'expected s, v or sv; sello signs and verifies');
  else if (!modes.includes('v')) listener.verify = false;
  else if (!modes.includes('s')) listener.sign = false;
  // The milter's client is the real client ({client_addr}): the whole InternalHosts list applies.
  listener.trustedNetworks = await internalHosts(config, setting, note);

  const output: Record<string, unknown> = {
    listeners: [listener],
    signing: signing.section,
  };

  const authservId = setting('authservid');
  // opendkim.conf(5) AuthservID: "HOSTNAME" means the host name, which is sello's default too.
  if (authservId && authservId.value !== 'HOSTNAME') {
    if (/^[A-Za-z0-9.-]+$/.test(authservId.value)) output.inbound = { authservId: authservId.value };
    else note(authservId, 'inbound.authservId takes a host name');
  }

  const canonicalization = setting('canonicalization');
  if (canonicalization && canonicalization.value.toLowerCase() !== 'relaxed/relaxed' && canonicalization.value.toLowerCase() !== 'relaxed') {
    // OpenDKIM's default is simple/simple; sello always signs relaxed/relaxed (README "What sello does").
    note(canonicalization, 'sello always signs with relaxed/relaxed canonicalization (RFC 6376 §3.4), which survives the re-wrapping simple does not');
  }

  const oversign = setting('oversignheaders');
  if (oversign) {
    const fields = datasetKeys(await readDataset(oversign.value, config.path), oversign, note);
    const extra = fields.filter((field) => !DEFAULT_OVERSIGNED_FIELDS.some((known) => known.toLowerCase() === field.toLowerCase()));
    // Never weaker than sello's default list (which already oversigns From, Debian's setting).
    if (extra.length > 0) signing.section.oversign = [...DEFAULT_OVERSIGNED_FIELDS, ...extra];
  }

  const signHeaders = setting('signheaders');
  if (signHeaders) {
    note(signHeaders, 'sello signs its own list of fields (signing.headers, README); set it there if you need another');
  }

  const ttl = setting('signaturettl');
  // opendkim.conf(5): without SignatureTTL no x= is added; sello's default is 7 days.
  if (!ttl || /^0*$/.test(ttl.value)) signing.section.expiry = false;
  else if (/^\d+$/.test(ttl.value)) signing.section.expiry = `${Number(ttl.value)}s`;
  else note(ttl, 'not a number of seconds');

  const safeKeys = setting('requiresafekeys');
  if (safeKeys && !isTrue(safeKeys.value)) signing.section.allowUnsafeKeys = true;

  const nameservers = setting('nameservers');
  if (nameservers) {
    const servers = nameservers.value.split(/[\s,]+/).filter(Boolean);
    const good = servers.filter((server) => /^[0-9.]+$/.test(server) || /^[0-9a-f:]+$/i.test(server));
    if (good.length > 0) output.dns = { servers: good.map((server) => (server.includes(':') ? `[${server}]:53` : `${server}:53`)) };
    if (good.length !== servers.length) note(nameservers, 'only IP addresses are kept as dns.servers');
  }

  const syslog = setting('syslog');
  // Under systemd stdout goes to the journal, as syslog did; text lines read like syslog's.
  if (syslog && isTrue(syslog.value)) output.logging = { format: 'text' };

  for (const [name, item] of config.settings) {
    if (handled.has(name) || CONVERTED_SILENTLY.has(name)) continue;
    note(item, NO_EQUIVALENT[name] ?? 'no sello equivalent');
  }

  const header = [
    `# sello configuration converted from ${config.path} by \`sello import opendkim\`.`,
    '# Keys stay where OpenDKIM kept them (signing.keyFiles): sello must be able to read them, and',
    '# refuses key files open to group or others (chmod 600, owner: the sello user).',
    `# The milter listens where OpenDKIM did (${listen}): the MTA's milter line stays as it is (docs/milter.md).`,
    ...(listener.verify === false
      ? []
      : [
          '# The milter verifies too (OpenDKIM Mode v): unlike OpenDKIM it also checks SPF at RCPT and refuses',
          '# a fail (550 5.7.23, inbound.spf.policy); set inbound.spf.policy.fail: tag to only record it.',
        ]),
    ...(listen.startsWith('unix:')
      ? ['# sello creates the socket (mode 0660): its directory must be writable by the sello user and', "# the MTA's user (postfix) in sello's group (adduser postfix sello)."]
      : []),
    `# Check it with: sello check-config --config FILE${notes.length > 0 ? ` — ${notes.length} setting(s) were not converted (listed on stderr)` : ''}`,
  ];
  return { yaml: `${header.join('\n')}\n${stringify(output, { lineWidth: 0 })}`, notes: inFileOrder(notes) };
}

/** Notes without repeats, sorted by file, then line ("<file>:<line>: …"), so they read top to bottom. */
function inFileOrder(notes: string[]): string[] {
  // A host list named by both InternalHosts and ExternalIgnoreList is reported once.
  const position = (text: string) => {
    const match = /^(.*?):(\d+): /.exec(text);
    return match ? { file: match[1] as string, line: Number(match[2]) } : { file: text, line: 0 };
  };
  return [...new Set(notes)].sort((a, b) => {
    const left = position(a);
    const right = position(b);
    return left.file === right.file ? left.line - right.line : left.file < right.file ? -1 : 1;
  });
}

type Note = (where: OpendkimSetting | string, why: string) => void;

/** The signing section: KeyTable + SigningTable, or Domain/Selector/KeyFile (opendkim.conf(5) Mode). */
async function signingTable(config: OpendkimConfig, setting: (name: string) => OpendkimSetting | undefined, note: Note): Promise<{ section: Record<string, unknown> }> {
  const domains = new Map<string, string[]>();
  const keyFiles = new Map<string, string>();
  const multiple = isTrue(setting('multiplesignatures')?.value ?? 'no');
  const subDomains = setting('subdomains');
  const keyTableSetting = setting('keytable');
  const signingTableSetting = setting('signingtable');
  const domainSetting = setting('domain');
  const selectorSetting = setting('selector');
  const keyFileSetting = setting('keyfile');

  /** Adds one (From-domain pattern → key) pair; false (with a note) when sello cannot express it. */
  const add = (pattern: string, key: TableKey, where: string): boolean => {
    const wildcard = pattern.startsWith('*.');
    let fromDomain: string;
    let signingDomain: string;
    let selector: string;
    try {
      fromDomain = validateDomain(wildcard ? pattern.slice(2) : pattern);
      signingDomain = key.domain === '%' ? fromDomain : validateDomain(key.domain);
      selector = validateSelector(key.selector);
    } catch (error) {
      note(where, error instanceof Error ? error.message : String(error));
      return false;
    }
    if (signingDomain !== fromDomain) {
      // sello signs with d= the From domain (or its parent for "*.domain"): DMARC alignment by construction.
      note(where, `signs mail from ${pattern} with d=${signingDomain}; sello signs with the From domain itself${wildcard ? ` (here ${fromDomain})` : ''}, so this entry is left out`);
      return false;
    }
    if (wildcard && key.domain === '%') {
      note(where, `OpenDKIM signs each subdomain with its own d=; sello signs *.${fromDomain} with d=${fromDomain} (publish the record at ${selector}._domainkey.${fromDomain})`);
    }
    if (!/^\.{0,2}\//.test(key.keyFile)) {
      note(where, 'the key is written into the table itself; save it to a file (mode 0600) and reference that file');
      return false;
    }
    const keyFile = key.keyFile.replaceAll('%', fromDomain);
    const patternKey = wildcard ? `*.${fromDomain}` : fromDomain;
    const selectors = domains.get(patternKey) ?? [];
    if (selectors.length > 0 && !multiple) {
      note(where, `${patternKey} already signs with ${selectors.join(', ')}; without MultipleSignatures OpenDKIM applies only the first match`);
      return false;
    }
    const recordName = `${selector}._domainkey.${signingDomain}`;
    const known = keyFiles.get(recordName);
    if (known !== undefined && known !== keyFile) {
      note(where, `${recordName} is already the key ${known}; one record name cannot have two keys`);
      return false;
    }
    if (!selectors.includes(selector)) selectors.push(selector);
    domains.set(patternKey, selectors);
    keyFiles.set(recordName, keyFile);
    return true;
  };

  if (keyTableSetting || signingTableSetting) {
    for (const ignored of [domainSetting, selectorSetting, keyFileSetting]) {
      if (ignored) note(ignored, 'ignored by OpenDKIM too when a KeyTable is set');
    }
    if (!keyTableSetting || !signingTableSetting) {
      note((keyTableSetting ?? signingTableSetting) as OpendkimSetting, 'a KeyTable needs a SigningTable and the other way round (SetupPolicyScript is not read); nothing is signed');
    } else {
      const keyTable = await readDataset(keyTableSetting.value, config.path);
      const signingTableData = await readDataset(signingTableSetting.value, config.path);
      const keys = keyTableEntries(keyTable, keyTableSetting, note);
      if (signingTableData.kind === 'unsupported') {
        note(signingTableSetting, `"${signingTableData.scheme}:" data sets are not read; export the table to a file`);
      } else {
        for (const entry of signingTableData.entries) {
          const source = signingTableData.kind === 'list' ? `${config.path}:${signingTableSetting.line}` : `${signingTableData.path}:${entry.line}`;
          const where = `${source}: ${entry.key} ${entry.value}`.trimEnd();
          const [keyName, signer] = entry.value.split(/\s+/);
          if (!keyName) {
            note(where, 'no key name');
            continue;
          }
          const pattern = signingTableData.kind === 'refile' ? refilePattern(entry.key) : filePattern(entry.key);
          if (typeof pattern !== 'string') {
            note(where, pattern.why);
            continue;
          }
          // "%" as the key name is the From domain (opendkim.conf(5) SigningTable).
          const name = keyName === '%' ? (pattern.startsWith('*.') ? undefined : pattern) : keyName;
          const key = name === undefined ? undefined : keys.get(name);
          if (!key) {
            note(where, name === undefined ? 'a "%" key name with a wildcard pattern names a key per subdomain; sello needs one entry per domain' : `no key "${name}" in the KeyTable`);
            continue;
          }
          if (!add(pattern, key, where)) continue;
          if (signer) note(where, `the signer ${signer} (i=) is not set by sello; signatures carry no i= (RFC 6376 §3.5 default: @d=)`);
        }
      }
    }
  } else if (domainSetting || selectorSetting || keyFileSetting) {
    if (!domainSetting || !selectorSetting || !keyFileSetting) {
      note((domainSetting ?? selectorSetting ?? keyFileSetting) as OpendkimSetting, 'signing needs Domain, Selector and KeyFile together; nothing is signed');
    } else {
      const domainsData = await readDataset(domainSetting.value, config.path);
      for (const domain of datasetKeys(domainsData, domainSetting, note)) {
        const key = { domain: '%', selector: selectorSetting.value, keyFile: keyFileSetting.value };
        const where = `${config.path}:${domainSetting.line}: Domain ${domain}`;
        add(domain, key, where);
        if (subDomains && isTrue(subDomains.value)) add(`*.${domain}`, { ...key, domain }, `${config.path}:${subDomains.line}: SubDomains for ${domain}`);
      }
    }
  }

  const section: Record<string, unknown> = {
    keysDir: '/var/lib/sello/keys',
    domains: Object.fromEntries([...domains].map(([pattern, selectors]) => [pattern, selectors.length === 1 ? selectors[0] : selectors])),
  };
  if (keyFiles.size > 0) section.keyFiles = Object.fromEntries(keyFiles);
  return { section };
}

/** KeyTable: "name domain:selector:keyfile" (opendkim.conf(5) KeyTable). */
function keyTableEntries(dataset: Dataset, where: OpendkimSetting, note: Note): Map<string, TableKey> {
  const keys = new Map<string, TableKey>();
  if (dataset.kind === 'unsupported') {
    note(where, `"${dataset.scheme}:" data sets are not read; export the table to a file`);
    return keys;
  }
  for (const entry of dataset.entries) {
    const fields = /^([^:]+):([^:]+):(.+)$/.exec(entry.value);
    if (!fields) {
      note(`${dataset.kind === 'list' ? `${where.name}` : `${dataset.path}:${entry.line}`}: ${entry.key} ${entry.value}`.trimEnd(), 'expected "name domain:selector:keyfile"');
      continue;
    }
    keys.set(entry.key, { domain: fields[1] as string, selector: fields[2] as string, keyFile: fields[3] as string });
  }
  return keys;
}

/** The keys of a list or file data set (host lists, header names, domains). */
function datasetKeys(dataset: Dataset, where: OpendkimSetting, note: Note): string[] {
  if (dataset.kind === 'unsupported') {
    note(where, `"${dataset.scheme}:" data sets are not read`);
    return [];
  }
  return dataset.entries.map((entry) => entry.key);
}

type Pattern = string | { why: string };

const notPerAddress = 'sello signs by From domain, not per address; give the domain its own entry if every address of it should be signed';
const catchAll = 'signs mail from any domain; sello signs only the domains listed in signing.domains (add each one)';

/**
 * A SigningTable key in a file (not a refile): "example.com", ".example.com" (its subdomains),
 * "user@example.com" or "user@.example.com" (one address), "*" (anything). opendkim.conf(5).
 */
function filePattern(key: string): Pattern {
  if (key === '*') return { why: catchAll };
  if (key.includes('@')) return { why: notPerAddress };
  if (key.startsWith('.')) return `*${key.toLowerCase()}`;
  return key.toLowerCase();
}

/** A refile pattern, matched against the From address: "*@example.com", "*@*.example.com", "*". */
function refilePattern(pattern: string): Pattern {
  if (pattern === '*' || pattern === '*@*') return { why: catchAll };
  const at = pattern.lastIndexOf('@');
  if (at === -1) return { why: 'a pattern without "@" is matched against the whole address; write it as *@domain' };
  if (pattern.slice(0, at) !== '*') return { why: notPerAddress };
  const host = pattern.slice(at + 1).toLowerCase();
  if (host.startsWith('*.') && !/[*?[\]]/.test(host.slice(2))) return host;
  if (!/[*?[\]]/.test(host)) return host;
  return { why: 'only *@domain and *@*.domain patterns have a sello equivalent' };
}

/**
 * InternalHosts → the milter listener's trustedNetworks: clients whose mail is signed rather than
 * verified, as in OpenDKIM. The milter judges the real client (the MTA's {client_addr}), so every
 * address and network of the list applies; without the setting, OpenDKIM's default 127.0.0.1.
 * Host names and exclusions ("!") have no trustedNetworks form: each is listed on stderr.
 */
async function internalHosts(config: OpendkimConfig, setting: (name: string) => OpendkimSetting | undefined, note: Note): Promise<string[]> {
  const item = setting('internalhosts');
  if (!item) return [...OPENDKIM_DEFAULT_INTERNAL_HOSTS];
  const dataset = await readDataset(item.value, config.path);
  if (dataset.kind === 'unsupported') {
    note(item, `"${dataset.scheme}:" data sets are not read; list the networks in trustedNetworks`);
    return [];
  }
  const networks: string[] = [];
  for (const { key: entry, line } of dataset.entries) {
    const where = `${dataset.kind === 'list' ? `${config.path}:${item.line}: ${item.name}` : `${dataset.path}:${line}`}: ${entry}`;
    const host = entry === 'localhost' ? '127.0.0.1' : entry.replace(/^\[([^\]]*)\](\/\d+)?$/, '$1$2'); // IPv6 in brackets, as PeerList (opendkim.conf(5))
    const [address = '', prefix] = host.split('/');
    const bits = prefix === undefined ? undefined : Number(prefix);
    const family = isIP(address);
    if (entry.startsWith('!')) {
      note(where, 'trustedNetworks has no exclusions: leave the host out of the networks around it (list smaller networks)');
    } else if (family === 0) {
      note(where, "trustedNetworks takes addresses and networks, not host names: add the host's address");
    } else if (bits !== undefined && !(/^\d+$/.test(prefix ?? '') && bits <= (family === 4 ? 32 : 128))) {
      note(where, 'not a network prefix length');
    } else if (!networks.includes(host)) {
      networks.push(host);
    }
  }
  return networks;
}

type Setting = OpendkimSetting | undefined;

/**
 * OpenDKIM's Socket (opendkim.conf(5), libmilter smfi_setconn): "inet:PORT@HOST", "inet6:PORT@HOST",
 * "local:PATH" / "unix:PATH" or a bare path → the milter listener's `listen`, same port or path, so
 * the MTA's milter line is unchanged. A milter listener listens on loopback or a socket file only
 * (schema.ts reportMilterRules): any other host (or none: every interface) becomes 127.0.0.1.
 */
function milterListen(socket: Setting, note: Note): string {
  if (!socket) return DEFAULT_MILTER_LISTEN;
  const value = socket.value.trim();
  const unix = /^(?:(?:local|unix):)?(\/.+)$/.exec(value);
  if (unix) return `unix:${unix[1] as string}`;
  const inet = /^inet6?:(\d{1,5})(?:@(?:\[([^\]]+)\]|(.+)))?$/.exec(value);
  const port = inet ? Number(inet[1]) : NaN;
  if (!inet || port < 1 || port > 65535) {
    note(socket, `not an OpenDKIM socket (inet:PORT@HOST, inet6:PORT@HOST, local:PATH); sello listens on ${DEFAULT_MILTER_LISTEN}`);
    return DEFAULT_MILTER_LISTEN;
  }
  const host = inet[2] ?? inet[3];
  if (host === 'localhost') return `inet:127.0.0.1:${port}`;
  if (host !== undefined && isLoopback(host)) return isIP(host) === 6 ? `inet:[${host}]:${port}` : `inet:${host}:${port}`;
  note(socket, `sello's milter listens on loopback or a unix socket only (the MTA vouches for the client in macros, so nobody else may connect): inet:127.0.0.1:${port}; the MTA must run on this machine`);
  return `inet:127.0.0.1:${port}`;
}

export const importCommand: Command = async (args, io) => {
  const { values, positionals } = parseCommandArgs('import', { args, allowPositionals: true, options: {} });
  if (values.help) {
    io.stdout(importUsage);
    return 0;
  }
  const [source, file, ...rest] = positionals;
  if (source !== 'opendkim') {
    throw new UsageError(`${source === undefined ? 'say what to import' : `cannot import ${JSON.stringify(source)}`}: the one source is opendkim (see sello import --help)`);
  }
  if (rest.length > 0) throw new UsageError('expected at most one file (see sello import --help)');
  const result = await importOpendkim(file ?? DEFAULT_OPENDKIM_CONFIG);
  io.stdout(result.yaml);
  for (const line of result.notes) io.stderr(`not converted: ${line}\n`);
  return 0;
};

// `sello import opendkim [/etc/opendkim.conf]`: print the sello YAML that does what an OpenDKIM
// configuration does, and list on stderr, one line each, every setting or table entry it cannot
// express. Owns: the OpenDKIM → sello mapping (docs/debian.md "Migrating from OpenDKIM").
// Must not: copy, move or rewrite keys (they are referenced where they are, signing.keyFiles),
// write any file, or call process.exit.

import { stringify } from 'yaml';
import { DEFAULT_OVERSIGNED_FIELDS } from '../config/schema.ts';
import { UsageError } from '../errors.ts';
import { validateDomain, validateSelector } from '../signing/keys.ts';
import { parseCommandArgs } from './args.ts';
import type { Command } from './io.ts';
import { isTrue, readDataset, readOpendkimConfig, type Dataset, type OpendkimConfig, type OpendkimSetting } from './opendkim-config.ts';

export const importUsage = `usage: sello import opendkim [FILE]

Reads an OpenDKIM configuration (default /etc/opendkim.conf) with its KeyTable, SigningTable and
host lists, and prints the equivalent sello configuration (YAML) on stdout. Keys stay where they
are (signing.keyFiles). Everything sello cannot express is listed on stderr, one line each.
Check the result with: sello check-config --config FILE

options:
  -h, --help          show this help
`;

export const DEFAULT_OPENDKIM_CONFIG = '/etc/opendkim.conf';

/** Where the MTA hands mail to sello and takes it back (config/examples/content-filter.yaml, docs/debian.md). */
const FILTER_LISTEN = '127.0.0.1:10025';
const REINJECT_TARGET = 'smtp://127.0.0.1:10026';

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
  umask: 'sello makes no socket or files for the MTA',
  pidfile: 'systemd tracks the process',
  trustanchorfile: 'sello does not validate DNSSEC itself; point dns.servers at a validating resolver',
  sendreports: 'sello sends no failure reports',
  reportaddress: 'sello sends no failure reports',
  autorestart: 'systemd restarts sello (Restart=)',
  background: 'systemd runs sello in the foreground',
  peerlist: 'the MTA decides which mail reaches sello (docs/debian.md)',
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
  const listener: Record<string, unknown> = { name: 'filter', role: 'filter', listen: FILTER_LISTEN, sign: true };
  const trusted = await trustedLoopback(config, setting, note);
  if (trusted.length > 0) listener.trustedNetworks = trusted;

  const mode = setting('mode');
  if (mode && !mode.value.includes('s')) {
    note(mode, 'OpenDKIM only verified; the filter listener below signs what the MTA hands it. Incoming mail is verified by an mx listener (README "Putting sello in front of Exim or Postfix")');
  }

  const socket = setting('socket');
  if (socket) {
    note(socket, `sello is not a milter: the MTA hands outgoing mail to the filter listener on ${FILTER_LISTEN} and takes it back from sello on ${REINJECT_TARGET.slice('smtp://'.length)} (Exim router and transport, Postfix content_filter: docs/debian.md)`);
  }

  const output: Record<string, unknown> = {
    listeners: [listener],
    relay: { target: REINJECT_TARGET, starttls: 'never' },
    signing: signing.section,
  };

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
    `# The MTA hands outgoing mail to the filter listener and takes it back on ${REINJECT_TARGET.slice('smtp://'.length)} (docs/debian.md).`,
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
 * InternalHosts and ExternalIgnoreList → the filter listener's trustedNetworks: its loopback
 * entries (who may hand mail to sello for signing). Other hosts and networks are the MTA's to
 * judge — it decides which mail reaches sello — so each is listed on stderr.
 */
async function trustedLoopback(config: OpendkimConfig, setting: (name: string) => OpendkimSetting | undefined, note: Note): Promise<string[]> {
  const networks: string[] = [];
  for (const name of ['internalhosts', 'externalignorelist']) {
    const item = setting(name);
    if (!item) continue;
    const dataset = await readDataset(item.value, config.path);
    if (dataset.kind === 'unsupported') {
      note(item, `"${dataset.scheme}:" data sets are not read`);
      continue;
    }
    for (const { key: entry, line } of dataset.entries) {
      const host = entry === 'localhost' ? '127.0.0.1' : entry.replace(/^\[(.*)\]$/, '$1');
      const loopback = /^127\.\d+\.\d+\.\d+(\/(8|9|[12]\d|3[0-2]))?$/.test(host) || /^::1(\/128)?$/.test(host);
      if (loopback) {
        if (!networks.includes(host)) networks.push(host);
        continue;
      }
      note(
        `${dataset.kind === 'list' ? `${config.path}:${item.line}: ${item.name}` : `${dataset.path}:${line}`}: ${entry}`,
        entry.startsWith('!')
          ? 'exclusions are the MTA\'s to make: keep such mail away from sello in its router'
          : 'the filter listener hears only the MTA on loopback; mail from this host is signed if the MTA relays for it (Exim dc_relay_nets, Postfix mynetworks), docs/debian.md',
      );
    }
  }
  // The MTA itself must stay trusted (it connects from 127.0.0.1 or ::1).
  if (networks.length > 0 && !networks.some((network) => network.startsWith('127.'))) networks.unshift('127.0.0.1');
  return networks;
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

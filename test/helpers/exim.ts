// A real Exim (Debian exim4-daemon-heavy) as the downstream MTA in tests, with a private config,
// spool, logs and maildir in a temp dir, listening on 127.0.0.1:<port> (never 25).
// Owns: generating that config, running Exim as a child we can kill, reading back delivered
// messages byte-exact, and Exim's own per-signature DKIM verdicts (X-Exim-DKIM header + mainlog).
// Must not: touch the host's Exim, /etc/resolv.conf (it is replaced only inside a private mount
// namespace), or leave processes behind: every Exim process group is killed on stop(), on
// close(), and on process exit. Needs root (unshare -m, port 53 on a private loopback address);
// gate tests with requireTool(t, checkExim()) / suiteOptions(checkExim()). The process-group,
// temp-dir, DNS, maildir and polling plumbing it shares with postfix.ts is in mta-harness.ts.
//
// DNS: Exim resolves through the system resolver (resolv.conf, port 53 only). startExim runs Exim
// as `unshare --mount` with a private resolv.conf bind-mounted over /etc/resolv.conf, naming a
// random 127.53.x.y address where a test DNS server (dns-server.ts) listens on port 53. Tests get
// that server as `exim.dns` and can point sello at it too (exim.dns.address).

import { spawnSync } from 'node:child_process';
import { chmod, chown, copyFile, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { DnsServer, Zone } from './dns-server.ts';
import { clearMaildir, closeOnce, firstCopies, mtaDaemon, openMtaWorkspace, readMaildir, readTextFile, startOrClose, startPort53DnsServer, waitForMessageCount, type MtaHarness, type MtaOptions } from './mta-harness.ts';
import { findExecutable, freePort } from './tools.ts';

export type EximOptions = MtaOptions & {
  /** Domains Exim accepts mail for; default ['example.net']. Everything else: 550 relay not permitted. */
  localDomains?: string[];
  /** Recipients refused at RCPT time, by local part ("bob") or address ("bob@example.net"), with
   *  the full reply, e.g. '550 5.1.1 no such user' (5xx → deny, 4xx → defer). */
  refuse?: Record<string, string>;
  /** Refuse every message at end of DATA with this reply, e.g. '554 5.7.1 content rejected'. */
  refuseData?: string;
  /** TCP port on 127.0.0.1; default a free one. */
  port?: number;
  /** Extra main-section config lines (e.g. 'hosts_proxy = 127.0.0.1', 'chunking_advertise_hosts ='). */
  mainConfig?: string[];
  /** More ports Exim listens on (on 127.0.0.1), e.g. a re-injection port. */
  extraPorts?: number[];
  /** Router lines placed before the harness's own routers (e.g. '.include …/router.conf'). */
  routers?: string[];
  /** Transport lines added to the transports section. */
  transports?: string[];
  /** AUTH PLAIN/LOGIN users (offered without TLS); an authenticated client may relay anywhere. */
  users?: Record<string, string>;
  /** Extra lines inside each of the harness's authenticators (PLAIN and LOGIN), e.g. Debian's
   *  TLS-only `server_advertise_condition` wrapped in `.ifndef AUTH_SERVER_ALLOW_NOTLS_PASSWORDS`. */
  authenticatorLines?: string[];
  /** Items added to the harness's log_selector (Exim refuses a second log_selector line), e.g. '+proxy'. */
  logSelector?: string[];
  /** Hosts that may relay to any domain without AUTH (e.g. ['127.0.0.1']). */
  relayFromHosts?: string[];
  /** Accept mail for non-local domains that an ACL let through and keep it in the maildir, as if
   *  delivered to the Internet (there is none here). Default false. */
  captureRemote?: boolean;
  /** Retry rules placed before the harness's own catch-all (e.g. an '.include' of a shipped rule),
   *  and the catch-all itself; default '*   *   F,10m,5s'. */
  retryRules?: string[];
  retryDefault?: string;
  /** Run a queue runner every so often, as Debian's QUEUEINTERVAL does (e.g. '30s'); default none. */
  queueInterval?: string;
};

/** One delivery: one recipient's copy of an accepted message. */
export type EximDelivery = {
  eximId: string;
  sender: string;
  recipient: string;
  clientAddress: string;
  helo: string;
  /** The message exactly as Exim delivered it: CRLF line ends, X-Exim-DKIM fields on top, then
   *  the bytes the client sent after dot-unstuffing (Exim adds no Received: field here). */
  data: Buffer;
};

export type EximDkimResult = {
  domain: string;
  selector: string;
  algorithm: string;
  /** Key size in bits as Exim saw it ('' if the key never loaded). */
  bits: string;
  /** pass | fail | invalid | none (Exim's $dkim_verify_status). */
  status: string;
  /** e.g. bodyhash_mismatch, signature_incorrect, pubkey_unavailable, pubkey_syntax, or ''. */
  reason: string;
};

/** messages() and deliveries() give the exact bytes Exim delivered (see EximDelivery.data). */
export interface Exim extends MtaHarness<EximDelivery> {
  /** Temp dir with config, spool, log/, mail/. */
  readonly dir: string;
  mainlog(): Promise<string>;
  paniclog(): Promise<string>;
}

const EXIM_DKIM_FIELD = 'X-Exim-DKIM';
const ENVELOPE_PREFIX = 'HARNESS-ENVELOPE ';

// ---------- DNS for Exim ----------

/**
 * A DNS server Exim can use: port 53 (the only port resolv.conf knows) on a random 127.53.x.y,
 * so parallel test files do not collide and nothing real listens there.
 */
export function startEximDnsServer(zone: Zone = {}): Promise<DnsServer> {
  return startPort53DnsServer(zone);
}

// ---------- user and config ----------

type EximAccount = { user: string; group: string; uid: number; gid: number };

function eximAccount(): EximAccount {
  for (const user of ['Debian-exim', 'exim', 'mail']) {
    const passwd = spawnSync('getent', ['passwd', user], { encoding: 'utf8' });
    if (passwd.status !== 0) continue;
    const fields = passwd.stdout.trim().split(':');
    const uid = Number(fields[2]);
    const gid = Number(fields[3]);
    const groupEntry = spawnSync('getent', ['group', String(gid)], { encoding: 'utf8' });
    const group = groupEntry.status === 0 ? (groupEntry.stdout.split(':')[0] ?? user) : user;
    return { user, group, uid, gid };
  }
  throw new Error('exim harness: no Debian-exim / exim / mail user on this system');
}

/** An Exim list item may not contain the separator; we use '<; ' lists and refuse ';'. */
function eximListItem(value: string, what: string): string {
  if (/[;\n\r]/.test(value) || value.trim() !== value || value === '') throw new Error(`exim harness: bad ${what}: ${JSON.stringify(value)}`);
  return value;
}

function replyVerb(reply: string, what: string): 'deny' | 'defer' {
  if (/[\r\n]/.test(reply)) throw new Error(`exim harness: ${what} reply must be one line`);
  if (/^5\d\d /.test(reply)) return 'deny';
  if (/^4\d\d /.test(reply)) return 'defer';
  throw new Error(`exim harness: ${what} reply must start with a 4xx or 5xx code and a space: ${JSON.stringify(reply)}`);
}

/** Exim string-expansion safe literal (config values are expanded: escape $ and \). */
function eximLiteral(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\$/g, '\\$');
}

function refuseFile(refuse: Record<string, string>): string {
  // lsearch: "quoted key": value — keys are case-insensitive there.
  return Object.entries(refuse)
    .map(([key, reply]) => {
      replyVerb(reply, `refuse[${key}]`);
      if (/[\r\n"\\]/.test(key)) throw new Error(`exim harness: refuse key ${JSON.stringify(key)} not supported`);
      return `"${key}": ${reply}\n`;
    })
    .join('');
}

type ConfigInput = {
  dir: string;
  port: number;
  account: EximAccount;
  eximPath: string;
  localDomains: string[];
  refuseData: string | undefined;
  mainConfig: string[];
  extraPorts: number[];
  routers: string[];
  transports: string[];
  authenticate: boolean;
  authenticatorLines: string[];
  logSelector: string[];
  relayFromHosts: string[];
  captureRemote: boolean;
  retryRules: string[];
  retryDefault: string;
};

function eximConfig(input: ConfigInput): string {
  const { dir, port, account } = input;
  const b64 = (variable: string): string => `\${base64:${variable}}`;
  const dkimLine = `${EXIM_DKIM_FIELD}: d=$dkim_domain s=$dkim_selector a=$dkim_algo b=$dkim_key_length status=$dkim_verify_status reason=$dkim_verify_reason`;
  const dataVerb = input.refuseData === undefined ? undefined : replyVerb(input.refuseData, 'refuseData');
  const authenticatorLines = input.authenticatorLines.map((line) => `  ${line}\n`).join('');
  return `# Generated by test/helpers/exim.ts for one test run. Not for production.
primary_hostname = exim.test
qualify_domain = exim.test
exim_path = ${input.eximPath}
exim_user = ${account.user}
exim_group = ${account.group}
deliver_drop_privilege = true
keep_environment =
spool_directory = ${dir}/spool
log_file_path = ${dir}/log/%slog
pid_file_path = ${dir}/exim.pid
log_selector = +dkim_verbose +received_recipients +smtp_confirmation +incoming_port +smtp_protocol_error +smtp_syntax_error${input.logSelector.map((item) => ` ${item}`).join('')}

daemon_smtp_ports = ${[port, ...input.extraPorts].join(' : ')}
local_interfaces = <; 127.0.0.1
disable_ipv6 = true
tls_advertise_hosts =

# No lookups that would hang or leave loopback (the test DNS server answers the rest).
host_lookup =
rfc1413_hosts =
rfc1413_query_timeout = 0s
dns_dnssec_ok = 0
dns_retrans = 1s
dns_retry = 1

# Deliver what the client sent: no Received:, keep every header the client gave.
received_header_text =
delivery_date_remove = false
envelope_to_remove = false
return_path_remove = false

domainlist local_domains = <; ${input.localDomains.map((domain) => eximListItem(domain, 'local domain')).join(' ; ')}

acl_smtp_rcpt = acl_check_rcpt
acl_smtp_dkim = acl_check_dkim
acl_smtp_data = acl_check_data
# Run the DKIM ACL for every signature (RFC 6376 §6.1: each signature is evaluated on its own).
dkim_verify_signers = $dkim_signers

${input.mainConfig.join('\n')}

begin acl

acl_check_rcpt:
${input.authenticate ? '  accept  authenticated = *\n' : ''}${input.relayFromHosts.length ? `  accept  hosts = <; ${input.relayFromHosts.join(' ; ')}\n` : ''}  deny    domains = !+local_domains
          message = 550 5.7.1 relay not permitted
  warn    set acl_m_refusal = \${lookup{$local_part@$domain}lsearch{${dir}/refuse}{$value}{\${lookup{$local_part}lsearch{${dir}/refuse}}}}
  defer   condition = \${if match{$acl_m_refusal}{\\N^4\\N}}
          message = $acl_m_refusal
  deny    condition = \${if match{$acl_m_refusal}{\\N^5\\N}}
          message = $acl_m_refusal
  accept

acl_check_dkim:
  # $dkim_signers lists identities (i=) as well as domains; record each signature once.
  accept  condition = \${if eqi{$dkim_cur_signer}{$dkim_domain}}
          add_header = :at_start:${dkimLine}
          logwrite = ${dkimLine}
  accept

acl_check_data:
${dataVerb ? `  ${dataVerb}  message = ${eximLiteral(input.refuseData ?? '')}\n` : ''}  accept

begin routers

${input.routers.join('\n')}
${input.captureRemote ? 'fake_internet:\n  driver = accept\n  domains = ! +local_domains\n  transport = capture\n' : ''}
capture:
  driver = accept
  domains = +local_domains
  caseful_local_part = true
  transport = capture

begin transports

capture:
  driver = appendfile
  directory = ${dir}/mail
  maildir_format
  create_directory
  user = ${account.user}
  group = ${account.group}
  mode = 0644
  use_crlf
  message_prefix = ${ENVELOPE_PREFIX}id=${b64('$message_exim_id')} from=${b64('$sender_address')} to=${b64('$local_part@$domain')} ip=${b64('$sender_host_address')} helo=${b64('$sender_helo_name')}\\r\\n
  message_suffix =

${input.transports.join('\n')}
${input.authenticate ? `begin authenticators

plain:
  driver = plaintext
  public_name = PLAIN
  server_prompts = :
  server_condition = \${if and{{!eq{$auth2}{}}{eq{$auth3}{\${lookup{$auth2}lsearch{${dir}/users}}}}}}
  server_set_id = $auth2
${authenticatorLines}
login:
  driver = plaintext
  public_name = LOGIN
  server_prompts = Username:: : Password::
  server_condition = \${if and{{!eq{$auth1}{}}{eq{$auth2}{\${lookup{$auth1}lsearch{${dir}/users}}}}}}
  server_set_id = $auth1
${authenticatorLines}` : ''}
begin retry
${input.retryRules.join('\n')}
${input.retryDefault}
`;
}

// ---------- reading the maildir ----------

function parseDelivery(raw: Buffer): EximDelivery {
  const end = raw.indexOf('\r\n');
  const first = raw.subarray(0, end).toString('latin1');
  if (end < 0 || !first.startsWith(ENVELOPE_PREFIX)) throw new Error('exim harness: delivered file without envelope line');
  const fields = new Map<string, string>();
  for (const item of first.slice(ENVELOPE_PREFIX.length).split(' ')) {
    const equals = item.indexOf('=');
    fields.set(item.slice(0, equals), Buffer.from(item.slice(equals + 1), 'base64').toString('utf8'));
  }
  return {
    eximId: fields.get('id') ?? '',
    sender: fields.get('from') ?? '',
    recipient: fields.get('to') ?? '',
    clientAddress: fields.get('ip') ?? '',
    helo: fields.get('helo') ?? '',
    data: raw.subarray(end + 2),
  };
}

/** Exim's verdicts from the X-Exim-DKIM fields at the top of a delivered message, in field order. */
export function eximDkimResults(message: Buffer): EximDkimResult[] {
  const results: EximDkimResult[] = [];
  const headerEnd = message.indexOf('\r\n\r\n');
  const header = message.subarray(0, headerEnd < 0 ? message.length : headerEnd).toString('latin1');
  for (const line of header.split('\r\n')) {
    const match = /^X-Exim-DKIM: d=(\S*) s=(\S*) a=(\S*) b=(\S*) status=(\S*) reason=(.*)$/.exec(line);
    if (!match) continue;
    results.push({
      domain: match[1] ?? '',
      selector: match[2] ?? '',
      algorithm: match[3] ?? '',
      bits: match[4] ?? '',
      status: match[5] ?? '',
      reason: match[6] ?? '',
    });
  }
  return results;
}

/** The message as the client sent it: the delivered bytes minus the X-Exim-DKIM fields on top. */
export function withoutEximFields(message: Buffer): Buffer {
  let offset = 0;
  const prefix = Buffer.from(`${EXIM_DKIM_FIELD}: `);
  while (message.subarray(offset, offset + prefix.length).equals(prefix)) {
    const end = message.indexOf('\r\n', offset);
    if (end < 0) break;
    offset = end + 2;
  }
  return message.subarray(offset);
}

// ---------- included files ----------

/**
 * Exim reads its configuration, and every file it .includes, as Debian-exim. A checkout in a
 * private directory (a 0700 home, /root, mktemp -d) is closed to that user, so each included file
 * is copied into the harness's own directory (readable by Exim) and the line points at the copy.
 * The copies are byte-for-byte the shipped files: the tests still exercise them verbatim.
 */
async function privateIncludes(lines: readonly string[], includeDir: string, copies: Map<string, string>): Promise<string[]> {
  const out: string[] = [];
  for (const line of lines) {
    const match = /^(\s*\.include(?:_if_exists)?\s+)(\S+)\s*$/.exec(line);
    if (!match) {
      out.push(line);
      continue;
    }
    const source = match[2] as string;
    let copy = copies.get(source);
    if (copy === undefined) {
      copy = path.join(includeDir, `${String(copies.size + 1)}-${path.basename(source)}`);
      await mkdir(includeDir, { recursive: true, mode: 0o755 });
      await chmod(includeDir, 0o755);
      await copyFile(source, copy);
      await chmod(copy, 0o644);
      copies.set(source, copy);
    }
    out.push(`${match[1] as string}${copy}`);
  }
  return out;
}

// ---------- start ----------

export async function startExim(options: EximOptions = {}): Promise<Exim> {
  const eximPath = findExecutable(['/usr/sbin/exim4', '/usr/sbin/exim']);
  if (!eximPath) throw new Error('exim harness: no /usr/sbin/exim4 (install exim4-daemon-heavy)');
  if (process.getuid?.() !== 0) throw new Error('exim harness: needs root (unshare -m, port 53 on loopback)');

  const host = '127.0.0.1';
  const port = options.port ?? (await freePort(host));
  const account = eximAccount();
  const workspace = await openMtaWorkspace('exim', { zone: options.zone, dnsServer: options.dnsServer });
  const { dir, dns } = workspace;
  const configPath = path.join(dir, 'exim.conf');
  try {
    await mkdir(path.join(dir, 'spool'));
    await mkdir(path.join(dir, 'log'));
    await mkdir(path.join(dir, 'mail'));
    await writeFile(path.join(dir, 'refuse'), refuseFile(options.refuse ?? {}));
    await writeFile(path.join(dir, 'users'), Object.entries(options.users ?? {}).map(([user, password]) => `${user}: ${password}\n`).join(''));
    const copies = new Map<string, string>();
    const includeDir = path.join(dir, 'include');
    const local = (lines: readonly string[] | undefined) => privateIncludes(lines ?? [], includeDir, copies);
    await writeFile(
      configPath,
      eximConfig({
        dir,
        port,
        account,
        eximPath,
        localDomains: options.localDomains ?? ['example.net'],
        refuseData: options.refuseData,
        mainConfig: await local(options.mainConfig),
        extraPorts: options.extraPorts ?? [],
        routers: await local(options.routers),
        transports: await local(options.transports),
        authenticate: Object.keys(options.users ?? {}).length > 0,
        authenticatorLines: options.authenticatorLines ?? [],
        logSelector: options.logSelector ?? [],
        relayFromHosts: options.relayFromHosts ?? [],
        captureRemote: options.captureRemote ?? false,
        retryRules: await local(options.retryRules),
        retryDefault: options.retryDefault ?? '*   *   F,10m,5s',
      }),
    );
    // Exim runs as its own user throughout; it owns everything in the dir except its config.
    for (const sub of ['spool', 'log', 'mail']) await chown(path.join(dir, sub), account.uid, account.gid);
    await chmod(configPath, 0o644);
  } catch (error) {
    await workspace.discard();
    throw error;
  }

  const readLog = (name: string): Promise<string> => readTextFile(path.join(dir, 'log', name));
  const diagnostics = async (): Promise<string> => {
    const mainlog = (await readLog('mainlog')).split('\n').slice(-30).join('\n');
    return `--- exim stderr ---\n${daemon.stderr()}\n--- paniclog ---\n${await readLog('paniclog')}\n--- mainlog (tail) ---\n${mainlog}`;
  };
  // Drop to the Exim user (Exim gives up root anyway when given -C by a non-root caller); -bdf:
  // the daemon stays in the foreground, and its session and delivery children join its group.
  const daemon = mtaDaemon({
    name: 'exim',
    resolvConf: workspace.resolvConf,
    command: ['setpriv', `--reuid=${account.uid}`, `--regid=${account.gid}`, '--clear-groups', eximPath, '-C', configPath, '-bdf', ...(options.queueInterval ? [`-q${options.queueInterval}`] : [])],
    host,
    listeners: [{ port }],
    startTimeoutMs: options.startTimeoutMs ?? 10_000,
    diagnostics,
  });

  const maildir = path.join(dir, 'mail');
  const deliveries = async (): Promise<EximDelivery[]> => (await readMaildir(maildir)).map(parseDelivery);
  const messages = async (): Promise<Buffer[]> => firstCopies(await deliveries(), (delivery) => delivery.eximId);

  const exim: Exim = {
    host,
    port,
    dns,
    dir,
    messages,
    deliveries,
    waitForMessages: (n, timeoutMs = 10_000) => waitForMessageCount('exim', messages, n, timeoutMs, diagnostics),
    clearMessages: () => clearMaildir(maildir),
    mainlog: () => readLog('mainlog'),
    paniclog: () => readLog('paniclog'),
    stop: daemon.stop,
    start: daemon.start,
    close: closeOnce(daemon, workspace),
  };
  return startOrClose(exim, options.cleanupWith);
}

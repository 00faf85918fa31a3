// A real Postfix (Debian's package, unpacked by test/interop/setup-postfix.sh because it conflicts
// with exim4) as the MTA around sello in tests: private main.cf/master.cf, queue, maillog and
// maildir in a temp dir; smtpd listeners on 127.0.0.1:<port> (never 25); no chroot.
// Owns: generating that config, running Postfix's master as a child we can kill, reading back
// delivered messages (CRLF restored) and the maillog, and the queue (what is waiting, flush).
// Must not: touch the host's /etc/postfix, /etc/resolv.conf (replaced only inside a private mount
// namespace) or any system MTA, or leave processes behind: the master's process group (every
// Postfix daemon) is killed on stop(), on close(), and on process exit. Needs root (master drops
// to the postfix user itself; unshare -m; port 53 on loopback): gate tests with
// requireTool(t, checkPostfix()) / suiteOptions(checkPostfix()). The process-group, temp-dir,
// DNS, maildir and polling plumbing it shares with exim.ts is in mta-harness.ts.
//
// DNS: Postfix resolves through the system resolver (resolv.conf, port 53 only), e.g. for the
// client's PTR name. startPostfix runs the master under `unshare --mount` with a private
// resolv.conf naming a random 127.53.x.y where a test DNS server listens on port 53 (the same
// arrangement as exim.ts; see startPort53DnsServer in mta-harness.ts): `postfix.dns`.
//
// Bytes: Postfix stores lines without their ends and writes LF on delivery; messages() turns
// every LF back into CRLF, so a message sent with CRLF line ends reads back byte-exact (a bare LF
// sent by the client cannot be told apart and reads back as CRLF). On top of what the client sent
// Postfix adds Return-Path, X-Original-To, Delivered-To (delivery) and one Received per smtpd
// hop; withoutPostfixFields() removes exactly those. Header rewriting and added
// Date/Message-ID/From are off (local_header_rewrite_clients empty).

import { spawnSync } from 'node:child_process';
import { chmod, chown, copyFile, mkdir, readdir, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { clearMaildir, closeOnce, firstCopies, mtaDaemon, openMtaWorkspace, poll, readMaildir, readTextFile, startOrClose, waitForMessageCount, type MtaHarness, type MtaOptions } from './mta-harness.ts';
import { freePort, postfixPaths } from './tools.ts';

/** The myhostname of every harness Postfix: its banner, and the "by" of its Received fields. */
export const POSTFIX_HOSTNAME = 'postfix.test';

/** One extra smtpd listener (a master.cf inet service) on 127.0.0.1. */
export type PostfixSmtpService = {
  /** TCP port on 127.0.0.1; default a free one. Give it when another option must name it. */
  port?: number;
  /** master.cf `-o name=value` overrides for this smtpd only, e.g.
   *  'smtpd_authorized_xclient_hosts=127.0.0.0/8', 'smtpd_proxy_filter=127.0.0.1:10025',
   *  'content_filter=', 'smtpd_upstream_proxy_protocol=haproxy'. */
  options?: string[];
};

export type PostfixOptions = MtaOptions & {
  /** Domains delivered to the maildir (virtual_mailbox_domains, every local part accepted);
   *  default ['example.net']. Everything else: 554 5.7.1 Relay access denied. */
  localDomains?: string[];
  /** Recipients refused at RCPT time, by local part ("bob", any domain) or address
   *  ("bob@example.net"), with code, enhanced code and text, e.g. '550 5.1.1 no such user'.
   *  Postfix replies '<code> <enhanced> <address>: Recipient address rejected: <text>'. */
  refuse?: Record<string, string>;
  /** TCP port of the main smtpd on 127.0.0.1; default a free one. */
  port?: number;
  /** master.cf `-o name=value` overrides for the main smtpd (see PostfixSmtpService.options). */
  smtpdOptions?: string[];
  /** Extra smtpd listeners by name (lower-case letters, digits, '-'); their ports are in `ports`,
   *  and they log as postfix/<name>/smtpd. */
  services?: Record<string, PostfixSmtpService>;
  /** Extra main.cf lines; a parameter given here replaces the harness's value. */
  mainConfig?: string[];
  /** Extra master.cf lines, verbatim (chroot column must be n: the harness has no chroot tree). */
  masterConfig?: string[];
};

/** One delivery: one recipient's copy of an accepted message. */
export type PostfixDelivery = {
  /** Queue id of the last smtpd hop (from the top Received field). */
  queueId: string;
  /** Envelope sender (Return-Path, without the angle brackets; '' for the null sender). */
  sender: string;
  /** Recipient this copy was delivered to (Delivered-To). */
  recipient: string;
  /** Recipient as the client gave it (X-Original-To). */
  originalRecipient: string;
  /** Client of the last smtpd hop as Postfix saw it (after XCLIENT / PROXY), from the top Received. */
  clientAddress: string;
  clientName: string;
  helo: string;
  /** The delivered file with CRLF line ends: Postfix's fields on top, then what the client sent. */
  data: Buffer;
};

/** messages() and deliveries() give what Postfix delivered with CRLF line ends (see the top of this file). */
export interface Postfix extends MtaHarness<PostfixDelivery> {
  /** Port of every smtpd listener by name: 'smtpd' (the main one, `port`) and each options.services key. */
  readonly ports: Readonly<Record<string, number>>;
  /** Temp dir with etc/ (main.cf, master.cf), queue/, data/, mail/, maillog. */
  readonly dir: string;
  readonly hostname: string;
  /** The whole maillog (postlogd writes it asynchronously: prefer waitForLog to assert on it). */
  maillog(): Promise<string>;
  /** Wait until the maillog matches; returns the maillog; throws with its tail on timeout. */
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Queue ids of messages still in the queue (incoming, active, deferred, hold). */
  queued(): Promise<string[]>;
  /** `postqueue -f`: retry deferred messages now. */
  flushQueue(): Promise<void>;
}

// ---------- accounts and config ----------

type PostfixAccount = { uid: number; gid: number; postdropGid: number };

function postfixAccount(): PostfixAccount {
  const passwd = spawnSync('getent', ['passwd', 'postfix'], { encoding: 'utf8' });
  const postdrop = spawnSync('getent', ['group', 'postdrop'], { encoding: 'utf8' });
  if (passwd.status !== 0 || postdrop.status !== 0) throw new Error('postfix harness: no postfix user or postdrop group (run test/interop/setup-postfix.sh)');
  const fields = passwd.stdout.trim().split(':');
  return { uid: Number(fields[2]), gid: Number(fields[3]), postdropGid: Number(postdrop.stdout.split(':')[2]) };
}

const SERVICE_NAME = /^[a-z0-9][a-z0-9-]*$/;

function checkDomain(domain: string): string {
  if (!/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(domain)) throw new Error(`postfix harness: bad local domain ${JSON.stringify(domain)}`);
  return domain;
}

/** A master.cf `-o`: `-o name=value`, or `-o { name = value }` when the value has spaces (Postfix ≥ 3.0). */
function masterOption(option: string): string {
  const match = /^\s*([a-z0-9_]+)\s*=\s*(.*?)\s*$/.exec(option);
  if (!match || /[\r\n{}]/.test(option)) throw new Error(`postfix harness: bad -o option ${JSON.stringify(option)} (want "name=value")`);
  const [, name, value] = match;
  return /\s/.test(value ?? '') ? `-o { ${name} = ${value} }` : `-o ${name}=${value}`;
}

function smtpdLine(port: number, options: string[]): string {
  return [`127.0.0.1:${port} inet n - n - - smtpd`, ...options.map((option) => `  ${masterOption(option)}`)].join('\n');
}

/** texthash access map: "bob" → key "bob@" (that local part in any domain), "bob@example.net" as is. */
function refuseMap(refuse: Record<string, string>): string {
  return Object.entries(refuse)
    .map(([key, reply]) => {
      if (!/^([45])\d\d \1\.\d{1,3}\.\d{1,3} \S/.test(reply) || /[\r\n]/.test(reply)) {
        throw new Error(`postfix harness: refuse[${key}] must be "<4xx|5xx> <4.x.x|5.x.x> <text>" on one line: ${JSON.stringify(reply)}`);
      }
      if (!/^[^\s@#]+(@[^\s@]+)?$/.test(key)) throw new Error(`postfix harness: refuse key ${JSON.stringify(key)} not supported`);
      return `${key.includes('@') ? key : `${key}@`} ${reply}\n`;
    })
    .join('');
}

type ConfigInput = {
  dir: string;
  account: PostfixAccount;
  localDomains: string[];
  mainConfig: string[];
};

function mainCf(input: ConfigInput): string {
  const { dir, account } = input;
  const paths = postfixPaths();
  const harness = `# Generated by test/helpers/postfix.ts for one test run. Not for production.
compatibility_level = 3.6

# The unpacked Debian tree (setup-postfix.sh) and this run's private directories.
daemon_directory = ${paths.daemonDirectory}
command_directory = ${paths.commandDirectory}
shlib_directory = ${paths.shlibDirectory}
meta_directory = ${dir}/etc
queue_directory = ${dir}/queue
data_directory = ${dir}/data
sendmail_path = ${paths.commandDirectory}/sendmail
newaliases_path = ${paths.commandDirectory}/newaliases
mailq_path = ${paths.commandDirectory}/mailq
# The binaries' RUNPATH is /usr/lib/postfix, which does not exist here.
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME LD_LIBRARY_PATH=${paths.shlibDirectory}
mail_owner = postfix
setgid_group = postdrop
maillog_file = ${dir}/maillog
maillog_file_prefixes = ${dir}

myhostname = ${POSTFIX_HOSTNAME}
mydomain = ${POSTFIX_HOSTNAME}
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relay_domains =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
biff = no
# Queue ids unique over time (messages() tells messages apart by them).
enable_long_queue_ids = yes

# Deliver what the client sent: no header address rewriting, no added Date/Message-ID/From/To.
local_header_rewrite_clients =
remote_header_rewrite_domain =
always_add_missing_headers = no
disable_mime_output_conversion = yes

# Fast, deterministic tests.
in_flow_delay = 0s
smtpd_error_sleep_time = 0s
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
delay_warning_time = 0h

# Policy: local domains only; refusals from the texthash map.
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions = check_recipient_access texthash:${dir}/etc/refuse

# Every local part of every local domain into one maildir, mail/maildir/.
virtual_mailbox_domains = ${input.localDomains.map(checkDomain).join(', ')}
virtual_mailbox_base = ${dir}/mail
virtual_mailbox_maps = static:maildir/
virtual_uid_maps = static:${account.uid}
virtual_gid_maps = static:${account.gid}
virtual_minimum_uid = 1
`;
  // A parameter the test sets replaces the harness's line (Postfix would use the last one anyway,
  // but warn "overriding earlier entry" in every daemon's log).
  const replaced = new Set(input.mainConfig.map((line) => /^([a-z0-9_]+)\s*=/.exec(line)?.[1]).filter((name) => name !== undefined));
  const kept = harness.split('\n').map((line) => {
    const name = /^([a-z0-9_]+) =/.exec(line)?.[1];
    return name !== undefined && replaced.has(name) ? `# ${line}   (replaced below)` : line;
  });
  return [...kept, '# Test-specific (PostfixOptions.mainConfig)', ...input.mainConfig, ''].join('\n');
}

function masterCf(smtpds: string[], extra: string[]): string {
  // Debian's master.cf services, all with chroot = n (the private tree has no chroot jail).
  return `# Generated by test/helpers/postfix.ts for one test run. Not for production.
# service type  private unpriv  chroot  wakeup  maxproc command + args
${smtpds.join('\n')}
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
${extra.join('\n')}
`;
}

// ---------- reading delivered messages ----------

function toCrlf(raw: Buffer): Buffer {
  return Buffer.from(raw.toString('latin1').replace(/\n/g, '\r\n'), 'latin1');
}

type HeaderField = { name: string; value: string; start: number; end: number };

/** The header fields at the top of a CRLF message, unfolded values, with their byte ranges. */
function headerFields(message: Buffer): HeaderField[] {
  const fields: HeaderField[] = [];
  let offset = 0;
  for (;;) {
    if (message[offset] === 0x0d && message[offset + 1] === 0x0a) break; // blank line: end of header
    let end = message.indexOf('\r\n', offset);
    if (end < 0) break;
    while (message[end + 2] === 0x20 || message[end + 2] === 0x09) {
      const next = message.indexOf('\r\n', end + 2);
      if (next < 0) break;
      end = next;
    }
    const text = message.subarray(offset, end).toString('latin1');
    const colon = text.indexOf(':');
    if (colon <= 0) break;
    fields.push({ name: text.slice(0, colon).toLowerCase(), value: text.slice(colon + 1).replace(/\r\n/g, '').replace(/\s+/g, ' ').trim(), start: offset, end: end + 2 });
    offset = end + 2;
  }
  return fields;
}

const DELIVERY_FIELDS = new Set(['return-path', 'x-original-to', 'delivered-to']);

function isOwnReceived(field: HeaderField, hostname: string): boolean {
  return field.name === 'received' && field.value.includes(` by ${hostname} (Postfix) `);
}

/**
 * The message as the client sent it: the delivered bytes minus what Postfix put on top — the
 * delivery fields (Return-Path, X-Original-To, Delivered-To) and the Received fields of this
 * Postfix's smtpd hops ("by <hostname> (Postfix)").
 */
export function withoutPostfixFields(message: Buffer, hostname = POSTFIX_HOSTNAME): Buffer {
  let offset = 0;
  for (const field of headerFields(message)) {
    if (!DELIVERY_FIELDS.has(field.name) && !isOwnReceived(field, hostname)) break;
    offset = field.end;
  }
  return message.subarray(offset);
}

function parseDelivery(raw: Buffer, hostname: string): PostfixDelivery {
  const data = toCrlf(raw);
  const fields = headerFields(data);
  const value = (name: string): string => fields.find((field) => field.name === name)?.value ?? '';
  const received = fields.find((field) => isOwnReceived(field, hostname))?.value ?? '';
  // smtpd_received: "from <helo> (<name> [<address>]) by <host> (Postfix) with <proto> id <qid> ..."
  const from = /^from (\S+) \((\S+) \[(?:IPv6:)?([^\]]*)\]\)/.exec(received);
  const id = / by \S+ \(Postfix\) with \S+ id ([0-9A-Za-z]+)/.exec(received);
  return {
    queueId: id?.[1] ?? '',
    sender: value('return-path').replace(/^<(.*)>$/, '$1'),
    recipient: value('delivered-to'),
    originalRecipient: value('x-original-to'),
    clientAddress: from?.[3] ?? '',
    clientName: from?.[2] ?? '',
    helo: from?.[1] ?? '',
    data,
  };
}

// ---------- start ----------

const PROXY_PROTOCOL = /^\s*smtpd_upstream_proxy_protocol\s*=\s*\S/;

export async function startPostfix(options: PostfixOptions = {}): Promise<Postfix> {
  const paths = postfixPaths();
  if (process.getuid?.() !== 0) throw new Error('postfix harness: needs root (master, unshare -m, port 53 on loopback)');
  const account = postfixAccount();

  const host = '127.0.0.1';
  const services = Object.entries(options.services ?? {});
  for (const [name] of services) {
    if (!SERVICE_NAME.test(name) || name === 'smtpd') throw new Error(`postfix harness: bad service name ${JSON.stringify(name)}`);
  }
  const ports: Record<string, number> = { smtpd: options.port ?? (await freePort(host)) };
  for (const [name, service] of services) ports[name] = service.port ?? (await freePort(host));
  if (new Set(Object.values(ports)).size !== Object.keys(ports).length) throw new Error(`postfix harness: two listeners on one port: ${JSON.stringify(ports)}`);
  const port = ports['smtpd'] as number;
  // A PROXY-protocol smtpd greets only after the client's PROXY header.
  const listeners = [
    { port, proxyProtocol: (options.smtpdOptions ?? []).some((option) => PROXY_PROTOCOL.test(option)) },
    ...services.map(([name, service]) => ({ port: ports[name] as number, proxyProtocol: (service.options ?? []).some((option) => PROXY_PROTOCOL.test(option)) })),
  ];

  const workspace = await openMtaWorkspace('postfix', { zone: options.zone, dnsServer: options.dnsServer });
  const { dir, dns } = workspace;
  const etc = path.join(dir, 'etc');
  const queue = path.join(dir, 'queue');
  try {
    await mkdir(etc, { mode: 0o755 });
    await writeFile(path.join(etc, 'refuse'), refuseMap(options.refuse ?? {}), { mode: 0o644 });
    await copyFile(paths.dynamicMaps, path.join(etc, 'dynamicmaps.cf'));
    await writeFile(
      path.join(etc, 'main.cf'),
      mainCf({ dir, account, localDomains: options.localDomains ?? ['example.net'], mainConfig: options.mainConfig ?? [] }),
      { mode: 0o644 },
    );
    const smtpds = [
      smtpdLine(port, options.smtpdOptions ?? []),
      ...services.map(([name, service]) => smtpdLine(ports[name] as number, [`syslog_name=postfix/${name}`, ...(service.options ?? [])])),
    ];
    await writeFile(path.join(etc, 'master.cf'), masterCf(smtpds, options.masterConfig ?? []), { mode: 0o644 });
    // Postfix rereads a configuration file until it is a couple of seconds old ("still being
    // written?"), which would cost ~2 s per start: backdate them.
    const past = new Date(Date.now() - 60_000);
    for (const name of ['main.cf', 'master.cf', 'dynamicmaps.cf', 'refuse']) await utimes(path.join(etc, name), past, past);
    // The queue layout of Debian's postfix-files (what `postfix start` would create).
    await mkdir(queue, { mode: 0o755 });
    for (const sub of ['active', 'bounce', 'corrupt', 'defer', 'deferred', 'flush', 'hold', 'incoming', 'private', 'saved', 'trace']) {
      await mkdir(path.join(queue, sub));
      await chown(path.join(queue, sub), account.uid, 0);
      await chmod(path.join(queue, sub), 0o700);
    }
    for (const [sub, mode] of [['maildrop', 0o730], ['public', 0o710]] as const) {
      await mkdir(path.join(queue, sub));
      await chown(path.join(queue, sub), account.uid, account.postdropGid);
      await chmod(path.join(queue, sub), mode);
    }
    await mkdir(path.join(queue, 'pid'), { mode: 0o755 });
    for (const sub of ['data', 'mail']) {
      await mkdir(path.join(dir, sub));
      await chown(path.join(dir, sub), account.uid, account.gid);
      await chmod(path.join(dir, sub), 0o700);
    }
  } catch (error) {
    await workspace.discard();
    throw error;
  }

  const maillog = (): Promise<string> => readTextFile(path.join(dir, 'maillog'));
  const diagnostics = async (): Promise<string> => {
    const tail = (await maillog()).split('\n').slice(-40).join('\n');
    return `--- postfix stderr ---\n${daemon.stderr()}\n--- maillog (tail) ---\n${tail}`;
  };
  const environment = { PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C', LD_LIBRARY_PATH: paths.shlibDirectory };
  // The master stays in the foreground and is the leader of the process group every daemon
  // joins; it terminates them on SIGTERM.
  const daemon = mtaDaemon({
    name: 'postfix',
    daemon: 'postfix master',
    resolvConf: workspace.resolvConf,
    command: [paths.master, '-c', etc],
    env: environment,
    host,
    listeners,
    startTimeoutMs: options.startTimeoutMs ?? 10_000,
    diagnostics,
  });

  const maildir = path.join(dir, 'mail', 'maildir');
  const deliveries = async (): Promise<PostfixDelivery[]> => (await readMaildir(maildir)).map((raw) => parseDelivery(raw, POSTFIX_HOSTNAME));
  const messages = async (): Promise<Buffer[]> => firstCopies(await deliveries(), (delivery) => delivery.queueId);

  const queued = async (): Promise<string[]> => {
    const ids: string[] = [];
    for (const sub of ['incoming', 'active', 'deferred', 'hold']) {
      let entries: string[] = [];
      try {
        entries = await readdir(path.join(queue, sub), { recursive: true });
      } catch {
        continue;
      }
      for (const entry of entries) {
        const info = await stat(path.join(queue, sub, entry)).catch(() => undefined);
        if (info?.isFile()) ids.push(path.basename(entry));
      }
    }
    return [...new Set(ids)].sort();
  };

  const postfix: Postfix = {
    host,
    port,
    ports: Object.freeze({ ...ports }),
    dns,
    dir,
    hostname: POSTFIX_HOSTNAME,
    messages,
    deliveries,
    waitForMessages: (n, timeoutMs = 10_000) => waitForMessageCount('postfix', messages, n, timeoutMs, diagnostics),
    clearMessages: () => clearMaildir(maildir),
    maillog,
    waitForLog: (pattern, timeoutMs = 10_000) =>
      poll(maillog, (log) => pattern.test(log), timeoutMs, async () => `postfix: maillog did not match ${pattern} within ${timeoutMs} ms\n${await diagnostics()}`),
    queued,
    flushQueue: async () => {
      const result = spawnSync(path.join(paths.commandDirectory, 'postqueue'), ['-c', etc, '-f'], { encoding: 'utf8', env: environment, timeout: 10_000 });
      if (result.status !== 0) throw new Error(`postfix: postqueue -f failed (${result.status ?? result.signal}): ${result.stderr}`);
    },
    stop: daemon.stop,
    start: daemon.start,
    close: closeOnce(daemon, workspace),
  };
  return startOrClose(postfix, options.cleanupWith);
}

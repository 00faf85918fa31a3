// The configuration schema: every key, its type, its default, in one place (PRODUCT.md §7).
// Owns: what a valid config is and what each omitted key means. Unknown keys are errors.
// Must not: read files or the environment (load.ts does), or check the file system (keys,
// certificates: validate.ts does that after the shape is right).

import { BlockList, isIP } from 'node:net';
import os from 'node:os';
import { z } from 'zod';
import { forwardModes, mtaSeesRealClient, parseSmtpUrl } from './relay-target.ts';

/** "500ms", "30s", "5m", "2h", "7d" or a number of seconds → milliseconds. */
export function parseDuration(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value * 1000 : undefined;
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$/.exec(value);
  if (!match) return undefined;
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] as 'ms' | 's' | 'm' | 'h' | 'd'];
  return Math.round(Number(match[1]) * unit);
}

/** "25MiB", "100KiB", "10MB", "512" (bytes) or a number of bytes → bytes. */
export function parseSize(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isInteger(value) && value > 0 ? value : undefined;
  const match = /^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$/i.exec(value);
  if (!match) return undefined;
  const units: Record<string, number> = { b: 1, kb: 1000, kib: 1024, mb: 1e6, mib: 1 << 20, gb: 1e9, gib: 1 << 30 };
  return Number(match[1]) * (units[(match[2] ?? 'b').toLowerCase()] ?? 1);
}

const duration = z.union([z.string(), z.number()]).transform((value, context) => {
  const ms = parseDuration(value);
  if (ms === undefined) {
    context.addIssue({ code: 'custom', message: `not a duration: ${JSON.stringify(value)} (use e.g. "30s", "5m", "7d")` });
    return z.NEVER;
  }
  return ms;
});

const size = z.union([z.string(), z.number()]).transform((value, context) => {
  const bytes = parseSize(value);
  if (bytes === undefined) {
    context.addIssue({ code: 'custom', message: `not a size: ${JSON.stringify(value)} (use e.g. "25MiB", "100KiB")` });
    return z.NEVER;
  }
  return bytes;
});

/** "host:port", "[v6]:port" → { host, port }. Port 0 lets the OS choose (tests). */
export const hostPort = z.string().transform((value, context) => {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) {
    context.addIssue({ code: 'custom', message: `expected "host:port" or "[ipv6]:port", got ${JSON.stringify(value)}` });
    return z.NEVER;
  }
  return { host: (match[1] ?? match[2]) as string, port };
});

/**
 * A listener's address: "host:port" for SMTP roles; a milter listener also takes the milter socket
 * forms of Postfix and OpenDKIM: "inet:host:port", "inet:port@host", "unix:/path" (or "local:").
 * A socket path gives { host: "", port: 0, path }.
 */
const listenAddress = z.string().transform((value, context): { host: string; port: number; path?: string } => {
  const socket = /^(?:unix|local):(\/.+)$/.exec(value);
  if (socket) return { host: '', port: 0, path: socket[1] as string };
  const atForm = /^inet:(\d{1,5})@(?:\[([0-9a-fA-F:.]+)\]|([^@[\]]+))$/.exec(value);
  if (atForm) {
    const port = Number(atForm[1]);
    if (port <= 65535) return { host: (atForm[2] ?? atForm[3]) as string, port };
  }
  const parsed = hostPort.safeParse(value.replace(/^inet6?:/, ''));
  if (!parsed.success) {
    context.addIssue({ code: 'custom', message: `expected "host:port", "inet:host:port" or "unix:/path", got ${JSON.stringify(value)}` });
    return z.NEVER;
  }
  return parsed.data;
});

/** "192.0.2.0/24", "2001:db8::/32", or a single address → validated CIDR string. */
const network = z.string().refine(
  (value) => {
    const [address, prefix] = value.split('/');
    const family = isIP(address ?? '');
    if (!family) return false;
    if (prefix === undefined) return true;
    const bits = Number(prefix);
    return /^\d+$/.test(prefix) && bits <= (family === 4 ? 32 : 128);
  },
  { message: 'expected an IP address or CIDR network, e.g. "192.0.2.0/24" or "::1/128"' },
);

/**
 * RFC 6376 §3.1: selector = sub-domain *( "." sub-domain ). A number is taken as its digits: YAML
 * reads keygen's default selector `202611` unquoted as an integer (load.ts keeps its exact digits).
 */
const selector = z
  .union([z.string(), z.number().transform(String)])
  .pipe(z.string().regex(/^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*$/i, 'not a valid DKIM selector'));

/** A signing-table key: "example.com" or "*.example.com" (every subdomain, not the domain itself). */
const domainPattern = z
  .string()
  .transform((value) => value.trim().toLowerCase().replace(/\.$/, ''))
  .refine((value) => /^(\*\.)?(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/.test(value), {
    message: 'expected a domain ("example.com") or a wildcard ("*.example.com")',
  });

/** Defaults of PRODUCT.md §4: fields each signature covers and fields oversigned. */
export const DEFAULT_SIGNED_FIELDS = [
  'From', 'Sender', 'Reply-To', 'Subject', 'Date', 'Message-ID', 'To', 'Cc',
  'MIME-Version', 'Content-Type', 'Content-Transfer-Encoding', 'Content-ID', 'Content-Description',
  'Resent-Date', 'Resent-From', 'Resent-Sender', 'Resent-To', 'Resent-Cc', 'Resent-Message-ID',
  'In-Reply-To', 'References', 'List-Id', 'List-Help', 'List-Unsubscribe', 'List-Unsubscribe-Post',
  'List-Subscribe', 'List-Post', 'List-Owner', 'List-Archive',
];
export const DEFAULT_OVERSIGNED_FIELDS = [
  'From', 'To', 'Cc', 'Subject', 'Date', 'Reply-To', 'Message-ID', 'MIME-Version', 'Content-Type',
  'In-Reply-To', 'References',
];

/** What a check result does at RCPT TO: tag (accept, with headers), defer (4xx), reject (5xx). */
const spfAction = z.enum(['tag', 'defer', 'reject']);

const relaySchema = z
  .strictObject({
    /** smtp://host:port, lmtp://host:port or dir:PATH */
    target: z.string().default('dir:mail'),
    starttls: z.enum(['never', 'opportunistic', 'required']).default('opportunistic'),
    /** Verify the MTA's certificate. Off by default: the MTA normally sits on loopback with a snakeoil certificate. */
    tlsRejectUnauthorized: z.boolean().default(false),
    /** Name sello gives in EHLO/LHLO downstream; default: the top-level hostname. */
    helo: z.string().optional(),
    /** How the MTA learns the real client: none, xclient, xforward, proxy-v1, proxy-v2 (relay/forwarding.ts). */
    forward: z.enum(forwardModes).default('none'),
    timeouts: z
      .strictObject({
        connect: duration.prefault('10s'),
        command: duration.prefault('5m'),
        /** Wait for the MTA's reply to the final dot (RFC 5321 §4.5.3.2.6: 10 minutes). */
        data: duration.prefault('10m'),
      })
      .prefault({}),
    /** Warm connections reused across client sessions (docs/performance.md); maxIdle 0 turns it off. */
    pool: z
      .strictObject({
        maxIdle: z.int().min(0).max(1000).default(16),
        idleTimeout: duration.prefault('5s'),
        maxTransactions: z.int().min(1).max(1_000_000).default(10),
      })
      .prefault({}),
  })
  .superRefine((relay, context) => {
    if (relay.forward !== 'none' && /^dir:/i.test(relay.target)) {
      context.addIssue({ code: 'custom', path: ['forward'], message: 'a dir: target has no MTA to tell the client to; use smtp:// or lmtp://' });
    }
  });

/** An address a trusted MTA connects from: exact, as smtp-server compares it (no networks, no "*"). */
const peerAddress = z.string().refine((value) => isIP(value) !== 0, {
  message: 'expected the exact IP address a trusted MTA connects from, e.g. "127.0.0.1" (no networks, no "*": anyone listed may claim to be any client)',
});

const tlsSchema = z.strictObject({
  /** starttls: offer STARTTLS; implicit: TLS from the first byte (port 465); none: plain text only. */
  mode: z.enum(['starttls', 'implicit', 'none']),
  /** PEM certificate chain and key; both absent → a self-signed certificate is made at start. */
  cert: z.string().optional(),
  key: z.string().optional(),
});

const listenerSchema = z
  .strictObject({
    name: z.string().regex(/^[a-z0-9][a-z0-9_-]*$/i, 'use letters, digits, "-" and "_"'),
    /**
     * submission: mail clients, signs. filter: the MTA on loopback, signs (or not). mx: the Internet,
     * checks, never signs. milter: Postfix's or Sendmail's milter client (docs/milter.md).
     */
    role: z.enum(['submission', 'filter', 'mx', 'milter']),
    listen: listenAddress,
    tls: tlsSchema.optional(),
    /** Clients that may send without AUTH (submission) — the MTA on loopback, an internal network. */
    trustedNetworks: z.array(network).default([]),
    /** filter and milter: sign mail passing through (submission always signs; mx never does; milter default true). */
    sign: z.boolean().optional(),
    /**
     * filter and milter (default true there): run the inbound checks (SPF on the client the MTA forwards with XFORWARD/
     * XCLIENT, DKIM, DMARC, ARC) and add Received-SPF and Authentication-Results, as mx does.
     */
    verify: z.boolean().optional(),
    /** This listener's own downstream; default: the top-level relay. */
    relay: relaySchema.optional(),
    /** Wait before the greeting to catch early talkers; default 100ms on mx, 0 on submission and filter. */
    greetingDelay: duration.optional(),
    /** Reverse DNS lookup of each client (only useful for logs on mx). */
    reverseLookup: z.boolean().default(false),
    /** filter only: peers whose XFORWARD/XCLIENT (the real client, e.g. from Postfix's smtpd_proxy_filter) are believed. */
    xforwardPeers: z.array(peerAddress).default([]),
    /**
     * submission only: how AUTH is checked. Absent: passed through to the MTA (PRODUCT.md §2).
     * credentials: a local file of "user:scrypt-hash" lines (sello passwd), checked by sello.
     */
    auth: z.strictObject({ credentials: z.string().min(1) }).optional(),
  })
  .superRefine((listener, context) => {
    if (listener.role !== 'filter' && listener.xforwardPeers.length > 0) {
      // PRODUCT.md §2: a peer allowed XFORWARD/XCLIENT can pose as any client; only the MTA on loopback may.
      context.addIssue({ code: 'custom', path: ['xforwardPeers'], message: 'XFORWARD/XCLIENT only on a filter listener, from trusted peers' });
    }
    if (listener.tls && listener.tls.mode !== 'none' && !listener.tls.cert !== !listener.tls.key) {
      context.addIssue({ code: 'custom', path: ['tls'], message: 'give both "cert" and "key", or neither for a self-signed certificate' });
    }
    if (listener.role === 'submission' && listener.sign === false) {
      context.addIssue({ code: 'custom', path: ['sign'], message: 'a submission listener always signs; remove "sign: false"' });
    }
    reportMilterRules(listener, context);
    if (listener.verify !== undefined && listener.role !== 'filter' && listener.role !== 'milter') {
      // mx always verifies; submission mail is the users' own (PRODUCT.md §5: not checked).
      context.addIssue({ code: 'custom', path: ['verify'], message: `"verify" is for filter listeners (${listener.role === 'mx' ? 'an' : 'a'} ${listener.role} listener ${listener.role === 'mx' ? 'always verifies' : 'never does'})` });
    }
    if (listener.auth && listener.role !== 'submission') {
      context.addIssue({ code: 'custom', path: ['auth'], message: `AUTH is for submission listeners (${listener.role === 'mx' ? 'an mx listener takes no AUTH' : 'a filter listener trusts its MTA'})` });
    }
    if (listener.auth && listener.relay && !localLoginReachesMta(listener.relay.forward)) {
      context.addIssue({ code: 'custom', path: ['auth', 'credentials'], message: localLoginMessage(listener.relay.forward) });
    }
    if (listener.role === 'mx' && listener.sign) {
      // PRODUCT.md §2: mx never signs (it would sign whatever the Internet sends: a signing oracle).
      context.addIssue({ code: 'custom', path: ['sign'], message: 'an mx listener never signs (anyone could have mail signed); remove "sign"' });
    }
  });

export const configSchema = z
  .strictObject({
    /** Name in the greeting and in downstream EHLO. */
    hostname: z.string().min(1).default(os.hostname()),
    listeners: z.array(listenerSchema).min(1, 'at least one listener is needed'),
    relay: relaySchema.prefault({}),
    signing: z
      .strictObject({
        keysDir: z.string().default('keys'),
        /** Signing table: domain or "*.domain" → selector(s); one signature per selector. */
        domains: z.record(domainPattern, z.union([selector, z.array(selector).min(1)])).default({}),
        /** x= tag: signature lifetime (RFC 6376 §3.5), or false for none. */
        expiry: z.union([z.literal(false), duration]).prefault('7d'),
        headers: z.array(z.string().regex(/^[!-9;-~]+$/, 'not a header field name')).default(DEFAULT_SIGNED_FIELDS),
        oversign: z.array(z.string().regex(/^[!-9;-~]+$/, 'not a header field name')).default(DEFAULT_OVERSIGNED_FIELDS),
        /** What a signing error does: defer (451 4.7.0, client retries) or reject (554 5.7.0). Never sends unsigned. */
        onError: z.enum(['defer', 'reject']).default('defer'),
        /** Key rotation (docs/rotation.md): how a pending key's record must be seen before it signs. */
        rotation: z
          .strictObject({
            /** How often the server looks up pending keys' records; consecutive sightings are this far apart. */
            checkInterval: duration.refine((ms) => ms >= 100, 'at least 100ms').prefault('1h'),
            /** Consecutive sightings of a record keycheck judges ok before the key is promoted. */
            confirmations: z.number().int().min(1).max(100).default(2),
            /** Added to the last signature + signing.expiry before a retiring key's record may go. */
            retireMargin: duration.prefault('1d'),
          })
          .prefault({}),
        /** Key files elsewhere than <keysDir>/<domain>/<selector>.pem, by record name: "<selector>._domainkey.<domain>": path. */
        keyFiles: z.record(z.string().regex(/^[A-Za-z0-9.-]+\._domainkey\.[A-Za-z0-9.-]+$/, 'expected "<selector>._domainkey.<domain>"'), z.string().min(1)).default({}),
        /** Load key files readable by group or others (refused by default, as OpenDKIM does). */
        allowUnsafeKeys: z.boolean().default(false),
      })
      .prefault({}),
    inbound: z
      .strictObject({
        /** authserv-id of our Authentication-Results (RFC 8601 §2.5); default: hostname. */
        authservId: z.string().regex(/^[A-Za-z0-9.-]+$/, 'use a host name').optional(),
        /**
         * Domains the mx listener accepts mail for. Until the MTA learns the real client (identity
         * forwarding), sello itself refuses every other recipient (550 5.7.1): with every connection
         * coming from 127.0.0.1 the MTA would otherwise relay for anyone.
         */
        localDomains: z.array(domainPattern).default([]),
        /** Recipients exempt from rejection by policy (RFC 5321 §4.5.1 postmaster): local parts or addresses. */
        exemptRecipients: z.array(z.string().min(1)).default(['postmaster', 'abuse']),
        spf: z
          .strictObject({
            /** Also check the HELO identity (RFC 7208 §2.3); its fail/temperror act like MAIL FROM's. */
            checkHelo: z.boolean().default(false),
            /** Overall time for one evaluation (RFC 7208 §4.6.4); temperror after it. */
            timeBudget: duration.prefault('20s'),
            /** Optional URL appended to the fail reply, e.g. "https://example.com/why-rejected". */
            explanationUrl: z.url().optional(),
            /** What each result does; PRODUCT.md §5 defaults. */
            policy: z
              .strictObject({
                pass: spfAction.default('tag'),
                fail: spfAction.default('reject'),
                softfail: spfAction.default('tag'),
                neutral: spfAction.default('tag'),
                none: spfAction.default('tag'),
                temperror: spfAction.default('defer'),
                permerror: spfAction.default('tag'),
              })
              .prefault({}),
          })
          .prefault({}),
        dmarc: z
          .strictObject({
            /** Refuse mail failing DMARC under p=reject (550 5.7.1). Off by default: tag only. */
            enforce: z.boolean().default(false),
          })
          .prefault({}),
        arc: z
          .strictObject({
            /**
             * Add an ARC set (RFC 8617) to every message the inbound checks ran on, signed with the
             * RSA key <signing.keysDir>/<domain>/<selector>.pem. Absent: ARC is only verified.
             */
            seal: z
              .strictObject({
                domain: domainPattern.refine((value) => !value.startsWith('*.'), { message: 'the sealing domain (d=) is one domain, not a wildcard' }),
                selector,
              })
              .optional(),
          })
          .prefault({}),
      })
      .prefault({}),
    dns: z
      .strictObject({
        /** Resolvers as "host:port"; default: the nameservers of /etc/resolv.conf. */
        servers: z.array(hostPort).default([]),
        /** Per query and server. */
        timeout: duration.prefault('5s'),
        cacheEntries: z.number().int().nonnegative().default(10_000),
        /** Upper bound for honouring a record's TTL. */
        cacheMaxTtl: duration.prefault('1h'),
      })
      .prefault({}),
    data: z
      .strictObject({
        /** Bare CR or LF in DATA: normalise to CRLF before signing, or reject with 550 5.6.0. */
        bareLineEndings: z.enum(['normalize', 'reject']).default('normalize'),
        /** A message body larger than this goes to a private temporary file instead of memory (docs/performance.md). */
        spillThreshold: size.prefault('2MiB'),
        /** Where spilled bodies go (mode 0700, created if missing); default: a sello-spill-UID directory in os.tmpdir(). */
        spillDirectory: z.string().min(1).optional(),
        /** NUL bytes in DATA: reject with 550 5.6.0, or strip them before anything else. */
        nul: z.enum(['reject', 'strip']).default('reject'),
      })
      .prefault({}),
    limits: z
      .strictObject({
        maxMessageSize: size.prefault('25MiB'),
        maxHeaderSize: size.prefault('256KiB'),
        maxRecipients: z.number().int().positive().default(100),
        maxConnections: z.number().int().positive().default(1000),
        maxConnectionsPerIp: z.number().int().positive().default(50),
        /** Idle time allowed between client commands (RFC 5321 §4.5.3.2.7: at least 5 minutes). */
        commandTimeout: duration.prefault('5m'),
        /** The command deadline while a listener holds 80% of maxConnections (Postfix's stress smtpd_timeout). */
        stressTimeout: duration.prefault('10s'),
        /** Bytes per second DATA must average past the command deadline (Postfix smtpd_min_data_rate). */
        minDataRate: size.prefault('500'),
      })
      .prefault({}),
    logging: z
      .strictObject({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
        /** json: one pino JSON object per line; text: one greppable "time LEVEL msg key=value" line (journald, humans). */
        format: z.enum(['json', 'text']).default('json'),
      })
      .prefault({}),
    metrics: z
      .strictObject({
        /** The HTTP port of /metrics, /healthz and /readyz (`sello serve` only). Loopback by default. */
        listen: hostPort.prefault('127.0.0.1:9464'),
      })
      .prefault({}),
    shutdown: z
      .strictObject({
        /** SIGTERM: how long in-flight transactions may take to finish before every session gets 421. */
        deadline: duration.prefault('30s'),
      })
      .prefault({}),
    /** `sello serve` processes: "auto" = one per CPU, or a number; 1 runs without node:cluster (docs/performance.md). */
    workers: z.union([z.literal('auto'), z.int().min(1).max(256)]).default('auto'),
  })
  .superRefine((config, context) => {
    const judgedBySello = (listener: (typeof config.listeners)[number]) => !mtaSeesRealClient((listener.relay ?? config.relay).forward);
    if (config.listeners.some((listener) => listener.role === 'mx' && judgedBySello(listener)) && config.inbound.localDomains.length === 0) {
      // Without local domains an mx listener would refuse every recipient (no open relay, PRODUCT.md §3),
      // unless its relay has the MTA apply its own relay rules to the real client (XCLIENT, PROXY).
      context.addIssue({
        code: 'custom',
        path: ['inbound', 'localDomains'],
        message: 'an mx listener needs the domains it accepts mail for (or a relay with forward: xclient, proxy-v1 or proxy-v2, so the MTA judges relaying itself)',
      });
    }
    if (config.inbound.arc.seal && !config.listeners.some((listener) => listener.role === 'mx' || (listener.role === 'filter' && listener.verify === true))) {
      // Sealing happens where the inbound checks run: a seal without them would go nowhere.
      context.addIssue({
        code: 'custom',
        path: ['inbound', 'arc', 'seal'],
        message: 'no listener runs the inbound checks (an mx listener, or a filter listener with verify: true), so nothing would be sealed',
      });
    }
    const names = new Set<string>();
    config.listeners.forEach((listener, index) => {
      if (names.has(listener.name)) {
        context.addIssue({ code: 'custom', path: ['listeners', index, 'name'], message: `duplicate listener name "${listener.name}"` });
      }
      names.add(listener.name);
      if (listener.role === 'filter' && !isLoopback(listener.listen.host)) {
        // PRODUCT.md §2: filter is a loopback-only listener for the MTA acting as the client.
        context.addIssue({ code: 'custom', path: ['listeners', index, 'listen'], message: 'a filter listener must listen on a loopback address (127.0.0.0/8 or ::1)' });
      }
    });
    config.listeners.forEach((listener, index) => {
      if (listener.auth && !listener.relay && !localLoginReachesMta(config.relay.forward)) {
        context.addIssue({ code: 'custom', path: ['listeners', index, 'auth', 'credentials'], message: localLoginMessage(config.relay.forward) });
      }
    });
    reportRelayLoops(config, context);
  });

/**
 * A milter listener (docs/milter.md): socket forms only for it; loopback or a socket file only
 * (whoever connects names the client and its login in macros, so anyone else could have mail
 * signed); no TLS, AUTH, relay or greeting of its own (the MTA keeps those).
 */
function reportMilterRules(
  listener: { role: string; listen: { host: string; path?: string }; tls?: unknown; auth?: unknown; relay?: unknown; greetingDelay?: unknown; sign?: boolean | undefined; verify?: boolean | undefined },
  context: z.RefinementCtx,
): void {
  if (listener.role !== 'milter') {
    if (listener.listen.path !== undefined) context.addIssue({ code: 'custom', path: ['listen'], message: 'a socket path is for milter listeners; use "host:port"' });
    return;
  }
  if (listener.listen.path === undefined && !isLoopback(listener.listen.host)) {
    context.addIssue({ code: 'custom', path: ['listen'], message: 'a milter listener must listen on a loopback address (127.0.0.0/8 or ::1) or a unix socket: the MTA vouches for the client in macros' });
  }
  for (const key of ['tls', 'auth', 'relay', 'greetingDelay'] as const) {
    if (listener[key] !== undefined) context.addIssue({ code: 'custom', path: [key], message: `a milter listener has no "${key}": the MTA keeps its own` });
  }
  if (listener.sign === false && listener.verify === false) {
    context.addIssue({ code: 'custom', path: ['sign'], message: 'a milter listener that neither signs nor verifies does nothing; set sign or verify (both default to true)' });
  }
}

/**
 * With local AUTH the MTA never sees the user log in. It relays their mail because it trusts the
 * connection from sello (forward none; XFORWARD only informs Postfix's logs, XFORWARD_README), or
 * because XCLIENT tells it LOGIN=user (XCLIENT_README). With PROXY it sees only the client's
 * address, so it would refuse to relay for every user.
 */
function localLoginReachesMta(forward: (typeof forwardModes)[number]): boolean {
  return forward === 'none' || forward === 'xforward' || forward === 'xclient';
}

function localLoginMessage(forward: string): string {
  return `local AUTH cannot be used with relay.forward ${forward}: the MTA sees the client's address but not its login, so it would refuse to relay users' mail (use forward: xclient, which passes LOGIN=, or none)`;
}

/**
 * A relay target that is one of sello's own listeners is a mail loop: each hop opens one more
 * session to itself until the per-address connection limit answers 421 and the client hears
 * 451 4.4.1 (seen in a test where a listener got its own relay's port). Caught here, by address;
 * a wildcard listener (0.0.0.0, ::) loops for loopback targets. Port 0 is chosen by the OS and
 * cannot be checked.
 */
function reportRelayLoops(
  config: { relay: { target: string }; listeners: readonly { name: string; listen: { host: string; port: number }; relay?: { target: string } | undefined }[] },
  context: z.RefinementCtx,
): void {
  const endpointOf = (target: string) => {
    try {
      return /^(smtp|lmtp):/i.test(target) ? parseSmtpUrl(target) : undefined;
    } catch {
      return undefined; // An unusable URL is reported where the target is built.
    }
  };
  const sameHost = (listen: string, target: string) =>
    listen === target ||
    (wildcardHosts.has(listen) && isLoopback(target)) ||
    (target === 'localhost' && (listen === '127.0.0.1' || listen === '::1'));
  const loopsTo = (target: string) => {
    const endpoint = endpointOf(target);
    if (!endpoint) return undefined;
    return config.listeners.find((listener) => listener.listen.port !== 0 && listener.listen.port === endpoint.port && sameHost(listener.listen.host, endpoint.host));
  };
  const report = (path: (string | number)[], target: string) => {
    const listener = loopsTo(target);
    if (!listener) return;
    const { host, port } = listener.listen;
    context.addIssue({
      code: 'custom',
      path,
      message: `"${target}" is sello's own listener "${listener.name}" (${host.includes(':') ? `[${host}]` : host}:${port}): mail would loop back into sello; point it at the MTA`,
    });
  };
  config.listeners.forEach((listener, index) => {
    if (listener.relay) report(['listeners', index, 'relay', 'target'], listener.relay.target);
  });
  if (config.listeners.some((listener) => !listener.relay)) report(['relay', 'target'], config.relay.target);
}

const wildcardHosts = new Set(['0.0.0.0', '::', '::0']);

export type ConfigInput = z.input<typeof configSchema>;
export type Config = z.output<typeof configSchema>;
export type ListenerConfig = Config['listeners'][number];
export type RelayConfig = z.output<typeof relaySchema>;
export type SigningConfig = Config['signing'];

const loopback = new BlockList();
loopback.addSubnet('127.0.0.0', 8, 'ipv4');
loopback.addAddress('::1', 'ipv6');

export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(host);
  const address = mapped ? (mapped[1] as string) : host;
  const family = isIP(address);
  return family !== 0 && loopback.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

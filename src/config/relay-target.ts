// What a relay target is, as configuration data: the smtp:// and lmtp:// URL forms and the ways
// the MTA can learn the real client (PRODUCT.md §3). Owns: parsing and validating these values.
// Must not: open connections or build protocol bytes (relay/ does, and imports these from here:
// config is data and imports no behaviour).

import { ConfigError } from '../errors.ts';

/**
 * How the relay makes the real client known to the MTA (config `relay.forward`, PRODUCT.md §3):
 * not at all, XCLIENT or XFORWARD after EHLO (Postfix), or a PROXY protocol header before the
 * greeting (Exim `hosts_proxy`, Postfix `smtpd_upstream_proxy_protocol = haproxy`; v2 from
 * Postfix 3.5). See relay/forwarding.ts.
 */
export type ForwardMode = 'none' | 'xclient' | 'xforward' | 'proxy-v1' | 'proxy-v2';

/** Every `relay.forward` value, for the config schema. */
export const forwardModes = ['none', 'xclient', 'xforward', 'proxy-v1', 'proxy-v2'] as const satisfies readonly ForwardMode[];

/**
 * True when the MTA applies its own access rules (relaying!) to the real client: XCLIENT and
 * PROXY replace the client the MTA sees. XFORWARD does not: it "overrides one or more
 * client-related logging attributes" (XFORWARD_README), so Postfix still judges relaying by the
 * connection from sello, and sello itself must keep refusing to relay on mx.
 */
export function mtaSeesRealClient(mode: ForwardMode | undefined): boolean {
  return mode === 'xclient' || mode === 'proxy-v1' || mode === 'proxy-v2';
}

export interface SmtpEndpoint {
  readonly protocol: 'smtp' | 'lmtp';
  /** Host name or IP address; IPv6 without brackets. */
  readonly host: string;
  readonly port: number;
}

// Default ports: SMTP 25 (RFC 5321 §4.5.4.2's well-known port); LMTP has none registered,
// 24 ("any private mail system") is what Dovecot and Cyrus document for it.
const defaultPorts = { smtp: 25, lmtp: 24 } as const;

/** smtp://host[:port] or lmtp://host[:port], IPv6 as [::1]; nothing else in the URL. */
export function parseSmtpUrl(url: string, configPath = 'relay.target'): SmtpEndpoint {
  const invalid = (why: string) =>
    new ConfigError(configPath, `"${url}" is not a usable relay target: ${why} (expected smtp://host:port or lmtp://host:port)`);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw invalid('not a URL');
  }
  const protocol = parsed.protocol === 'smtp:' ? 'smtp' : parsed.protocol === 'lmtp:' ? 'lmtp' : undefined;
  if (!protocol) throw invalid(`scheme ${parsed.protocol} is neither smtp: nor lmtp:`);
  const host = parsed.hostname.startsWith('[') ? parsed.hostname.slice(1, -1) : parsed.hostname;
  if (!host) throw invalid('no host');
  if (parsed.username || parsed.password) throw invalid('credentials do not belong in the URL');
  if ((parsed.pathname && parsed.pathname !== '/') || parsed.search || parsed.hash) {
    throw invalid('a path, query or fragment has no meaning here');
  }
  const port = parsed.port ? Number(parsed.port) : defaultPorts[protocol];
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw invalid('port out of range');
  return { protocol, host, port };
}


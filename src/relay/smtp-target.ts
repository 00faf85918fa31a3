// The smtp://host:port and lmtp://host:port relay targets: one SmtpClient per client session.
// Owns: parsing the target URL, building client options from the relay config, probing.
// Must not: speak SMTP itself (smtp-client.ts does) or retry/queue anything.

import net from 'node:net';
import { ConfigError } from '../errors.ts';
import { SmtpClient, type SmtpClientOptions } from './smtp-client.ts';
import type { ClientIdentity, RelaySession, RelayTarget, SmtpRelayConfig } from './types.ts';

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

export class SmtpTarget implements RelayTarget {
  readonly description: string;
  /** LMTP (RFC 2033) servers such as Dovecot's take no AUTH; SMTP MTAs do. */
  readonly supportsAuth: boolean;
  readonly endpoint: SmtpEndpoint;
  private readonly clientOptions: SmtpClientOptions;

  constructor(config: SmtpRelayConfig, configPath = 'relay.target') {
    this.endpoint = parseSmtpUrl(config.url, configPath);
    const { protocol, host, port } = this.endpoint;
    this.description = `${protocol}://${net.isIPv6(host) ? `[${host}]` : host}:${port}`;
    this.supportsAuth = protocol === 'smtp';
    this.clientOptions = Object.freeze({
      host,
      port,
      protocol,
      helo: config.helo,
      starttls: config.starttls,
      tlsRejectUnauthorized: config.tlsRejectUnauthorized,
      timeouts: Object.freeze({ ...config.timeouts }),
    });
  }

  async open(client: ClientIdentity): Promise<RelaySession> {
    const session = await SmtpClient.open(this.clientOptions);
    // The one place where the real client is made known to the MTA (PRODUCT.md §3, issue 4):
    // XCLIENT / XFORWARD (Postfix) are sent here, after EHLO (XCLIENT then needs EHLO again);
    // a PROXY v1/v2 header must precede the greeting and will travel as an SmtpClientOptions
    // field built from `client` above. Until then the MTA sees every session from sello.
    void client;
    return session;
  }

  async probe(): Promise<void> {
    const session = await SmtpClient.connect(this.clientOptions);
    await session.close();
  }
}

// The smtp://host:port and lmtp://host:port relay targets: one SmtpClient per client session,
// taken from and given back to the target's pool of warm connections where that is safe (pool.ts).
// Owns: building client options from the relay config (the URL is parsed in config/), probing.
// Must not: speak SMTP itself (smtp-client.ts does) or retry/queue anything.

import net from 'node:net';
import { parseSmtpUrl, type SmtpEndpoint } from '../config/relay-target.ts';
import { RelayError } from '../errors.ts';
import { advertisedAttributes, proxyHeader, proxyLocalHeader, xclientCommands, xforwardCommands } from './forwarding.ts';
import { ConnectionPool, PooledSession } from './pool.ts';
import { SmtpClient, type SmtpClientOptions } from './smtp-client.ts';

// The URL is data the config validates (config/relay-target.ts); re-exported for the relay's users.
export { parseSmtpUrl, type SmtpEndpoint };
import type { ClientIdentity, ForwardMode, RelaySession, RelayTarget, SmtpRelayConfig } from './types.ts';

export class SmtpTarget implements RelayTarget {
  readonly description: string;
  /** LMTP (RFC 2033) servers such as Dovecot's take no AUTH; SMTP MTAs do. */
  readonly supportsAuth: boolean;
  readonly forward: ForwardMode;
  readonly endpoint: SmtpEndpoint;
  private readonly clientOptions: SmtpClientOptions;
  /** Warm connections; undefined when pooling is off or the forward mode forbids it. */
  readonly pool: ConnectionPool | undefined;

  constructor(config: SmtpRelayConfig, configPath = 'relay.target') {
    this.endpoint = parseSmtpUrl(config.url, configPath);
    const { protocol, host, port } = this.endpoint;
    this.description = `${protocol}://${net.isIPv6(host) ? `[${host}]` : host}:${port}`;
    this.supportsAuth = protocol === 'smtp';
    this.forward = config.forward ?? 'none';
    this.clientOptions = Object.freeze({
      host,
      port,
      protocol,
      helo: config.helo,
      starttls: config.starttls,
      tlsRejectUnauthorized: config.tlsRejectUnauthorized,
      timeouts: Object.freeze({ ...config.timeouts }),
    });
    // A connection that carries one client's identity cannot serve the next client: PROXY is
    // the first thing on the connection (proxy-protocol.txt §2), and XCLIENT is refused once ADDR
    // was applied by smtp-server and would keep the previous client's LOGIN= where the next has
    // none. XFORWARD is sent before every MAIL FROM anyway (XFORWARD_README), so it pools.
    const poolable = this.forward === 'none' || this.forward === 'xforward';
    this.pool = config.pool && config.pool.maxIdle > 0 && poolable ? new ConnectionPool(config.pool, () => SmtpClient.open(this.clientOptions)) : undefined;
  }

  /**
   * The one place where the real client is made known to the MTA (PRODUCT.md §3): a PROXY
   * header before the greeting; XCLIENT after EHLO (and STARTTLS), then EHLO again, before any
   * AUTH; or XFORWARD before every MAIL FROM. An MTA that does not offer the configured command
   * (with ADDR) gets no mail: RelayError('protocol') → the client hears 451 4.4.0 and retries,
   * and the log names the missing setting. Relaying without the client would hide it from the
   * MTA's logs and, with XCLIENT, from its relay rules.
   */
  async open(client: ClientIdentity): Promise<RelaySession> {
    const pool = this.pool;
    if (pool) {
      const { connection, reused } = await pool.acquire();
      await this.identify(connection.client, client);
      return new PooledSession(pool, connection, reused, async () => {
        const fresh = await SmtpClient.open(this.clientOptions);
        await this.identify(fresh, client);
        return fresh;
      });
    }
    let header: Buffer | undefined;
    try {
      header = proxyHeader(this.forward, client);
    } catch (error) {
      throw new RelayError('protocol', `${this.description}: cannot write a PROXY header: ${(error as Error).message}`);
    }
    const session = await SmtpClient.open(header ? { ...this.clientOptions, proxyHeader: header } : this.clientOptions);
    await this.identify(session, client);
    return session;
  }

  /** QUITs the pool's idle connections (shutdown, or a reload replaced this target). */
  async close(): Promise<void> {
    await this.pool?.close();
  }

  /** XCLIENT or the XFORWARD lines for `client` on `session`; on failure the session is closed. */
  private async identify(session: SmtpClient, client: ClientIdentity): Promise<void> {
    try {
      if (this.forward === 'xclient') {
        await session.xclient(xclientCommands(client, this.requireAttributes(session, 'XCLIENT', 'smtpd_authorized_xclient_hosts')));
      } else if (this.forward === 'xforward') {
        session.setXforward(xforwardCommands(client, this.requireAttributes(session, 'XFORWARD', 'smtpd_authorized_xforward_hosts')));
      }
    } catch (error) {
      await session.close();
      throw error;
    }
  }

  /** The attributes `keyword` was advertised with, which must include ADDR. */
  private requireAttributes(session: SmtpClient, keyword: 'XCLIENT' | 'XFORWARD', postfixSetting: string): ReadonlySet<string> {
    const attributes = advertisedAttributes(session.capabilities.keywords.get(keyword));
    if (!attributes?.has('ADDR')) {
      throw new RelayError(
        'protocol',
        `${this.description} does not offer ${keyword}${attributes ? ' ADDR' : ''}, which relay.forward: ${this.forward} needs (Postfix: is sello's address in ${postfixSetting}?)`,
      );
    }
    return attributes;
  }

  /**
   * Connect, greeting, QUIT; with PROXY forwarding the header of a connection that proxies no
   * client. With XCLIENT or XFORWARD also EHLO (and STARTTLS as configured), and the command must
   * be offered with ADDR, as open() requires: an MTA that would defer every message is not ready.
   */
  async probe(): Promise<void> {
    if (this.forward === 'xclient' || this.forward === 'xforward') {
      const session = await SmtpClient.open(this.clientOptions);
      try {
        const [keyword, setting] = this.forward === 'xclient' ? (['XCLIENT', 'smtpd_authorized_xclient_hosts'] as const) : (['XFORWARD', 'smtpd_authorized_xforward_hosts'] as const);
        this.requireAttributes(session, keyword, setting);
      } finally {
        await session.close();
      }
      return;
    }
    const header = this.forward === 'proxy-v1' || this.forward === 'proxy-v2' ? proxyLocalHeader(this.forward) : undefined;
    const session = await SmtpClient.connect(header ? { ...this.clientOptions, proxyHeader: header } : this.clientOptions);
    await session.close();
  }
}

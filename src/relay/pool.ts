// Warm downstream connections of one relay target, reused across transactions and client
// sessions (config `relay.pool`, docs/performance.md): a new TCP connection, greeting, EHLO and
// QUIT per message cost about 1 ms of the MTA's and sello's time.
// Owns: the idle list, checking a connection out and back in (RSET between transactions), and
// the reasons to discard one: an error, an unexpected reply, the idle timeout, N transactions.
// Must not: let two sessions use one connection, pool a connection that carries a client's
// identity (XCLIENT, PROXY: smtp-target.ts decides) or a login (AUTH), or speak SMTP itself.

import { RelayError, type SmtpReply } from '../errors.ts';
import type { SmtpClient } from './smtp-client.ts';
import type { Credentials, DataReply, MailParameters, RecipientParameters, RelayPoolConfig, RelaySession } from './types.ts';

/** One downstream connection and how often it has been used. */
export interface PooledConnection {
  readonly client: SmtpClient;
  /** MAIL FROM commands sent on it, over all the sessions it served. */
  transactions: number;
  idleTimer?: NodeJS.Timeout;
}

export class ConnectionPool {
  readonly config: RelayPoolConfig;
  readonly #connect: () => Promise<SmtpClient>;
  /** Idle connections, most recently used last. */
  #idle: PooledConnection[] = [];
  #closed = false;

  /** `connect` opens a new connection (connect, greeting, EHLO, STARTTLS) for the target. */
  constructor(config: RelayPoolConfig, connect: () => Promise<SmtpClient>) {
    this.config = config;
    this.#connect = connect;
  }

  /** Idle connections held now (for tests and the docs' reasoning about MTA process limits). */
  get idleCount(): number {
    return this.#idle.length;
  }

  /**
   * The most recently used idle connection that is still in step, else a new one. A connection
   * the MTA closed while it sat idle has seen its FIN (`closed`); one the MTA sent anything to
   * unasked (a 421 before hanging up) is out of step: both are dropped here, never used.
   */
  async acquire(): Promise<{ connection: PooledConnection; reused: boolean }> {
    for (let connection = this.#idle.pop(); connection; connection = this.#idle.pop()) {
      clearTimeout(connection.idleTimer);
      if (!connection.client.closed && !connection.client.hasUnsolicitedInput) return { connection, reused: true };
      void connection.client.close();
    }
    return { connection: { client: await this.#connect(), transactions: 0 }, reused: false };
  }

  /**
   * Takes a connection back. It is closed (QUIT) instead when it may not be reused, the pool is
   * closed or full, or it served maxTransactions; otherwise RSET (RFC 5321 §4.1.1.5: the next
   * session starts with no transaction state) must get its 250 before it is idle.
   */
  async release(connection: PooledConnection, reusable: boolean): Promise<void> {
    const { client } = connection;
    if (!reusable || !this.#hasRoom(connection)) {
      await client.close();
      return;
    }
    try {
      await client.reset();
    } catch {
      return; // reset() closed a connection that answered anything but 250
    }
    if (client.hasUnsolicitedInput || !this.#hasRoom(connection)) {
      await client.close();
      return;
    }
    connection.idleTimer = setTimeout(() => {
      const index = this.#idle.indexOf(connection);
      if (index !== -1) this.#idle.splice(index, 1);
      void client.close();
    }, this.config.idleTimeoutMs);
    connection.idleTimer.unref();
    this.#idle.push(connection);
  }

  /** QUITs every idle connection; connections in use are closed, not pooled, when released. */
  async close(): Promise<void> {
    this.#closed = true;
    const idle = this.#idle;
    this.#idle = [];
    await Promise.all(
      idle.map((connection) => {
        clearTimeout(connection.idleTimer);
        return connection.client.close();
      }),
    );
  }

  #hasRoom(connection: PooledConnection): boolean {
    const { client } = connection;
    return !this.#closed && !client.closed && connection.transactions < this.config.maxTransactions && this.#idle.length < this.config.maxIdle;
  }
}

/**
 * A client session's use of a pooled connection, behind the same RelaySession contract as a
 * plain SmtpClient: in step, one command at a time, the MTA's own replies. close() gives the
 * connection back (or closes it when it is no longer fit to reuse).
 */
export class PooledSession implements RelaySession {
  readonly #pool: ConnectionPool;
  readonly #reconnect: () => Promise<SmtpClient>;
  #connection: PooledConnection;
  /** The connection served an earlier session (it may have been closed by the MTA since). */
  #reused: boolean;
  /** A command was sent in this session. */
  #used = false;
  /** An error or a 421 was seen: the connection is not reused. */
  #tainted = false;
  /** AUTH binds the connection to one user: it is never handed to another client. */
  #authenticated = false;
  #inFlight = 0;
  #ended = false;

  /** `reconnect` opens a fresh connection set up like the pooled one (XFORWARD lines included). */
  constructor(pool: ConnectionPool, connection: PooledConnection, reused: boolean, reconnect: () => Promise<SmtpClient>) {
    this.#pool = pool;
    this.#connection = connection;
    this.#reused = reused;
    this.#reconnect = reconnect;
  }

  get closed(): boolean {
    return this.#ended || this.#connection.client.closed;
  }

  authenticate(credentials: Credentials): Promise<SmtpReply> {
    this.#authenticated = true;
    return this.#run((client) => client.authenticate(credentials));
  }

  mailFrom(address: string, parameters: MailParameters): Promise<SmtpReply> {
    return this.#run((client, connection) => {
      connection.transactions++;
      return client.mailFrom(address, parameters);
    });
  }

  rcptTo(address: string, parameters: RecipientParameters): Promise<SmtpReply> {
    return this.#run((client) => client.rcptTo(address, parameters));
  }

  data(chunks: readonly Buffer[]): Promise<DataReply> {
    return this.#run((client) => client.data(chunks));
  }

  reset(): Promise<void> {
    return this.#run((client) => client.reset());
  }

  async close(): Promise<void> {
    if (this.#ended) return;
    this.#ended = true;
    const { client } = this.#connection;
    // Ended during a command (the client went away): the connection's state is unknown.
    if (this.#inFlight > 0) {
      await client.close();
      return;
    }
    await this.#pool.release(this.#connection, !this.#tainted && !this.#authenticated);
  }

  /**
   * Runs one command. The first command on a reused connection that finds it dropped by the
   * MTA (its FIN was still in flight when the connection was checked out) is sent again on a
   * new connection: nothing was acknowledged on the dead one, so nothing can be duplicated.
   */
  async #run<T>(operation: (client: SmtpClient, connection: PooledConnection) => Promise<T>): Promise<T> {
    if (this.#ended) throw new RelayError('protocol', 'relay session already closed');
    const firstOnReused = this.#reused && !this.#used;
    this.#used = true;
    this.#inFlight++;
    try {
      let result: T;
      try {
        result = await operation(this.#connection.client, this.#connection);
      } catch (error) {
        if (!(firstOnReused && error instanceof RelayError && this.#connection.client.droppedByServer)) throw error;
        this.#connection = { client: await this.#reconnect(), transactions: 0 };
        this.#reused = false;
        result = await operation(this.#connection.client, this.#connection);
      }
      // RFC 5321 §3.8: 421 means the server is closing the transmission channel.
      if ((result as SmtpReply | undefined)?.code === 421) this.#tainted = true;
      return result;
    } catch (error) {
      this.#tainted = true;
      throw error;
    } finally {
      this.#inFlight--;
    }
  }
}

// One MTA connection to the milter listener: milter commands → engine session calls, and the
// engine's verdicts and header edits → milter responses.
// Owns: the option negotiation, the client's identity from the connect event and macros, the
// message rebuilt from header and body events (bounded by limits), and the order of responses.
// Must not: decide anything the engine decides (SPF, policy, signing, the record), or do I/O:
// server.ts reads and writes the socket.

import { BlockList, isIP } from 'node:net';
import { Replies, type SmtpReply } from '../errors.ts';
import type { MessageSink } from '../message/index.ts';
import type { Logger } from '../observability/logger.ts';
import type { ClientFacts, Engine, EngineSession, FrontEnd, HeaderEdits } from '../pipeline/session.ts';
import {
  Action,
  encodeAccept,
  encodeChangeHeader,
  encodeContinue,
  encodeInsertHeader,
  encodeNegotiation,
  encodeReplyCode,
  headerValueForMta,
  MILTER_VERSION,
  MilterProtocolError,
  Protocol,
  type MacroStageName,
  type MilterCommand,
} from './codec.ts';

/** The actions we use: insert header (our fields at the top), change header (delete forged A-R), macro lists. */
const WANTED_ACTIONS = Action.addHeaders | Action.changeHeaders | Action.setMacroList;

/**
 * Steps we skip (unknown commands) and steps we never refuse, so the MTA need not wait for a
 * reply: each header, the end of headers, each body chunk (a refusal for size comes at the end of
 * the message). Postfix then writes the whole message in one go. Every other step is answered,
 * DATA included: a step the MTA writes without waiting for a reply, followed by a pause (the
 * next SMTP command), leaves its next small write waiting on Nagle and our delayed ACK (40 ms per
 * message with DATA skipped; bench:milter 90 → 300 msg/s). HDR_LEADSPC: header values arrive
 * exactly as written.
 */
const WANTED_PROTOCOL =
  Protocol.noUnknown |
  Protocol.noReplyHeader |
  Protocol.noReplyEndOfHeaders |
  Protocol.noReplyBody |
  Protocol.headerLeadingSpace;

/**
 * The macros we ask for where the MTA lets us choose (Postfix >= 2.6; Sendmail 8.14). The connect
 * event already carries the client's address and name; macros add the login and the queue id.
 */
export const WANTED_MACROS: Partial<Record<MacroStageName, readonly string[]>> = {
  connect: ['j', '{daemon_name}', '{client_addr}', '{client_name}'],
  mail: ['i', '{auth_authen}'],
  endOfMessage: ['i'],
};

export interface MilterConnectionOptions {
  frontEnd: FrontEnd;
  engine: Engine;
  logger: Logger;
  /** The listener's trustedNetworks: clients that may have their mail signed without AUTH. */
  trustedNetworks: BlockList;
  /** Each refusal sello hands the MTA (sello_smtp_replies_total); the MTA's own replies are not ours to count. */
  onRefusal?: (stage: 'mail' | 'rcpt' | 'data', code: number) => void;
}

/** The MTA broke the protocol's order (not its framing): close, like a MilterProtocolError. */
function outOfOrder(message: string): MilterProtocolError {
  return new MilterProtocolError(message);
}

/** The message being received, between an accepted MAIL and its end. */
interface Transaction {
  /**
   * The engine's sink: header fields ("Name:value CRLF", CRLF folds restored), the empty line and
   * the body chunks are written into it as they arrive, so the message is hashed and checked as
   * it streams, spilled to a file past data.spillThreshold, and bounded by the size limits.
   */
  sink: MessageSink;
  endOfHeaders: boolean;
  /** A write the sink could not take (a spill file write failed): the message is deferred at its end. */
  failure?: unknown;
}

export class MilterConnection {
  readonly #options: MilterConnectionOptions;
  #session: EngineSession;
  #negotiated = false;
  #leadingSpace = false;
  #protocol = 0;
  #macros = new Map<string, string>();
  #client: { hostname: string; address: string; family: string; port: number } | undefined;
  #helo = '';
  #transaction: Transaction | undefined;
  #connectionNumber = 0;
  readonly #connectionId: string;

  constructor(options: MilterConnectionOptions, connectionId: string) {
    this.#options = options;
    this.#connectionId = connectionId;
    this.#session = options.engine.session(options.frontEnd);
  }

  /** A message is between MAIL and its end (for "disconnected mid-message"). */
  get inMessage(): boolean {
    return this.#transaction !== undefined;
  }

  /**
   * Handles one command; returns the responses to write, in order. Throws MilterProtocolError
   * when the MTA broke the protocol: the caller closes the connection (and calls closed()).
   */
  async handle(command: MilterCommand): Promise<Buffer[]> {
    if (!this.#negotiated && command.command !== 'negotiate') throw outOfOrder(`'${command.command}' before the option negotiation`);
    switch (command.command) {
      case 'negotiate':
        return [this.#negotiate(command.version, command.actions, command.protocol)];
      case 'macros':
        for (const [name, value] of command.macros) this.#macros.set(name, value);
        return [];
      case 'connect':
        this.#client = { hostname: command.hostname, address: command.address, family: command.family, port: command.port };
        return this.#replyUnless(Protocol.noReplyConnect);
      case 'helo':
        this.#helo = command.helo;
        return this.#replyUnless(Protocol.noReplyHelo);
      case 'mail':
        return this.#engineStep('mail', () => this.#mail(command.args[0] as string));
      case 'rcpt':
        return this.#engineStep('rcpt', () => this.#rcpt(command.args[0] as string));
      case 'data':
      case 'unknown':
        return [encodeContinue()];
      case 'header':
        await this.#header(command.name, command.value);
        return this.#replyUnless(Protocol.noReplyHeader);
      case 'endOfHeaders': {
        const transaction = this.#requireTransaction('end of headers');
        if (transaction.endOfHeaders) throw outOfOrder('a second end of headers');
        transaction.endOfHeaders = true;
        // RFC 5322 §2.1: the empty line between the header section and the body.
        await this.#write(transaction, CRLF);
        return this.#replyUnless(Protocol.noReplyEndOfHeaders);
      }
      case 'body':
        await this.#body(command.chunk);
        return this.#replyUnless(Protocol.noReplyBody);
      case 'endOfMessage':
        if (command.chunk.length > 0) await this.#body(command.chunk);
        return this.#engineStep('data', () => this.#endOfMessage());
      case 'abort':
        // SMFIC_ABORT: the message is over (RSET, a refusal elsewhere); the connection goes on.
        this.#endTransaction();
        return [];
      case 'quitNewConnection':
        // SMFIC_QUIT_NC: a new SMTP connection follows on this socket; forget this one's identity.
        this.#endTransaction();
        this.#session = this.#options.engine.session(this.#options.frontEnd);
        this.#macros = new Map();
        this.#client = undefined;
        this.#helo = '';
        this.#connectionNumber++;
        return [];
      case 'quit':
        this.#endTransaction();
        return [];
    }
  }

  /**
   * An engine failure (a bug, not the MTA's fault) is logged and answered 451 4.3.0, as the proxy
   * does; the MTA keeps the message and retries. Protocol errors go on to the caller.
   */
  async #engineStep(what: 'mail' | 'rcpt' | 'data', step: () => Promise<Buffer[]>): Promise<Buffer[]> {
    try {
      return await step();
    } catch (error) {
      if (error instanceof MilterProtocolError) throw error;
      this.#options.logger.error({ err: error, sessionId: this.#connectionId, step: what }, 'milter: the engine failed; answering 451 4.3.0');
      this.#transaction = undefined;
      if (this.#session.transactionOpen) this.#session.failed(Replies.localError, `engine error at ${what}`);
      return [this.#refuse(what, Replies.localError)];
    }
  }

  /** SMFIR_REPLYCODE: the MTA gives `reply` instead of its own (RFC 7372 codes come from the engine). */
  #refuse(stage: 'mail' | 'rcpt' | 'data', reply: SmtpReply): Buffer {
    const packet = encodeReplyCode(reply);
    this.#options.onRefusal?.(stage, reply.code);
    return packet;
  }

  /** The socket closed (by the MTA, or by us after a protocol error): ends any open transaction. */
  closed(): void {
    this.#endTransaction();
  }

  #negotiate(version: number, actions: number, protocol: number): Buffer {
    if (this.#negotiated) throw outOfOrder('a second option negotiation');
    // libmilter (engine.c st_optionneg) refuses MTAs older than version 2; so do we.
    if (version < 2) throw new MilterProtocolError(`the MTA speaks milter protocol version ${version}; 2 or later is needed`);
    if ((actions & Action.addHeaders) === 0 || (actions & Action.changeHeaders) === 0) {
      throw new MilterProtocolError('the MTA does not allow adding and changing header fields');
    }
    this.#negotiated = true;
    this.#protocol = WANTED_PROTOCOL & protocol;
    this.#leadingSpace = (this.#protocol & Protocol.headerLeadingSpace) !== 0;
    const macroLists = (actions & Action.setMacroList) !== 0;
    return encodeNegotiation({
      version: Math.min(version, MILTER_VERSION),
      actions: WANTED_ACTIONS & actions,
      protocol: this.#protocol,
      ...(macroLists ? { macros: WANTED_MACROS } : {}),
    });
  }

  #replyUnless(noReplyFlag: number): Buffer[] {
    return (this.#protocol & noReplyFlag) !== 0 ? [] : [encodeContinue()];
  }

  /** The client as the engine needs it (PRODUCT.md §2: identity from the MTA, which we trust). */
  #clientFacts(): ClientFacts {
    const client = this.#client;
    const address = this.#macros.get('{client_addr}') || client?.address || '';
    const family = isIP(address);
    const user = this.#macros.get('{auth_authen}') || undefined;
    const trusted = family !== 0 && (this.#options.trustedNetworks.check(address, family === 4 ? 'ipv4' : 'ipv6') || this.#isLocalSubmission());
    return {
      sessionId: `${this.#connectionId}${this.#connectionNumber ? `.${this.#connectionNumber}` : ''}`,
      address: address || '127.0.0.1',
      addressKnown: family !== 0 && !this.#isLocalSubmission(),
      helo: this.#helo,
      ...(user ? { user } : {}),
      trusted,
    };
  }

  /**
   * Postfix's non_smtpd_milters (sendmail(1), pickup): cleanup(8) simulates a connection from
   * "localhost" 127.0.0.1 (or ::1) with client port 0 (cleanup_milter.c, MILTER_README "non-SMTP
   * mail"). A real TCP client never has port 0, so this marks local submission, which is signed.
   */
  #isLocalSubmission(): boolean {
    const client = this.#client;
    return client !== undefined && client.port === 0 && (client.address === '127.0.0.1' || client.address === '::1') && client.family !== 'unix';
  }

  #needsMessage(facts: ClientFacts): boolean {
    const { signs, verifies } = this.#options.frontEnd;
    return verifies || (signs && (facts.trusted || facts.user !== undefined));
  }

  async #mail(path: string): Promise<Buffer[]> {
    this.#endTransaction();
    const facts = this.#clientFacts();
    if (!this.#needsMessage(facts)) {
      // A signing-only milter and a client it would not sign for: SMFIR_ACCEPT ends our part in
      // this message, so the MTA sends no header or body events.
      return [encodeAccept()];
    }
    // What the MTA said about itself and the client, for whoever follows a session in the log.
    this.#options.logger.debug(
      { sessionId: facts.sessionId, mta: this.#macros.get('j'), daemon: this.#macros.get('{daemon_name}'), clientName: this.#macros.get('{client_name}') ?? this.#client?.hostname, client: facts.address },
      'milter: MAIL',
    );
    const verdict = await this.#session.mail(unbracket(path), facts);
    if (verdict.action !== 'accept') return [this.#refuse('mail', verdict.reply)];
    this.#transaction = { sink: this.#session.receive(), endOfHeaders: false };
    return [encodeContinue()];
  }

  async #rcpt(path: string): Promise<Buffer[]> {
    if (!this.#session.transactionOpen) throw outOfOrder('RCPT without an accepted MAIL');
    const verdict = await this.#session.rcpt(unbracket(path));
    // RFC 7372 §3 codes (5.7.23 SPF fail …) come from the engine; the MTA sends them as our reply.
    return [verdict.action === 'accept' ? encodeContinue() : this.#refuse('rcpt', verdict.reply)];
  }

  #requireTransaction(what: string): Transaction {
    const transaction = this.#transaction;
    if (!transaction) throw outOfOrder(`${what} outside a message (no MAIL accepted)`);
    return transaction;
  }

  async #header(name: string, value: Buffer): Promise<void> {
    const transaction = this.#requireTransaction('a header');
    if (transaction.endOfHeaders) throw outOfOrder('a header after the end of headers');
    // RFC 5322 §2.2: name ":" value CRLF; the MTA sends folds as LF (milter8.c), we restore CRLF.
    await this.#write(transaction, Buffer.concat([Buffer.from(`${name}:${this.#leadingSpace ? '' : ' '}`, 'latin1'), crlfLines(value), CRLF]));
  }

  async #body(chunk: Buffer): Promise<void> {
    const transaction = this.#requireTransaction('a body chunk');
    if (!transaction.endOfHeaders) throw outOfOrder('a body chunk before the end of headers');
    await this.#write(transaction, chunk);
  }

  /** Into the sink; past a limit it only counts (the refusal comes at the end, 552 5.3.4). */
  async #write(transaction: Transaction, bytes: Buffer): Promise<void> {
    if (transaction.failure !== undefined) return;
    await transaction.sink.write(bytes).catch((error: unknown) => (transaction.failure = error));
  }

  async #endOfMessage(): Promise<Buffer[]> {
    const transaction = this.#requireTransaction('the end of message');
    this.#transaction = undefined;
    try {
      if (transaction.failure !== undefined) {
        this.#options.logger.warn({ err: transaction.failure instanceof Error ? transaction.failure.message : String(transaction.failure) }, 'milter: the message could not be received');
        this.#session.failed(Replies.localError, 'the message could not be received');
        return [this.#refuse('data', Replies.localError)];
      }
      // The sink refuses an oversized message or header section at its end (552 5.3.4, as the proxy).
      const verdict = await this.#session.end(transaction.sink);
      if (verdict.action !== 'accept') return [this.#refuse('data', verdict.reply)];
      const responses = this.#edits(verdict.edits);
      const queueId = this.#macros.get('i');
      this.#session.delivered({ code: 250, ...(queueId ? { queueId } : {}) });
      return [...responses, encodeContinue()];
    } finally {
      await transaction.sink.dispose();
    }
  }

  /**
   * Deletions first, highest index first (each index counts the fields of that name as received,
   * so neither our inserted fields nor earlier deletions shift the ones still to delete), then
   * the new fields inserted at the top, bottom-most first so they end up in the engine's order.
   */
  #edits(edits: HeaderEdits): Buffer[] {
    const deletions = [...edits.remove]
      .sort((a, b) => b.index - a.index)
      .map(({ name, index }) => encodeChangeHeader(index, name, Buffer.alloc(0)));
    const insertions = [...edits.add].reverse().map((field) => {
      const colon = field.indexOf(':');
      if (colon <= 0) throw new Error(`engine produced a header field without a name: ${JSON.stringify(field.slice(0, 40))}`);
      return encodeInsertHeader(0, field.slice(0, colon), headerValueForMta(field.slice(colon + 1), this.#leadingSpace));
    });
    return [...deletions, ...insertions];
  }

  #endTransaction(): void {
    const transaction = this.#transaction;
    this.#transaction = undefined;
    // The spill file goes on every path; the engine's abort disposes it too.
    if (transaction) void transaction.sink.dispose();
    if (this.#session.transactionOpen) this.#session.abort();
  }
}

const CRLF = Buffer.from('\r\n');

/** "<a@example.org>" → "a@example.org"; "<>" → "" (the null sender). */
function unbracket(path: string): string {
  const trimmed = path.trim();
  return trimmed.startsWith('<') && trimmed.endsWith('>') ? trimmed.slice(1, -1) : trimmed;
}

/** Header value bytes with every bare LF (the MTA's fold) as CRLF. */
function crlfLines(value: Buffer): Buffer {
  if (!value.includes(0x0a)) return value;
  const out: number[] = [];
  for (let index = 0; index < value.length; index++) {
    const byte = value[index] as number;
    if (byte === 0x0a && value[index - 1] !== 0x0d) out.push(0x0d);
    out.push(byte);
  }
  return Buffer.from(out);
}

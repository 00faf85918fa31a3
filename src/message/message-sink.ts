// The message as it streams in during DATA, with bounded memory (docs/performance.md "Memory").
// Owns: the line-ending policy applied chunk by chunk (line-endings.ts: a CR at the end of one
// chunk pairs with an LF at the start of the next), the header section held in memory up to limits.maxHeaderSize,
// counting and discarding an oversized message, the body in memory up to data.spillThreshold and
// in a private temporary file (0600, O_EXCL) past it, and handing every byte to the observers the
// engine attached (body hashes, the DKIM/ARC verifier) as it arrives.
// Must not: decide what happens to the message, sign, verify or deliver; import mailauth.

import { randomBytes } from 'node:crypto';
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { Replies, SmtpReplyError, type SmtpReply } from '../errors.ts';
import { bigMessageFrom, bigMessageOctets, bodySpilled, messageActivity } from './garbage.ts';
import { LineEndingNormalizer } from './line-endings.ts';
import { stripNul } from './message.ts';
import { forgetSpillDirectory, spillDirectoryReady, spillFileName } from './spill-directory.ts';

const CR = 0x0d;
const LF = 0x0a;
const emptyLine = Buffer.from('\r\n\r\n');
/** Size of the pieces a spilled body is read back in. */
const readChunkBytes = 64 * 1024;


/** Something that takes the message bytes (CRLF line endings applied) as they arrive. */
export interface MessageObserver {
  /** May return a promise that holds the sender back until the observer has caught up. */
  write(chunk: Buffer): void | Promise<void>;
  /** The message is complete. */
  end(): void;
  /** The message was refused or abandoned: nothing more comes. */
  abort(): void;
}

/** A received message: its header section in memory, the rest in memory or in a spill file. */
export interface MessageSource {
  /** The header section: its fields, each ending in CRLF, without the empty line. */
  readonly header: Buffer;
  /** Octets of the message (header, empty line and body) with CRLF line endings. */
  readonly size: number;
  /** The body is in a temporary file (larger than data.spillThreshold). */
  readonly spilled: boolean;
  /** Everything after the header section (the empty line, then the body), read again on each call. */
  rest(): AsyncIterable<Buffer>;
}

export interface MessageSinkOptions {
  maxMessageSize: number;
  maxHeaderSize: number;
  bareLineEndings: 'normalize' | 'reject';
  /** data.nul: NUL octets refuse the message (550 5.6.0) or are removed before anything else sees them. */
  nul: 'reject' | 'strip';
  /** Bodies larger than this are spilled to a file; Infinity keeps them in memory. */
  spillThreshold: number;
  spillDirectory: string;
}

/**
 * The oversize rule in one place (RFC 5321 §4.5.3.1.7, RFC 1870 §6.3): past maxMessageSize the
 * message is refused with 552 5.3.4 at its end, and every byte after the limit is only counted.
 */
export function exceedsMessageSize(receivedOctets: number, maxMessageSize: number): boolean {
  return receivedOctets > maxMessageSize;
}

/**
 * One message being received. write() each chunk of DATA as it arrives (awaiting it holds the
 * client back while a spill write or an observer catches up), then finish() for the source, or
 * the SmtpReplyError that refuses it; dispose() on every path removes the spill file.
 */
export class MessageSink implements MessageSource {
  readonly #options: MessageSinkOptions;
  readonly #normalizer = new LineEndingNormalizer();
  readonly #messageObservers: MessageObserver[] = [];
  readonly #bodyObservers: MessageObserver[] = [];
  #receivedOctets = 0;
  #refusal: { reply: SmtpReply; reason: string } | undefined;
  #finished = false;
  #disposed = false;
  #disposal: Promise<void> | undefined;
  /** Header phase: what came so far, until the empty line (bounded by maxHeaderSize). */
  #headerPieces: Buffer[] = [];
  #headerPiecesLength = 0;
  /** The last (up to) 3 octets of the header pieces: a CRLF CRLF may straddle two chunks. */
  #headerTail: Buffer = Buffer.alloc(0);
  #header: Buffer | undefined;
  /** After the header: the empty line and the body, in memory until spilled. */
  #rest: Buffer[] = [];
  #restLength = 0;
  /** Octets of the empty line still to pass before body observers get bytes. */
  #separatorLeft = 2;
  #spillFile: FileHandle | undefined;
  #spillPath: string | undefined;

  constructor(options: MessageSinkOptions) {
    this.#options = options;
    messageActivity();
  }

  /** Every byte of the message as it arrives (a verifier that parses the header itself). */
  observeMessage(observer: MessageObserver): void {
    this.#messageObservers.push(observer);
  }

  /** Every byte after the empty line (a body hash). */
  observeBody(observer: MessageObserver): void {
    this.#bodyObservers.push(observer);
  }

  get header(): Buffer {
    if (!this.#header) throw new Error('MessageSink: the message is not finished');
    return this.#header;
  }

  get size(): number {
    return this.header.length + this.#restLength;
  }

  get spilled(): boolean {
    return this.#spillPath !== undefined;
  }

  /** The spill file while it exists (tests, logs); undefined when the body is in memory. */
  get spillPath(): string | undefined {
    return this.#spillPath;
  }

  /** Octets received so far, as sent (before line endings were made CRLF), the oversized ones included. */
  get receivedOctets(): number {
    return this.#receivedOctets;
  }

  async write(chunk: Buffer): Promise<void> {
    if (this.#finished || this.#disposed) throw new Error('MessageSink: write after finish or dispose');
    this.#receivedOctets += chunk.length;
    messageActivity();
    // The dead buffers a big message leaves behind are collected as it passes (garbage.ts).
    if (this.#receivedOctets > bigMessageFrom) bigMessageOctets(chunk.length);
    if (this.#refusal) return; // counted, not kept
    if (exceedsMessageSize(this.#receivedOctets, this.#options.maxMessageSize)) {
      await this.#refuse(Replies.messageTooLarge, `message exceeds limits.maxMessageSize (${this.#options.maxMessageSize} octets)`);
      return;
    }
    // RFC 5322 §2.3 has no place for NUL. Decided before line endings are read, so that "\n\x00.\n"
    // is never half-understood: an MTA that drops NULs would see an end of data there (smuggling).
    if (chunk.includes(0)) {
      if (this.#options.nul === 'reject') {
        await this.#refuse(Replies.nulInMessage, 'message contains NUL octets (data.nul: reject)');
        return;
      }
      chunk = stripNul(chunk);
    }
    await this.#take(this.#normalizer.push(chunk));
  }

  /** The end of DATA: the source, or SmtpReplyError (552 5.3.4 too large, 550 5.6.0 bare line ending). */
  async finish(): Promise<MessageSource> {
    if (this.#disposed) throw new Error('MessageSink: finish after dispose');
    if (!this.#refusal) await this.#take(this.#normalizer.end());
    if (!this.#refusal && !this.#header) {
      // RFC 5322 §2.1: no empty line, so the whole message is header.
      const header = Buffer.concat(this.#headerPieces);
      this.#headerPieces = [];
      if (header.length > this.#options.maxHeaderSize) await this.#refuse(Replies.headerTooLarge, `header section exceeds limits.maxHeaderSize (${this.#options.maxHeaderSize} octets)`);
      else this.#header = header;
    }
    if (this.#refusal) throw new SmtpReplyError(this.#refusal.reply, this.#refusal.reason);
    this.#finished = true;
    for (const observer of [...this.#messageObservers, ...this.#bodyObservers]) observer.end();
    return this;
  }

  async *rest(): AsyncGenerator<Buffer> {
    if (!this.#finished) throw new Error('MessageSink: the message is not finished');
    if (!this.#spillFile) {
      yield* this.#rest;
      return;
    }
    const big = this.#restLength > bigMessageFrom;
    for (let position = 0; position < this.#restLength; ) {
      if (this.#disposed) throw new Error('MessageSink: read after dispose');
      // A new Buffer each time: the relay may still hold the previous one in its socket queue.
      const piece = Buffer.allocUnsafe(Math.min(readChunkBytes, this.#restLength - position));
      const { bytesRead } = await this.#spillFile.read(piece, 0, piece.length, position);
      if (bytesRead === 0) throw new Error(`spill file ${this.#spillPath} ended early at ${position} of ${this.#restLength} octets`);
      position += bytesRead;
      messageActivity();
      if (big) bigMessageOctets(bytesRead);
      yield bytesRead === piece.length ? piece : piece.subarray(0, bytesRead);
    }
  }

  /**
   * Drops the message: aborts observers still waiting, closes and removes the spill file.
   * Idempotent: every call resolves once the file is gone, whoever called first.
   */
  dispose(): Promise<void> {
    if (this.#disposal) return this.#disposal;
    this.#disposed = true;
    if (!this.#finished) for (const observer of [...this.#messageObservers, ...this.#bodyObservers]) observer.abort();
    this.#headerPieces = [];
    this.#rest = [];
    this.#disposal = this.#removeSpillFile();
    return this.#disposal;
  }

  /** Refuses at the end of DATA; what came so far is dropped, what comes after is only counted. */
  async #refuse(reply: SmtpReply, reason: string): Promise<void> {
    this.#refusal = { reply, reason };
    for (const observer of [...this.#messageObservers, ...this.#bodyObservers]) observer.abort();
    this.#headerPieces = [];
    this.#rest = [];
    this.#restLength = 0;
    await this.#removeSpillFile();
  }

  /** Normalized bytes: to the message observers, then into the header or the rest. */
  async #take(bytes: Buffer): Promise<void> {
    if (bytes.length === 0) return;
    if (this.#normalizer.sawBareLineEnding && this.#options.bareLineEndings === 'reject') {
      await this.#refuse(Replies.bareLineEnding, 'message has a bare CR or LF line ending (data.bareLineEndings: reject)');
      return;
    }
    for (const observer of this.#messageObservers) await observer.write(bytes);
    if (this.#header) {
      await this.#takeRest(bytes);
      return;
    }
    // RFC 5322 §2.1: the header section ends at the first empty line. Only the last 3 octets of
    // what came before can be part of a CRLF CRLF that ends in `bytes`.
    const before = this.#headerPiecesLength;
    const tailLength = this.#headerTail.length;
    const searched = tailLength === 0 ? bytes : Buffer.concat([this.#headerTail, bytes]);
    // RFC 5322 §2.1: a message that starts with an empty line has an empty header section.
    const startsEmpty = before < 2 && searched.length >= 2 && searched[0] === CR && searched[1] === LF;
    const found = startsEmpty ? -1 : searched.indexOf(emptyLine);
    if (!startsEmpty && found === -1) {
      this.#headerPieces.push(bytes);
      this.#headerPiecesLength += bytes.length;
      this.#headerTail = Buffer.from(searched.subarray(Math.max(0, searched.length - 3)));
      // A header section that ends later is at least this long less the CRLF CRLF's first octet.
      if (this.#headerPiecesLength - 1 > this.#options.maxHeaderSize) {
        await this.#refuse(Replies.headerTooLarge, `header section exceeds limits.maxHeaderSize (${this.#options.maxHeaderSize} octets)`);
      }
      return;
    }
    const headerEnd = startsEmpty ? 0 : before - tailLength + found + 2; // the header keeps its last CRLF
    const all = Buffer.concat([...this.#headerPieces, bytes]);
    this.#headerPieces = [];
    this.#headerPiecesLength = 0;
    if (headerEnd > this.#options.maxHeaderSize) {
      await this.#refuse(Replies.headerTooLarge, `header section exceeds limits.maxHeaderSize (${this.#options.maxHeaderSize} octets)`);
      return;
    }
    // A copy, so the header does not keep the rest of the chunk it arrived in alive.
    this.#header = Buffer.from(all.subarray(0, headerEnd));
    await this.#takeRest(all.subarray(headerEnd));
  }

  /** Bytes after the header section: kept in memory up to the threshold, then in the spill file. */
  async #takeRest(bytes: Buffer): Promise<void> {
    if (bytes.length === 0) return;
    const body = this.#separatorLeft > 0 ? bytes.subarray(Math.min(this.#separatorLeft, bytes.length)) : bytes;
    this.#separatorLeft = Math.max(0, this.#separatorLeft - bytes.length);
    if (body.length > 0) for (const observer of this.#bodyObservers) await observer.write(body);
    this.#restLength += bytes.length;
    if (this.#spillFile) {
      await this.#spillFile.write(bytes);
      return;
    }
    this.#rest.push(bytes);
    if (this.#restLength > this.#options.spillThreshold) await this.#spill();
  }

  /** Moves the body held so far into a new private file; the rest of it goes there too. */
  async #spill(): Promise<void> {
    const directory = this.#options.spillDirectory;
    await spillDirectoryReady(directory);
    const spillPath = `${directory}/${spillFileName(randomBytes(8).toString('hex'))}`;
    // 'wx+': O_CREAT | O_EXCL (never an existing file or a planted symlink), read and write; 0600.
    this.#spillFile = await open(spillPath, 'wx+', 0o600).catch(async (error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw error;
      // The directory was removed since it was checked (a /tmp cleaner): made again, once.
      forgetSpillDirectory(directory);
      await spillDirectoryReady(directory);
      return open(spillPath, 'wx+', 0o600);
    });
    this.#spillPath = spillPath;
    const held = this.#rest;
    this.#rest = [];
    for (const piece of held) await this.#spillFile.write(piece);
    held.length = 0; // `held` is still in scope below: emptied, so the collection can free the pieces
    // What held a big body is garbage now, in V8's old generation (garbage.ts).
    if (this.#restLength > bigMessageFrom) bodySpilled();
  }

  async #removeSpillFile(): Promise<void> {
    const file = this.#spillFile;
    const spillPath = this.#spillPath;
    this.#spillFile = undefined;
    this.#spillPath = undefined;
    if (file) await file.close().catch(() => undefined);
    if (spillPath) await unlink(spillPath).catch(() => undefined);
  }
}

/** The whole message (header, then the rest) as chunks: what a front end relays when nothing is edited. */
export async function* messageChunks(source: MessageSource): AsyncGenerator<Buffer> {
  yield source.header;
  yield* source.rest();
}

/** The whole message as one Buffer: only for a message held in memory (end(Buffer), sello sign). */
export async function messageBytes(source: MessageSource): Promise<Buffer> {
  const pieces: Buffer[] = [];
  for await (const chunk of messageChunks(source)) pieces.push(chunk);
  return Buffer.concat(pieces);
}

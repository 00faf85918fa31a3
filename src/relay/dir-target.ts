// The embedded dir:PATH relay target, so sello runs with no MTA (PRODUCT.md §3): every message
// becomes one <unique>.eml file with its envelope in two leading header lines.
// Owns: the envelope header lines and the atomic write (temp file, fsync, rename, fsync dir).
// Must not: check recipients or senders (policy runs before), or answer 250 before the file is
// durably in place.

import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { access, chmod, mkdir, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError, Replies, SmtpReplyError, reply, type SmtpReply } from '../errors.ts';
import { BareLineEndingScanner, findBareLineEnding } from './dot-stuffing.ts';
import type {
  ClientIdentity,
  Credentials,
  DataReply,
  MailParameters,
  MessageBody,
  RecipientParameters,
  RelaySession,
  RelayTarget,
  SmtpRelayConfig,
} from './types.ts';

const directoryMode = 0o750;
const messageFileMode = 0o640;
const senderAccepted = reply(250, '2.1.0', 'Sender OK');
const recipientAccepted = reply(250, '2.1.5', 'Recipient OK');
const noSender = reply(503, '5.5.1', 'MAIL first');

/** "dir:PATH" → absolute directory (a relative PATH is taken from the working directory). */
export function parseDirUrl(url: string, configPath = 'relay.target'): string {
  const directory = url.startsWith('dir:') ? url.slice('dir:'.length) : '';
  if (!directory) throw new ConfigError(configPath, `"${url}" is not a usable relay target: expected dir:PATH`);
  return path.resolve(directory);
}

/**
 * The two envelope lines Exim writes into delivered mail: "Return-Path: <sender>" and
 * "Envelope-To: a, b", folded (RFC 5322 §2.2.3) so no line outgrows 78 characters needlessly.
 */
export function envelopeHeader(sender: string, recipients: readonly string[]): Buffer {
  for (const address of [sender, ...recipients]) {
    if (/[\r\n]/.test(address)) throw new TypeError('envelope address must not contain CR or LF');
  }
  let envelopeTo = 'Envelope-To:';
  let lineLength = envelopeTo.length;
  recipients.forEach((recipient, index) => {
    const separator = index === 0 ? '' : ',';
    if (index > 0 && lineLength + separator.length + 1 + recipient.length > 78) {
      envelopeTo += `${separator}\r\n\t${recipient}`;
      lineLength = 1 + recipient.length;
    } else {
      envelopeTo += `${separator} ${recipient}`;
      lineLength += separator.length + 1 + recipient.length;
    }
  });
  return Buffer.from(`Return-Path: <${sender}>\r\n${envelopeTo}\r\n`, 'utf8');
}

/** Creates the directory (mode 0750, umask notwithstanding) when it does not exist. */
async function ensureDirectory(directory: string): Promise<void> {
  const created = await mkdir(directory, { recursive: true, mode: directoryMode });
  if (created !== undefined) await chmod(directory, directoryMode);
}

/**
 * Writes the file under a temporary dot-name in the same directory, fsyncs it, renames it to
 * <unique>.eml and fsyncs the directory so the rename survives a crash. Readers that glob
 * *.eml never see a partial message. Returns the file name.
 */
export async function writeMessageFile(directory: string, content: readonly Buffer[] | AsyncIterable<Buffer>): Promise<string> {
  await ensureDirectory(directory);
  const unique = `${Date.now()}.${process.pid}.${randomBytes(8).toString('hex')}`;
  const temporaryPath = path.join(directory, `.${unique}.tmp`);
  const fileName = `${unique}.eml`;
  let file: FileHandle | undefined;
  try {
    file = await open(temporaryPath, 'wx', messageFileMode);
    await file.chmod(messageFileMode);
    await file.writeFile(content);
    await file.sync();
    await file.close();
    file = undefined;
    await rename(temporaryPath, path.join(directory, fileName));
  } catch (error) {
    await file?.close().catch(() => {});
    await unlink(temporaryPath).catch(() => {});
    throw error;
  }
  const directoryHandle = await open(directory, 'r');
  try {
    await directoryHandle.sync();
  } finally {
    await directoryHandle.close();
  }
  return fileName;
}

class DirSession implements RelaySession {
  private readonly directory: string;
  private sender: string | undefined;
  private recipients: string[] = [];
  private isClosed = false;
  private readonly onWriteError: WriteErrorObserver | undefined;

  constructor(directory: string, onWriteError: WriteErrorObserver | undefined) {
    this.directory = directory;
    this.onWriteError = onWriteError;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  async authenticate(_credentials: Credentials): Promise<SmtpReply> {
    return Replies.authUnavailable;
  }

  async mailFrom(address: string, _parameters: MailParameters): Promise<SmtpReply> {
    this.sender = address;
    this.recipients = [];
    return senderAccepted;
  }

  async rcptTo(address: string, _parameters: RecipientParameters): Promise<SmtpReply> {
    if (this.sender === undefined) return noSender;
    this.recipients.push(address);
    return recipientAccepted;
  }

  /** 250 only once the file is durably in place; a failed write is 451 4.3.0 so the client retries. */
  async data(chunks: MessageBody): Promise<DataReply> {
    // Same contract as the SMTP client: CRLF-only input, whatever the target. An array is checked
    // before anything is written; streamed chunks as they are written (the file is then removed).
    if (Array.isArray(chunks)) refuseBareLineEnding(findBareLineEnding(chunks as readonly Buffer[]));
    if (this.sender === undefined) return noSender;
    if (this.recipients.length === 0) return Replies.noValidRecipients;
    const header = envelopeHeader(this.sender, this.recipients);
    this.sender = undefined;
    this.recipients = [];
    try {
      const fileName = await writeMessageFile(this.directory, Array.isArray(chunks) ? [header, ...(chunks as readonly Buffer[])] : checkedWithHeader(header, chunks as AsyncIterable<Buffer>));
      return { ...reply(250, '2.0.0', `OK saved as ${fileName}`), queueId: fileName };
    } catch (error) {
      if (error instanceof SmtpReplyError) throw error;
      this.onWriteError?.(error);
      return Replies.localError;
    }
  }

  async reset(): Promise<void> {
    this.sender = undefined;
    this.recipients = [];
  }

  async close(): Promise<void> {
    this.isClosed = true;
  }
}

function refuseBareLineEnding(bareAt: number): void {
  if (bareAt !== -1) throw new SmtpReplyError(Replies.bareLineEnding, `message has a bare CR or LF at byte ${bareAt}; not written`);
}

/** The envelope lines, then streamed chunks, each checked before it is written (a bare CR or LF ends the write). */
async function* checkedWithHeader(header: Buffer, chunks: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  yield header;
  const scanner = new BareLineEndingScanner();
  for await (const chunk of chunks) {
    refuseBareLineEnding(scanner.push(chunk));
    yield chunk;
  }
  refuseBareLineEnding(scanner.end());
}

/** Told why a message could not be written (the client only gets 451 4.3.0); for logs. */
export type WriteErrorObserver = (error: unknown) => void;

export class DirTarget implements RelayTarget {
  readonly description: string;
  readonly supportsAuth = false;
  /** No MTA learns anything: the files record no client. */
  readonly forward = 'none';
  readonly directory: string;
  private readonly onWriteError: WriteErrorObserver | undefined;

  constructor(config: Pick<SmtpRelayConfig, 'url'>, configPath = 'relay.target', onWriteError?: WriteErrorObserver) {
    this.directory = parseDirUrl(config.url, configPath);
    this.description = `dir:${this.directory}`;
    this.onWriteError = onWriteError;
  }

  async open(_client: ClientIdentity): Promise<RelaySession> {
    return new DirSession(this.directory, this.onWriteError);
  }

  /** The directory exists (created if need be) and this process may create files in it. */
  async probe(): Promise<void> {
    await ensureDirectory(this.directory);
    await access(this.directory, constants.W_OK | constants.X_OK);
  }
}

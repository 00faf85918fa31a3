// The message bytes as they go on the wire after DATA: a bare CR/LF check and dot-stuffing.
// Owns: RFC 5321 §4.5.2 transparency and the end-of-data sequence, across chunk boundaries.
// Must not: normalise line endings (the pipeline does that before signing, so the signed bytes
// are the relayed bytes) or do I/O.

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const extraDot = Buffer.from('.');
const endOfData = Buffer.from('.\r\n');
const crlfEndOfData = Buffer.from('\r\n.\r\n');

/**
 * Offset (counted over all chunks) of the first bare CR or bare LF, or -1 when every CR is
 * followed by LF and every LF preceded by CR. A CR at the end of one chunk pairs with an LF at
 * the start of the next.
 */
export function findBareLineEnding(chunks: readonly Buffer[]): number {
  const scanner = new BareLineEndingScanner();
  for (const chunk of chunks) {
    const bareAt = scanner.push(chunk);
    if (bareAt !== -1) return bareAt;
  }
  return scanner.end();
}

/**
 * findBareLineEnding for a message that arrives chunk by chunk (a body streamed from a spill
 * file): each chunk is checked before it is sent, so nothing after a bare CR or LF leaves.
 */
export class BareLineEndingScanner {
  #offset = 0;
  #previousByte = -1;
  /** Offset of a CR that ended the previous non-empty chunk. */
  #pendingCarriageReturn = -1;

  /** Offset of the first bare CR or LF found up to the end of `chunk` (a CR at its very end still pending), or -1. */
  push(chunk: Buffer): number {
    if (chunk.length === 0) return -1;
    if (this.#pendingCarriageReturn !== -1 && chunk[0] !== LF) return this.#pendingCarriageReturn;
    this.#pendingCarriageReturn = -1;
    for (let index = chunk.indexOf(LF); index !== -1; index = chunk.indexOf(LF, index + 1)) {
      const before = index === 0 ? this.#previousByte : chunk[index - 1];
      if (before !== CR) return this.#offset + index;
    }
    for (let index = chunk.indexOf(CR); index !== -1; index = chunk.indexOf(CR, index + 1)) {
      if (index === chunk.length - 1) this.#pendingCarriageReturn = this.#offset + index;
      else if (chunk[index + 1] !== LF) return this.#offset + index;
    }
    this.#previousByte = chunk[chunk.length - 1] ?? -1;
    this.#offset += chunk.length;
    return -1;
  }

  /** At the end of the message: a final CR with no LF after it is bare. */
  end(): number {
    return this.#pendingCarriageReturn;
  }
}

/**
 * Dot-stuffs a CRLF message chunk by chunk (RFC 5321 §4.5.2: a line that begins with "." gets
 * one more "."), remembering whether the previous chunk ended a line, and produces the
 * end-of-data sequence: CRLF "." CRLF, with the CRLF added only when the message does not
 * already end with one. Feed it only input that passed findBareLineEnding: with a bare LF in
 * the input a "\n.\n" would still end the message early at some servers (SMTP smuggling).
 */
export class DotStuffer {
  private atLineStart = true;
  private secondToLastByte = -1;
  private lastByte = -1;

  /** The chunk as it goes on the wire; the same Buffer when it needs no stuffing. */
  push(chunk: Buffer): Buffer {
    if (chunk.length === 0) return chunk;
    const pieces: Buffer[] = [];
    let start = 0;
    if (this.atLineStart && chunk[0] === DOT) pieces.push(extraDot);
    for (let index = chunk.indexOf(LF); index !== -1; index = chunk.indexOf(LF, index + 1)) {
      if (chunk[index + 1] !== DOT) continue;
      pieces.push(chunk.subarray(start, index + 1), extraDot);
      start = index + 1;
    }
    this.secondToLastByte = chunk.length >= 2 ? (chunk[chunk.length - 2] ?? -1) : this.lastByte;
    this.lastByte = chunk[chunk.length - 1] ?? -1;
    this.atLineStart = this.lastByte === LF;
    if (pieces.length === 0) return chunk;
    pieces.push(chunk.subarray(start));
    return Buffer.concat(pieces);
  }

  /** The bytes that end the data: ".\r\n", preceded by "\r\n" when the message lacks it. */
  end(): Buffer {
    const empty = this.lastByte === -1;
    const endsWithCrlf = this.secondToLastByte === CR && this.lastByte === LF;
    return empty || endsWithCrlf ? endOfData : crlfEndOfData;
  }
}

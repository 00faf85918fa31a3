// The relaxed body hash (RFC 6376 §3.4.4 canonicalization, §3.7 SHA-256) of a body that arrives
// in chunks, in sello's own code because it runs on every signed message: mailauth's hasher looks
// at every byte in JavaScript, three times the cost of the SHA-256 itself (npm run bench, 100 KiB).
// Owns: the canonicalization and the hash. A chunk that needs no change (no tab, no run of
// spaces, no space before a line end) is hashed as it is, found with native searches; any other
// chunk goes byte by byte. Both give mailauth's result (test/unit/signing/relaxed-body-hash.test.ts
// compares them on random bodies cut into random chunks).
// Must not: keep the body: only the state of the line being read is kept.

import { createHash, type Hash } from 'node:crypto';

const CR = 0x0d;
const LF = 0x0a;
const SPACE = 0x20;
const TAB = 0x09;
const lineEnd = Buffer.from('\r\n');
/** Withheld empty lines are hashed from this, a block at a time. */
const lineEnds = Buffer.from('\r\n'.repeat(4096));
export interface RelaxedBodyHashOptions {
  /**
   * The caller guarantees CRLF line endings: every LF follows a CR and every CR is followed by LF
   * (in the same chunk or at the start of the next). MessageSink's normalizer does. Only then are
   * unchanged chunks hashed without looking at each byte.
   */
  readonly crlfLineEndings?: boolean;
}

export class RelaxedBodyHash {
  readonly #hash: Hash = createHash('sha256');
  readonly #crlfLineEndings: boolean;
  /** Empty lines seen and not hashed yet: §3.4.4 (b) drops them if nothing but empty lines follows. */
  #withheldLineEnds = 0;
  /** The line being read has had a character other than whitespace. */
  #lineHasContent = false;
  /** Whitespace was read on this line and not hashed yet: one SP if content follows (§3.4.4 a). */
  #pendingSpace = false;
  /** The previous chunk ended in CR: a line end if this one starts with LF, else content. */
  #pendingCarriageReturn = false;
  #finished = false;

  constructor(options: RelaxedBodyHashOptions = {}) {
    this.#crlfLineEndings = options.crlfLineEndings ?? false;
  }

  update(chunk: Buffer): void {
    if (this.#finished) throw new Error('RelaxedBodyHash: update after digest');
    if (chunk.length === 0) return;
    if (!this.#hashUnchanged(chunk)) this.#canonicalize(chunk);
  }

  /** The base64 SHA-256 of the canonicalized body; the body is complete now. */
  digest(): string {
    if (this.#finished) throw new Error('RelaxedBodyHash: digest twice');
    if (this.#pendingCarriageReturn) {
      // A CR at the very end is no line end: it is content.
      this.#pendingCarriageReturn = false;
      this.#canonicalize(Buffer.alloc(0), true);
    }
    // §3.4.4 (b): a non-empty body that does not end in CRLF gets one; trailing empty lines go.
    if (this.#lineHasContent) this.#hash.update(lineEnd);
    this.#finished = true;
    return this.#hash.digest('base64');
  }

  /**
   * Hashes `chunk` as it is when canonicalization leaves it unchanged, apart from empty lines at
   * its end (withheld) and line state carried over from the previous chunk. False: nothing done.
   */
  #hashUnchanged(chunk: Buffer): boolean {
    if (!this.#crlfLineEndings || this.#pendingCarriageReturn) return false;
    const first = chunk[0] as number;
    // Whitespace carried over must meet content, or it is a run or trailing whitespace.
    if (this.#pendingSpace && (first === SPACE || first === TAB || first === CR || first === LF)) return false;
    if (first === LF || chunk.indexOf(TAB) !== -1 || hasSpaceRunOrTrailingSpace(chunk)) return false;
    const last = chunk[chunk.length - 1] as number;
    if (last === CR) return false;
    // A space at the end may be trailing whitespace: it waits for the next chunk.
    const endsInSpace = last === SPACE;
    const end = endsInSpace ? chunk.length - 1 : chunk.length;
    // Empty lines at the start end the current line (if it is empty) and more empty lines.
    let start = 0;
    if (!this.#lineHasContent && !this.#pendingSpace) {
      while (start + 1 < end && chunk[start] === CR && chunk[start + 1] === LF) start += 2;
      this.#withheldLineEnds += start / 2;
    }
    if (start === end) {
      this.#pendingSpace = this.#pendingSpace || endsInSpace;
      return true;
    }
    // Empty lines at the end are withheld; the CRLF that ends the last content line is not.
    let contentEnd = end;
    let trailing = 0;
    while (contentEnd - 2 >= start && chunk[contentEnd - 2] === CR && chunk[contentEnd - 1] === LF) {
      contentEnd -= 2;
      trailing++;
    }
    let withheldAfter = 0;
    if (trailing > 0) {
      // The first CRLF of the run ends the line with content before it.
      contentEnd += 2;
      withheldAfter = trailing - 1;
    }
    this.#flushWithheld();
    if (this.#pendingSpace) this.#hash.update(spaceOnly);
    this.#hash.update(start === 0 && contentEnd === chunk.length ? chunk : chunk.subarray(start, contentEnd));
    this.#withheldLineEnds = withheldAfter;
    this.#lineHasContent = trailing === 0;
    this.#pendingSpace = endsInSpace;
    return true;
  }

  /** Byte by byte, as RFC 6376 §3.4.4 reads: for chunks that need changes. */
  #canonicalize(chunk: Buffer, carriageReturnIsContent = false): void {
    // Room for the chunk, a carried CR and a space; a bare LF grows into CRLF.
    const out = Buffer.allocUnsafe(chunk.length * 2 + 4);
    let length = 0;
    // The line state in locals for the loop, written back at its end.
    let pendingCarriageReturn = this.#pendingCarriageReturn;
    let pendingSpace = this.#pendingSpace;
    let lineHasContent = this.#lineHasContent;
    let index = carriageReturnIsContent ? -1 : 0;
    for (; index < chunk.length; index++) {
      let byte = index === -1 ? CR : (chunk[index] as number);
      if (pendingCarriageReturn) {
        pendingCarriageReturn = false;
        if (byte !== LF) {
          // The CR was content after all: this byte is looked at again after it.
          byte = CR;
          index--;
        }
      } else if (byte === CR && index !== -1) {
        pendingCarriageReturn = true;
        continue;
      }
      if (byte === LF) {
        // A line end (a bare LF too, hashed as CRLF). An empty line waits (§3.4.4 b).
        if (lineHasContent) {
          out[length++] = CR;
          out[length++] = LF;
        } else {
          this.#withheldLineEnds++;
        }
        lineHasContent = false;
        pendingSpace = false;
      } else if (byte === SPACE || byte === TAB) {
        pendingSpace = true; // a run becomes one SP, if content follows on the line (§3.4.4 a)
      } else {
        if (!lineHasContent) {
          if (this.#withheldLineEnds > 0) {
            this.#hash.update(out.subarray(0, length));
            length = 0;
            this.#flushWithheld();
          }
          lineHasContent = true;
        }
        if (pendingSpace) {
          out[length++] = SPACE;
          pendingSpace = false;
        }
        out[length++] = byte;
      }
    }
    this.#pendingCarriageReturn = pendingCarriageReturn;
    this.#pendingSpace = pendingSpace;
    this.#lineHasContent = lineHasContent;
    if (length > 0) this.#hash.update(out.subarray(0, length));
  }

  #flushWithheld(): void {
    let left = this.#withheldLineEnds;
    while (left > 0) {
      const pairs = Math.min(left, lineEnds.length / 2);
      this.#hash.update(lineEnds.subarray(0, pairs * 2));
      left -= pairs;
    }
    this.#withheldLineEnds = 0;
  }
}

const spaceOnly = Buffer.from(' ');

/** A space followed by a space or a line end: a run to reduce or trailing whitespace to drop. */
function hasSpaceRunOrTrailingSpace(chunk: Buffer): boolean {
  // A plain loop: Buffer#indexOf with a two-byte needle is slower on text full of spaces.
  for (let index = 0, last = chunk.length - 1; index < last; index++) {
    if (chunk[index] === SPACE) {
      const next = chunk[index + 1];
      if (next === SPACE || next === CR || next === LF) return true;
    }
  }
  return false;
}

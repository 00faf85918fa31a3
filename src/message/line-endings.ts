// Line endings made CRLF (PRODUCT.md §4, "the bytes signed are the bytes relayed"), chunk by chunk
// or for a whole message. Owns: the normaliser both forms use. Must not: look at anything but CR
// and LF.

const CR = 0x0d;
const LF = 0x0a;
const lineFeed = Buffer.from('\n');
const lineEnd = Buffer.from('\r\n');

/**
 * The line-ending policy of PRODUCT.md §4 ("the bytes signed are the bytes relayed") for a message
 * that arrives in chunks: every bare CR, bare LF (and the CR of a CR CR LF run) becomes CRLF, and
 * a final CRLF is added if missing (RFC 5321 §4.1.1.4), as normalizeLineEndings does for the
 * whole message at once. A chunk with only CRLF endings is passed on as it is, not copied.
 */
export class LineEndingNormalizer {
  /** The output so far ends in a CR whose LF is not known yet (the chunk ended there). */
  #openCarriageReturn = false;
  #lastByte = -1;
  #secondToLastByte = -1;
  /** A bare CR or LF was seen (data.bareLineEndings: reject refuses the message). */
  sawBareLineEnding = false;

  /** `chunk` with its line endings made CRLF (the same Buffer when they already are). */
  push(chunk: Buffer): Buffer {
    if (chunk.length === 0) return chunk;
    const out = this.#isClean(chunk) ? chunk : this.#normalize(chunk);
    this.#openCarriageReturn = chunk[chunk.length - 1] === CR;
    if (out.length >= 2) this.#secondToLastByte = out[out.length - 2] as number;
    else if (out.length === 1) this.#secondToLastByte = this.#lastByte;
    if (out.length > 0) this.#lastByte = out[out.length - 1] as number;
    return out;
  }

  /** What ends the message: the LF of a final bare CR, or a CRLF when the message lacks one. */
  end(): Buffer {
    if (this.#openCarriageReturn) {
      // A CR at the very end of the data is bare.
      this.sawBareLineEnding = true;
      this.#openCarriageReturn = false;
      return lineFeed;
    }
    if (this.#lastByte === -1 || (this.#secondToLastByte === CR && this.#lastByte === LF)) return Buffer.alloc(0);
    return lineEnd;
  }

  /** True when every CR in `chunk` is followed by LF (or ends it) and every LF follows a CR. */
  #isClean(chunk: Buffer): boolean {
    if (this.#openCarriageReturn && chunk[0] !== LF) return false;
    for (let index = chunk.indexOf(LF); index !== -1; index = chunk.indexOf(LF, index + 1)) {
      if (index === 0 ? !this.#openCarriageReturn : chunk[index - 1] !== CR) return false;
    }
    for (let index = chunk.indexOf(CR); index !== -1; index = chunk.indexOf(CR, index + 1)) {
      if (index < chunk.length - 1 && chunk[index + 1] !== LF) return false;
    }
    return true;
  }

  #normalize(chunk: Buffer): Buffer {
    this.sawBareLineEnding = true;
    const out = Buffer.allocUnsafe(chunk.length * 2 + 1);
    let length = 0;
    let index = 0;
    if (this.#openCarriageReturn) {
      // The previous chunk ended in CR and already sent it: complete that line end here.
      out[length++] = LF;
      if (chunk[0] === LF) index = 1;
    }
    for (; index < chunk.length; index++) {
      const byte = chunk[index] as number;
      if (byte === CR) {
        out[length++] = CR;
        if (index === chunk.length - 1) break; // its LF (given or added) comes with the next chunk or end()
        if (chunk[index + 1] === LF) index++;
        out[length++] = LF;
      } else if (byte === LF) {
        out[length++] = CR;
        out[length++] = LF;
      } else {
        out[length++] = byte;
      }
    }
    return out.subarray(0, length);
  }
}

/**
 * Every bare CR, bare LF (and the CR of a CR CR LF run) becomes CRLF, and a final CRLF is added
 * if missing, so the bytes signed are the bytes the relay sends: the relay must end the data
 * with CRLF "." CRLF (RFC 5321 §4.1.1.4), and after this no line ending can be read two ways,
 * so no "\n.\n" or "\r.\r" can end the message early downstream (SMTP smuggling).
 */
export function normalizeLineEndings(data: Buffer): Buffer {
  const normalizer = new LineEndingNormalizer();
  return Buffer.concat([normalizer.push(data), normalizer.end()]);
}

// One message through the pipeline: line endings → limits → modifiers (signing last) → the
// exact chunks to relay. Owns: the order of steps and the decision record of the message.
// Must not: speak SMTP (smtp/) or deliver (relay/); it throws SmtpReplyError to refuse.

import type { Config } from '../config/schema.ts';
import { Replies, SigningError, SmtpReplyError } from '../errors.ts';
import type { Signer, SigningResult } from '../signing/signer.ts';
import { prepareMessage, splitMessage } from './message.ts';

export type ListenerRole = 'submission' | 'filter';

export interface PreparedMessage {
  /** Concatenated: the exact bytes to relay (CRLF line endings, not dot-stuffed). */
  chunks: Buffer[];
  size: number;
  signing: SigningResult | { signed: false; reason: 'listener-does-not-sign' };
}

export interface PipelineOptions {
  role: ListenerRole;
  /** Whether this listener signs (submission always; filter per config). */
  signs: boolean;
}

export class MessagePipeline {
  readonly #config: Config;
  readonly #signer: Signer;

  constructor(config: Config, signer: Signer) {
    this.#config = config;
    this.#signer = signer;
  }

  process(data: Buffer, options: PipelineOptions): PreparedMessage {
    const message = prepareMessage(data, this.#config.data.bareLineEndings);
    const split = splitMessage(message);
    if (split.header.length > this.#config.limits.maxHeaderSize) throw new SmtpReplyError(Replies.headerTooLarge);

    if (!options.signs) {
      return { chunks: [message], size: message.length, signing: { signed: false, reason: 'listener-does-not-sign' } };
    }
    let signing: SigningResult;
    try {
      signing = this.#signer.sign(split, { requireSingleFrom: options.role === 'submission' });
    } catch (error) {
      if (error instanceof SigningError) {
        // PRODUCT.md §4: a signing error never sends the message out unsigned.
        throw new SmtpReplyError(this.#config.signing.onError === 'reject' ? Replies.signingFailedReject : Replies.signingFailed, error.message);
      }
      throw error;
    }
    if (!signing.signed) return { chunks: [message], size: message.length, signing };
    const signatures = Buffer.from(signing.headerLines, 'latin1');
    return { chunks: [signatures, message], size: signatures.length + message.length, signing };
  }
}

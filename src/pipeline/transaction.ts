// One message through the pipeline: line endings → limits → modifiers (signing last) → the
// exact chunks to relay. Owns: the order of steps and the decision record of the message.
// Must not: speak SMTP (smtp/) or deliver (relay/); it throws SmtpReplyError to refuse.

import type { Config } from '../config/schema.ts';
import { Replies, SigningError, SmtpReplyError } from '../errors.ts';
import { createMetrics, type Metrics } from '../observability/metrics.ts';
import type { Signer, SigningResult } from '../signing/signer.ts';
import type { InboundResults } from './authentication-results.ts';
import type { InboundChecks, SpfEvaluation } from './inbound.ts';
import { prepareMessage, splitMessage } from './message.ts';
import { dmarcDecision } from './policy.ts';

export type ListenerRole = 'submission' | 'filter' | 'mx';

export interface PreparedMessage {
  /** Concatenated: the exact bytes to relay (CRLF line endings, not dot-stuffed). */
  chunks: Buffer[];
  size: number;
  signing: SigningResult | { signed: false; reason: 'listener-does-not-sign' };
  /** Time spent signing, when the message was signed (the decision record). */
  signingMs?: number;
  /** mx only: what the checks found. */
  inbound?: InboundResults;
}

export interface PipelineOptions {
  role: ListenerRole;
  /** Whether this listener signs (submission always; filter per config; mx never). */
  signs: boolean;
  /** Run the inbound checks (mx for untrusted clients; a filter with verify: true). */
  check?: { clientIp: string; spf: SpfEvaluation | undefined };
}

export class MessagePipeline {
  readonly #config: Config;
  readonly #signer: Signer;
  readonly #inbound: InboundChecks | undefined;
  readonly #metrics: Metrics;

  /**
   * `inbound` is needed only where an mx listener exists (sello sign has none). `metrics` gets
   * what the steps found: signatures made or failed, signing time, inbound verification results.
   */
  constructor(config: Config, signer: Signer, inbound?: InboundChecks, metrics: Metrics = createMetrics({ defaultMetrics: false })) {
    this.#config = config;
    this.#signer = signer;
    this.#inbound = inbound;
    this.#metrics = metrics;
  }

  async process(data: Buffer, options: PipelineOptions): Promise<PreparedMessage> {
    const message = prepareMessage(data, this.#config.data.bareLineEndings);
    const split = splitMessage(message);
    if (split.header.length > this.#config.limits.maxHeaderSize) throw new SmtpReplyError(Replies.headerTooLarge);

    let header = split.header;
    let chunks = [message];
    let inbound: InboundResults | undefined;
    if (options.check) {
      if (!this.#inbound) throw new Error('a verifying listener needs the inbound checks');
      const inspected = await this.#inbound.inspect(split.header, message, options.check.spf, options.check.clientIp);
      inbound = inspected.results;
      this.#countVerifications(inbound);
      const dmarc = dmarcDecision(inbound.dmarc, this.#config.inbound.dmarc);
      if (dmarc.reply) throw new SmtpReplyError(dmarc.reply);
      const added = Buffer.from(inspected.headerLines, 'latin1');
      // Forged Authentication-Results removed → the header changed; otherwise keep the bytes as they are.
      chunks = [added, ...(inspected.header === split.header ? [message] : [inspected.header, Buffer.from('\r\n'), split.body])];
      header = Buffer.concat([added, inspected.header]);
    }
    const size = () => chunks.reduce((total, chunk) => total + chunk.length, 0);
    // PRODUCT.md §2: mx never signs; it checks and tags.
    if (options.role === 'mx' || !options.signs) {
      return { chunks, size: size(), signing: { signed: false, reason: 'listener-does-not-sign' }, ...(inbound ? { inbound } : {}) };
    }
    let signing: SigningResult;
    let signingMs = 0;
    const started = performance.now();
    try {
      // Signing runs last, so the signatures cover any header field the checks added.
      signing = await this.#signer.sign({ header, body: split.body }, { requireSingleFrom: options.role === 'submission' });
      if (signing.signed) {
        signingMs = performance.now() - started;
        this.#metrics.signingDuration(signingMs / 1000);
        for (const made of signing.signatures) this.#metrics.signature(made.domain, made.selector, made.algorithm, 'signed');
      }
    } catch (error) {
      if (error instanceof SigningError) {
        for (const failed of error.signatures) this.#metrics.signature(failed.domain, failed.selector, failed.algorithm, 'error');
        // PRODUCT.md §4: a signing error never sends the message out unsigned.
        throw new SmtpReplyError(this.#config.signing.onError === 'reject' ? Replies.signingFailedReject : Replies.signingFailed, error.message);
      }
      throw error;
    }
    const extra = inbound ? { inbound } : {};
    if (!signing.signed) return { chunks, size: size(), signing, ...extra };
    chunks = [Buffer.from(signing.headerLines, 'latin1'), ...chunks];
    return { chunks, size: size(), signing, signingMs, ...extra };
  }

  /** One count per DKIM signature (none: the message had none), per DMARC and ARC evaluation. */
  #countVerifications(results: InboundResults): void {
    if (results.dkim) {
      if (results.dkim.signatures.length === 0) this.#metrics.dkimVerification('none');
      for (const signature of results.dkim.signatures) this.#metrics.dkimVerification(signature.result);
    }
    if (results.dmarc) this.#metrics.dmarcResult(results.dmarc.result, results.dmarc.policy);
    if (results.arc) this.#metrics.arcResult(results.arc.result);
  }
}

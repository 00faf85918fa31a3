// One message through the pipeline: line endings → limits → checks → modifiers (DKIM signing,
// then ARC sealing last) → the exact chunks to relay. Owns: the order of steps, what a signing or
// sealing failure does to the message, and the decision record of the message.
// Must not: speak SMTP (smtp/) or deliver (relay/); it throws SmtpReplyError to refuse.

import type { Config } from '../config/schema.ts';
import { ArcSealError, Replies, SigningError, SmtpReplyError } from '../errors.ts';
import { createMetrics, type Metrics } from '../observability/metrics.ts';
import type { ArcSealer, ChainValidation } from '../signing/arc-sealer.ts';
import type { Signer, SigningResult } from '../signing/signer.ts';
import type { InboundResults } from './authentication-results.ts';
import type { InboundChecks, SpfEvaluation } from './inbound.ts';
import { prepareMessage, splitMessage } from './message.ts';
import { dmarcDecision } from './policy.ts';

export type ListenerRole = 'submission' | 'filter' | 'mx';

/** What ARC sealing did (inbound.arc.seal on, and the inbound checks ran). */
export type ArcSealOutcome =
  | { result: 'sealed'; instance: number; cv: ChainValidation }
  | { result: 'skipped'; reason: 'chain-already-failed' | 'chain-full' }
  /** The message was relayed unsealed; `reason` is for the log, never for the client. */
  | { result: 'failed'; reason: string };

export interface PreparedMessage {
  /** Concatenated: the exact bytes to relay (CRLF line endings, not dot-stuffed). */
  chunks: Buffer[];
  size: number;
  signing: SigningResult | { signed: false; reason: 'listener-does-not-sign' };
  /** Time spent signing, when the message was signed (the decision record). */
  signingMs?: number;
  /** mx only: what the checks found. */
  inbound?: InboundResults;
  /** Present when sealing is configured and the checks ran. */
  arcSeal?: ArcSealOutcome;
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
  readonly #sealer: ArcSealer | undefined;

  /**
   * `inbound` is needed only where an mx listener exists (sello sign has none). `metrics` gets
   * what the steps found: signatures made or failed, signing time, inbound verification results,
   * ARC seals. `sealer` (inbound.arc.seal) seals every message the inbound checks ran on.
   */
  constructor(config: Config, signer: Signer, inbound?: InboundChecks, metrics: Metrics = createMetrics({ defaultMetrics: false }), sealer?: ArcSealer) {
    this.#config = config;
    this.#signer = signer;
    this.#inbound = inbound;
    this.#metrics = metrics;
    this.#sealer = sealer;
  }

  async process(data: Buffer, options: PipelineOptions): Promise<PreparedMessage> {
    const message = prepareMessage(data, this.#config.data.bareLineEndings, this.#config.data.nul);
    const split = splitMessage(message);
    if (split.header.length > this.#config.limits.maxHeaderSize) throw new SmtpReplyError(Replies.headerTooLarge);

    let header = split.header;
    let chunks = [message];
    let inbound: InboundResults | undefined;
    let authenticationResults: string | undefined;
    if (options.check) {
      if (!this.#inbound) throw new Error('a verifying listener needs the inbound checks');
      const inspected = await this.#inbound.inspect(split.header, message, options.check.spf, options.check.clientIp);
      inbound = inspected.results;
      authenticationResults = inspected.authenticationResults;
      this.#countVerifications(inbound);
      const dmarc = dmarcDecision(inbound.dmarc, this.#config.inbound.dmarc);
      if (dmarc.reply) throw new SmtpReplyError(dmarc.reply);
      const added = Buffer.from(inspected.headerLines, 'latin1');
      // Forged Authentication-Results removed → the header changed; otherwise keep the bytes as they are.
      chunks = [added, ...(inspected.header === split.header ? [message] : [inspected.header, Buffer.from('\r\n'), split.body])];
      header = Buffer.concat([added, inspected.header]);
    }
    const size = () => chunks.reduce((total, chunk) => total + chunk.length, 0);
    let signing: PreparedMessage['signing'] = { signed: false, reason: 'listener-does-not-sign' };
    let signingMs: number | undefined;
    // PRODUCT.md §2: mx never signs; it checks and tags.
    if (options.role !== 'mx' && options.signs) {
      const started = performance.now();
      let signed: SigningResult;
      try {
        // Signing runs after the checks, so the signatures cover any header field they added.
        signed = await this.#signer.sign({ header, body: split.body }, { requireSingleFrom: options.role === 'submission' });
      } catch (error) {
        if (error instanceof SigningError) {
          for (const failed of error.signatures) this.#metrics.signature(failed.domain, failed.selector, failed.algorithm, 'error');
          // PRODUCT.md §4: a signing error never sends the message out unsigned.
          throw new SmtpReplyError(this.#config.signing.onError === 'reject' ? Replies.signingFailedReject : Replies.signingFailed, error.message);
        }
        throw error;
      }
      signing = signed;
      if (signed.signed) {
        signingMs = performance.now() - started;
        this.#metrics.signingDuration(signingMs / 1000);
        for (const made of signed.signatures) this.#metrics.signature(made.domain, made.selector, made.algorithm, 'signed');
        const lines = Buffer.from(signed.headerLines, 'latin1');
        chunks = [lines, ...chunks];
        header = Buffer.concat([lines, header]);
      }
    }
    let arcSeal: ArcSealOutcome | undefined;
    if (this.#sealer && inbound && authenticationResults !== undefined) {
      // Sealing runs last: RFC 8617 §5.1 (step 1) has every modification, DKIM-Signature fields
      // included, made before sealing, so the set describes the message exactly as it leaves.
      const sealed = await this.#seal(this.#sealer, { header, body: split.body }, inbound, authenticationResults);
      arcSeal = sealed.outcome;
      if (sealed.headerLines) chunks = [Buffer.from(sealed.headerLines, 'latin1'), ...chunks];
    }
    return {
      chunks,
      size: size(),
      signing,
      ...(signingMs !== undefined ? { signingMs } : {}),
      ...(inbound ? { inbound } : {}),
      ...(arcSeal ? { arcSeal } : {}),
    };
  }

  /**
   * Seals `message` (header and body as relayed). A failure relays the message unsealed, counted
   * and reported for the log, never deferred: the seal is an annotation for later hops, and a
   * message without it is exactly what they would get if sealing were off (README, ARC sealing).
   */
  async #seal(sealer: ArcSealer, message: { header: Buffer; body: Buffer }, inbound: InboundResults, authenticationResults: string): Promise<{ outcome: ArcSealOutcome; headerLines?: string }> {
    // The chain as received, as checks/arc.ts validated it (RFC 8617 §4.4); an unknown word from
    // the library is not a chain that passed.
    const reported = inbound.arc?.result;
    const validation: ChainValidation = reported === 'pass' || reported === 'none' ? reported : 'fail';
    try {
      const sealed = await sealer.seal(message, validation, authenticationResults);
      if (!sealed.sealed) {
        this.#metrics.arcSeal('skipped');
        return { outcome: { result: 'skipped', reason: sealed.reason } };
      }
      this.#metrics.arcSeal('sealed');
      return { outcome: { result: 'sealed', instance: sealed.instance, cv: sealed.cv }, headerLines: sealed.headerLines };
    } catch (error) {
      if (!(error instanceof ArcSealError)) throw error;
      this.#metrics.arcSeal('failed');
      return { outcome: { result: 'failed', reason: error.message } };
    }
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

// One message through the pipeline: what is computed while it streams in (body hash, DKIM and
// ARC verification: observe), then checks → modifiers (DKIM signing, then ARC sealing last) →
// header edits (fields to add, forged fields to remove), never rewritten bytes. Line endings and
// limits were applied as it arrived (message/message-sink.ts).
// Owns: the order of steps, and what a signing or sealing failure does to the message.
// Must not: speak SMTP (smtp/) or deliver (relay/); it throws SmtpReplyError to refuse. The
// engine (engine.ts) decides whether a message is checked or signed and keeps the record.

import type { Config } from '../config/schema.ts';
import { ArcSealError, Replies, SigningError, SmtpReplyError } from '../errors.ts';
import { createMetrics, type Metrics } from '../observability/metrics.ts';
import type { ArcSealer, ChainValidation } from '../signing/arc-sealer.ts';
import { RelaxedBodyHasher } from '../signing/dkim-signature.ts';
import type { MessageToSign, Signer, SigningResult } from '../signing/signer.ts';
import type { StreamingDkimVerification } from '../checks/dkim-verify.ts';
import { headerFields, splitFieldLines, withoutFields, type FieldReference, type MessageSink, type MessageSource } from '../message/index.ts';
import type { InboundResults } from './authentication-results.ts';
import type { InboundChecks, SpfEvaluation } from './inbound.ts';
import { dmarcDecision } from './policy.ts';
import type { HeaderEdits } from './session.ts';

/** What ARC sealing did (inbound.arc.seal on, and the inbound checks ran). */
export type ArcSealOutcome =
  | { result: 'sealed'; instance: number; cv: ChainValidation }
  | { result: 'skipped'; reason: 'chain-already-failed' | 'chain-full' }
  /** The message was relayed unsealed; `reason` is for the log, never for the client. */
  | { result: 'failed'; reason: string };

export interface PreparedMessage {
  /** The message as received with CRLF line endings: the bytes the edits apply to. */
  source: MessageSource;
  /** Fields to add at the top (ARC set, DKIM-Signature, Authentication-Results, Received-SPF) and to remove. */
  edits: HeaderEdits;
  /** Octets of the message as it leaves, edits applied. */
  size: number;
  signing: SigningResult | { signed: false; reason: 'listener-does-not-sign' };
  /** Time spent signing, when the message was signed (the decision record). */
  signingMs?: number;
  /** What the inbound checks found, when they ran. */
  inbound?: InboundResults;
  /** Present when sealing is configured and the checks ran. */
  arcSeal?: ArcSealOutcome;
}

export interface PipelineOptions {
  /** Sign the message (the engine decided the role and client may be signed for). */
  signs: boolean;
  /** Refuse a message without exactly one From address (550 5.6.0) instead of relaying it unsigned. */
  requireSingleFrom: boolean;
  /** Run the inbound checks (mx for untrusted clients; a filter with verify: true; a verifying milter). */
  check?: { clientIp: string; spf: SpfEvaluation | undefined };
}

/** What observe() set up to run while the message streams in; process() collects it. */
export interface StreamedWork {
  /** The relaxed/SHA-256 body hash, for signing and ARC sealing. */
  bodyHasher?: RelaxedBodyHasher;
  /** DKIM signatures and the ARC chain, verified as the message arrives. */
  verification?: StreamingDkimVerification;
}

export class MessagePipeline {
  readonly #config: Config;
  readonly #signer: Signer;
  readonly #inbound: InboundChecks | undefined;
  readonly #metrics: Metrics;
  readonly #sealer: ArcSealer | undefined;

  /**
   * `inbound` is needed only where a verifying listener exists (sello sign has none). `metrics` gets
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

  /**
   * At the start of DATA: attaches to `sink` what must see the message as it arrives — the body
   * hash when it may be signed or sealed, the DKIM/ARC verifier when the checks run — so nothing
   * has to read it again at its end.
   */
  observe(sink: MessageSink, options: PipelineOptions): StreamedWork {
    const work: StreamedWork = {};
    if (options.signs || (this.#sealer && options.check)) {
      const hasher = new RelaxedBodyHasher({ crlfLineEndings: true }); // the sink normalized them
      // Without a seal to make, a message from a domain the table does not sign needs no hash:
      // decided once the header is complete, when the body's first bytes come.
      const sealing = Boolean(this.#sealer && options.check);
      let needed: boolean | undefined;
      const write = (chunk: Buffer) => {
        needed ??= sealing || this.#signer.wouldSign(sink.header);
        if (needed) hasher.update(chunk);
        else work.bodyHasher = undefined;
      };
      sink.observeBody({ write, end: () => undefined, abort: () => undefined });
      work.bodyHasher = hasher;
    }
    if (options.check) {
      if (!this.#inbound) throw new Error('a verifying listener needs the inbound checks');
      const verification = this.#inbound.startVerification();
      sink.observeMessage(verification);
      work.verification = verification;
    }
    return work;
  }

  /**
   * One received message (`work` is what observe() attached to its sink): checks → DKIM signing
   * → ARC sealing, as header edits. Throws SmtpReplyError to refuse (DMARC policy, From rule,
   * signing).
   */
  async process(source: MessageSource, options: PipelineOptions, work: StreamedWork): Promise<PreparedMessage> {
    const received = headerFields(source.header.toString('latin1'));
    const bodyHash = () => {
      if (!work.bodyHasher) throw new Error('the body hash was not observed for a message that is signed or sealed');
      return work.bodyHasher.digest();
    };
    // Read only when the signer signs: observe() skipped the hash of a body it would not sign.
    const lazyBodyHash = { get relaxedSha256() { return bodyHash().relaxedSha256; } };

    // Topmost first; each step puts its fields above what is there, as an MTA prepends trace fields.
    let add: string[] = [];
    let remove: FieldReference[] = [];
    let inbound: InboundResults | undefined;
    let authenticationResults: string | undefined;
    if (options.check) {
      if (!this.#inbound) throw new Error('a verifying listener needs the inbound checks');
      if (!work.verification) throw new Error('the message was not observed by the DKIM verifier');
      const inspected = await this.#inbound.inspect(received, work.verification.result, options.check.spf, options.check.clientIp);
      inbound = inspected.results;
      authenticationResults = inspected.authenticationResults;
      this.#countVerifications(inbound);
      const dmarc = dmarcDecision(inbound.dmarc, this.#config.inbound.dmarc);
      if (dmarc.reply) throw new SmtpReplyError(dmarc.reply);
      add = inspected.add;
      remove = inspected.remove;
    }
    // The header as it will leave, so far: what signing and sealing must cover.
    // Without removals the received header is reused as bytes: no round trip through a string.
    const header = () =>
      remove.length === 0
        ? Buffer.concat([Buffer.from(add.join(''), 'latin1'), source.header])
        : Buffer.from(add.join('') + withoutFields(received, remove).map((field) => field.raw).join(''), 'latin1');
    let signing: PreparedMessage['signing'] = { signed: false, reason: 'listener-does-not-sign' };
    let signingMs: number | undefined;
    if (options.signs) {
      const started = performance.now();
      let signed: SigningResult;
      try {
        // Signing runs after the checks, so the signatures cover any header field they added.
        signed = await this.#signer.sign({ header: add.length || remove.length ? header() : source.header, body: lazyBodyHash, receivedFields: received }, { requireSingleFrom: options.requireSingleFrom });
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
        add = [...splitFieldLines(signed.headerLines), ...add];
      }
    }
    let arcSeal: ArcSealOutcome | undefined;
    if (this.#sealer && inbound && authenticationResults !== undefined) {
      // Sealing runs last: RFC 8617 §5.1 (step 1) has every modification, DKIM-Signature fields
      // included, made before sealing, so the set describes the message exactly as it leaves.
      const sealed = await this.#seal(this.#sealer, { header: header(), body: bodyHash() }, inbound, authenticationResults);
      arcSeal = sealed.outcome;
      if (sealed.headerLines) add = [...splitFieldLines(sealed.headerLines), ...add];
    }
    const removedOctets = remove.length ? source.header.length - withoutFields(received, remove).reduce((total, field) => total + field.raw.length, 0) : 0;
    return {
      source,
      edits: { add, remove },
      size: source.size - removedOctets + add.reduce((total, field) => total + field.length, 0),
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
  async #seal(sealer: ArcSealer, message: MessageToSign, inbound: InboundResults, authenticationResults: string): Promise<{ outcome: ArcSealOutcome; headerLines?: string }> {
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

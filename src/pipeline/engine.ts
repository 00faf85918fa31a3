// The transaction engine: one per config generation, one session per client connection of any
// front end (SMTP proxy listener, milter, CLI). Every decision is made here: who may start a
// transaction, SPF (evaluated once at MAIL, enforced per recipient at RCPT), the recipient policy,
// whether a message is checked and signed, DMARC, and the decision record with its metrics.
// Must not: speak a protocol or deliver: front ends carry the verdicts and edits (session.ts).

import type { Config } from '../config/schema.ts';
import { Replies, SmtpReplyError, formatReply, type SmtpReply } from '../errors.ts';
import type { Logger } from '../observability/logger.ts';
import { MessageSink, messageBytes, spillDirectoryOf, type MessageSource } from '../message/index.ts';
import type { Metrics, TransactionOutcome } from '../observability/metrics.ts';
import { DECISION_RECORD_VERSION, type DecisionRecord } from './decision-record.ts';
import type { InboundChecks, SpfEvaluation } from './inbound.ts';
import { isExemptRecipient, spfDecision, type Decision } from './policy.ts';
import type { ClientFacts, DeliveryReport, EndVerdict, Engine, EngineSession, FrontEnd, Verdict } from './session.ts';
import type { MessagePipeline, PipelineOptions, PreparedMessage, StreamedWork } from './transaction.ts';

export interface EngineDependencies {
  config: Config;
  pipeline: MessagePipeline;
  /** SPF at MAIL FROM for verifying front ends. */
  inbound: InboundChecks;
  metrics: Metrics;
  logger: Logger;
}

export class TransactionEngine implements Engine {
  readonly #deps: EngineDependencies;

  constructor(deps: EngineDependencies) {
    this.#deps = deps;
  }

  session(frontEnd: FrontEnd): EngineSession {
    return new Session(this.#deps, frontEnd);
  }
}

/** A verdict that refuses with `reply`: 5xx rejects, anything else defers. */
function refusal(reply: SmtpReply): Verdict & { action: 'reject' | 'defer' } {
  return { action: reply.code >= 500 ? 'reject' : 'defer', reply };
}

function isLocalDomain(recipient: string, localDomains: readonly string[]): boolean {
  const domain = recipient.slice(recipient.lastIndexOf('@') + 1).toLowerCase();
  return localDomains.some((pattern) => (pattern.startsWith('*.') ? domain.endsWith(pattern.slice(1)) : domain === pattern));
}

interface Transaction {
  record: DecisionRecord;
  started: number;
  client: ClientFacts;
  /** The inbound checks run on this transaction. */
  inspects: boolean;
  spf?: SpfEvaluation;
  /** What the SPF policy does with `spf` (decided at MAIL, applied at each RCPT). */
  spfPolicy?: Decision;
  /** What end() prepared (signing result for the unsigned counter once relayed). */
  prepared?: PreparedMessage;
  /** The sink of this transaction's message and what the pipeline attached to it (receive()). */
  receiving?: { sink: MessageSink; work: StreamedWork };
}

class Session implements EngineSession {
  readonly #deps: EngineDependencies;
  readonly #frontEnd: FrontEnd;
  #transaction: Transaction | undefined;

  constructor(deps: EngineDependencies, frontEnd: FrontEnd) {
    this.#deps = deps;
    this.#frontEnd = frontEnd;
  }

  get transactionOpen(): boolean {
    return this.#transaction !== undefined;
  }

  /**
   * Whether the inbound checks run: mx for clients outside trustedNetworks (PRODUCT.md §5), a
   * filter with verify: true for whatever its trusted MTA passes on, a verifying milter for mail
   * that is neither authenticated nor from trustedNetworks.
   */
  #inspects(client: ClientFacts): boolean {
    const { role, verifies } = this.#frontEnd;
    if (!verifies || role === 'submission') return false;
    return role === 'filter' || !(client.trusted || client.user);
  }

  /** PRODUCT.md §2/§4: who gets signed. mx never; submission always (it only takes authenticated or trusted clients). */
  #signs(client: ClientFacts): boolean {
    const { role, signs } = this.#frontEnd;
    if (!signs || role === 'mx') return false;
    return role !== 'milter' || client.trusted || Boolean(client.user);
  }

  async mail(from: string, client: ClientFacts): Promise<Verdict> {
    this.abort();
    const { config, inbound, metrics } = this.#deps;
    const { role } = this.#frontEnd;
    // No signing oracle: nothing from an unauthenticated, untrusted client is ever signed.
    if (role === 'submission' && !client.user && !client.trusted) return refusal(Replies.authRequired);
    // PRODUCT.md §2: a filter serves only its trusted MTA.
    if (role === 'filter' && !client.trusted) return refusal(Replies.relayDenied);
    const started = performance.now();
    const inspects = this.#inspects(client);
    let spf: SpfEvaluation | undefined;
    let spfPolicy: Decision | undefined;
    // SPF on a client the MTA did not name (a filter without XFORWARD sees only the MTA) would
    // judge the MTA itself: left out (DKIM, DMARC, ARC still run).
    if (inspects && client.addressKnown) {
      // RFC 7208 §2.4: evaluated once per transaction here, enforced per recipient at RCPT TO.
      spf = await inbound.evaluateSpf(client.address, from, client.helo);
      for (const outcome of spf.all) metrics.spfDuration(outcome.durationMs / 1000);
      // PRODUCT.md §5: what policy does with the result, decided once for every recipient.
      spfPolicy = spfDecision(spf.decisive, config.inbound.spf);
      metrics.spfResult(spf.decisive.identity, spf.decisive.result, spfPolicy.action);
    }
    this.#transaction = {
      started,
      client,
      inspects,
      ...(spf ? { spf } : {}),
      ...(spfPolicy ? { spfPolicy } : {}),
      record: {
        version: DECISION_RECORD_VERSION,
        session: client.sessionId,
        listener: this.#frontEnd.listener,
        client: client.address,
        ...(client.user ? { user: client.user } : {}),
        from,
        recipients: 0,
        refusedRecipients: [],
        ...(spf && spfPolicy ? { spf: { result: spf.decisive.result, identity: spf.decisive.identity, domain: spf.decisive.domain, action: spfPolicy.action } } : {}),
        durations: spf ? { spfMs: Math.round(spf.all.reduce((total, outcome) => total + outcome.durationMs, 0)) } : {},
      },
    };
    return { action: 'accept' };
  }

  discard(): void {
    this.#transaction = undefined;
  }

  async rcpt(to: string): Promise<Verdict> {
    const transaction = this.#transaction;
    if (!transaction) return refusal(Replies.localError);
    const verdict = this.#recipientVerdict(to, transaction);
    if (verdict.action === 'accept') transaction.record.recipients++;
    else transaction.record.refusedRecipients.push(verdict.reply.code);
    return verdict;
  }

  #recipientVerdict(recipient: string, transaction: Transaction): Verdict {
    const { config } = this.#deps;
    if (transaction.record.recipients >= config.limits.maxRecipients) {
      // RFC 5321 §4.5.3.1.10: 452 for too many recipients; the client sends the rest later.
      return refusal(Replies.tooManyRecipients);
    }
    if (!transaction.inspects) return { action: 'accept' };
    // Every connection reaches the MTA from 127.0.0.1, so the MTA cannot tell the Internet from
    // itself: sello refuses to relay (PRODUCT.md §3) unless the MTA judges the real client
    // (XCLIENT, PROXY, a milter's MTA). A filter's MTA applied its own relay rules already.
    if (this.#frontEnd.role === 'mx' && !this.#frontEnd.mtaJudgesRelay && !isLocalDomain(recipient, config.inbound.localDomains)) {
      return refusal(Replies.relayDenied);
    }
    // RFC 5321 §4.5.1: postmaster (and abuse@, RFC 2142) always deliverable, whatever SPF says.
    const reply = transaction.spfPolicy?.reply;
    if (!reply || isExemptRecipient(recipient, config.inbound.exemptRecipients)) return { action: 'accept' };
    return refusal(reply);
  }

  recipientRefused(code: number): void {
    const record = this.#transaction?.record;
    if (!record) return;
    record.recipients = Math.max(0, record.recipients - 1);
    record.refusedRecipients.push(code);
  }

  #pipelineOptions(transaction: Transaction): PipelineOptions {
    const { client } = transaction;
    return {
      signs: this.#signs(client),
      requireSingleFrom: this.#frontEnd.role === 'submission',
      ...(transaction.inspects ? { check: { clientIp: client.address, spf: transaction.spf } } : {}),
    };
  }

  receive(): MessageSink {
    return this.#receive(true);
  }

  /** A sink for this transaction's message; `spills`: past data.spillThreshold the body goes to a file. */
  #receive(spills: boolean): MessageSink {
    const { config, pipeline } = this.#deps;
    const sink = new MessageSink({
      maxMessageSize: config.limits.maxMessageSize,
      maxHeaderSize: config.limits.maxHeaderSize,
      bareLineEndings: config.data.bareLineEndings,
      nul: config.data.nul,
      spillThreshold: spills ? config.data.spillThreshold : Number.POSITIVE_INFINITY,
      spillDirectory: spillDirectoryOf(config.data.spillDirectory),
    });
    const transaction = this.#transaction;
    if (transaction) {
      void transaction.receiving?.sink.dispose();
      transaction.receiving = { sink, work: pipeline.observe(sink, this.#pipelineOptions(transaction)) };
    }
    return sink;
  }

  end(message: Buffer): Promise<EndVerdict>;
  end(message: MessageSink): Promise<EndVerdict<MessageSource>>;
  async end(message: Buffer | MessageSink): Promise<EndVerdict | EndVerdict<MessageSource>> {
    const transaction = this.#transaction;
    if (!transaction) return refusal(Replies.localError);
    const { client, record } = transaction;
    const whole = Buffer.isBuffer(message);
    // A whole message goes through the same sink, in memory (it is in memory already).
    const sink = whole ? this.#receive(false) : message;
    const receiving = transaction.receiving;
    if (!receiving || receiving.sink !== sink) throw new Error('end(sink): the sink must come from this transaction\'s receive()');
    let prepared: PreparedMessage;
    try {
      if (whole) await sink.write(message);
      const source = await sink.finish();
      prepared = await this.#deps.pipeline.process(source, this.#pipelineOptions(transaction), receiving.work);
    } catch (error) {
      if (error instanceof SmtpReplyError) {
        this.failed(error.reply, error.message);
        return { ...refusal(error.reply), reason: error.message };
      }
      this.#deps.logger.error({ session: client.sessionId, listener: this.#frontEnd.listener, err: error }, 'unexpected error');
      this.failed(Replies.localError, error instanceof Error ? error.message : String(error));
      return refusal(Replies.localError);
    }
    transaction.prepared = prepared;
    if (prepared.inbound) {
      record.dkim = prepared.inbound.dkim?.signatures.map(({ domain, selector, result }) => ({ domain, selector, result }));
      if (prepared.inbound.dmarc) record.dmarc = prepared.inbound.dmarc.result;
      if (prepared.inbound.arc) record.arc = prepared.inbound.arc.result;
    }
    if (prepared.arcSeal) {
      record.arcSeal = prepared.arcSeal;
      if (prepared.arcSeal.result === 'failed') {
        this.#deps.logger.warn({ session: client.sessionId, listener: this.#frontEnd.listener, err: prepared.arcSeal.reason }, 'ARC sealing failed: the message is relayed unsealed');
      }
    }
    record.size = prepared.size;
    if (prepared.signing.signed) {
      record.signatures = prepared.signing.signatures;
      record.durations.signingMs = Math.round((prepared.signingMs ?? 0) * 1000) / 1000;
    } else {
      record.unsigned = prepared.signing.reason;
      if ('fromDomain' in prepared.signing && prepared.signing.fromDomain) record.unsignedFromDomain = prepared.signing.fromDomain;
    }
    const verdict = { action: 'accept' as const, edits: prepared.edits, record, ...(prepared.inbound ? { inbound: prepared.inbound } : {}) };
    if (!whole) return { ...verdict, message: prepared.source };
    const bytes = await messageBytes(prepared.source);
    await sink.dispose();
    return { ...verdict, message: bytes };
  }

  delivered(report: DeliveryReport): void {
    const transaction = this.#transaction;
    if (!transaction) return;
    this.#report(transaction, report);
    const signing = transaction.prepared?.signing;
    // Counted once the message left: an unsigned message that was then refused was never sent.
    if (signing && !signing.signed) this.#deps.metrics.unsigned(this.#frontEnd.listener, signing.reason);
    this.#finish(transaction, 'relayed');
  }

  failed(reply: SmtpReply, reason?: string, report?: DeliveryReport): void {
    const transaction = this.#transaction;
    if (!transaction) return;
    if (report) this.#report(transaction, report);
    transaction.record.error = reason ?? formatReply(reply);
    this.#finish(transaction, reply.code >= 500 ? 'rejected' : 'deferred');
  }

  /**
   * A transaction that ended before its end (RSET, QUIT, a new MAIL, disconnect). Its outcome is
   * what the client was told: every recipient refused → rejected (a 5xx among them) or deferred;
   * else abandoned. Not counted as a transaction in the metrics (it never reached DATA).
   */
  abort(): void {
    const transaction = this.#transaction;
    if (!transaction) return;
    this.#transaction = undefined;
    void transaction.receiving?.sink.dispose();
    const { record } = transaction;
    const refused = record.refusedRecipients;
    record.outcome = record.recipients === 0 && refused.length > 0 ? (refused.some((code) => code >= 500) ? 'rejected' : 'deferred') : 'abandoned';
    record.durations.totalMs = Math.round(performance.now() - transaction.started);
    this.#deps.logger.info(record, 'transaction');
  }

  #report(transaction: Transaction, report: DeliveryReport): void {
    const { record } = transaction;
    // LMTP folds per-recipient replies into one; the log keeps each (a partial failure means a retry).
    record.relay = {
      ...(report.relay ? { relay: report.relay } : {}),
      code: report.code,
      ...(report.queueId ? { queueId: report.queueId } : {}),
      ...(report.recipients ? { recipients: report.recipients } : {}),
    };
    if (report.relayMs !== undefined) {
      record.durations.relayMs = Math.round(report.relayMs);
      if (report.relay) this.#deps.metrics.relayDuration(report.relay, report.relayMs / 1000);
    }
  }

  #finish(transaction: Transaction, outcome: TransactionOutcome): void {
    this.#transaction = undefined;
    // The message's spill file goes with its transaction (the front end disposes it too).
    void transaction.receiving?.sink.dispose();
    const totalMs = performance.now() - transaction.started;
    transaction.record.outcome = outcome;
    transaction.record.durations.totalMs = Math.round(totalMs);
    this.#deps.metrics.transaction(this.#frontEnd.listener, outcome, totalMs / 1000);
    this.#deps.logger.info(transaction.record, 'transaction');
  }
}

// The inbound check runner of the mx role (PRODUCT.md §5): SPF once per transaction at MAIL
// FROM, DKIM/ARC/DMARC after DATA, one Received-SPF and one Authentication-Results.
// Owns: the order of checks and what each needs. Must not: decide (policy.ts) or speak SMTP.

import { verifyArc } from '../checks/arc.ts';
import { verifyDkim } from '../checks/dkim-verify.ts';
import { evaluateDmarcPolicy } from '../checks/dmarc.ts';
import { checkSpf } from '../checks/spf.ts';
import type { SpfOutcome } from '../checks/types.ts';
import type { Config } from '../config/schema.ts';
import type { DnsResolve } from '../dns/types.ts';
import type { FieldReference, HeaderField } from '../message/index.ts';
import { authenticationResultsValue, forgedAuthenticationResults, formatAuthenticationResults, type InboundResults } from './authentication-results.ts';
import { formatReceivedSpf } from './received-spf.ts';

export interface SpfEvaluation {
  /** The outcome policy acts on: HELO's when it failed (and HELO is checked), else MAIL FROM's. */
  decisive: SpfOutcome;
  all: SpfOutcome[];
}

export interface InboundMessage {
  /** Header fields to prepend, topmost first (Authentication-Results, Received-SPF), each CRLF-terminated. */
  add: string[];
  /** The Authentication-Results value in `add`, for an ARC-Authentication-Results. */
  authenticationResults: string;
  /** Incoming Authentication-Results that claim our authserv-id (RFC 8601 §5), to remove. */
  remove: FieldReference[];
  results: InboundResults;
}

export class InboundChecks {
  readonly #config: Config;
  readonly #resolver: DnsResolve;
  readonly authservId: string;

  constructor(config: Config, resolver: DnsResolve) {
    this.#config = config;
    this.#resolver = resolver;
    this.authservId = config.inbound.authservId ?? config.hostname;
  }

  /** At MAIL FROM. RFC 7208 §2.3/§2.4: HELO optionally, MAIL FROM (or postmaster@HELO) always. */
  async evaluateSpf(clientIp: string, mailFrom: string, helo: string): Promise<SpfEvaluation> {
    const spf = this.#config.inbound.spf;
    const input = { clientIp, mailFrom, helo, receiver: this.authservId };
    const options = { resolver: this.#resolver, timeBudgetMs: spf.timeBudget };
    const mailFromOutcome = await checkSpf(input, { ...options, identity: 'mailfrom' });
    if (!spf.checkHelo) return { decisive: mailFromOutcome, all: [mailFromOutcome] };
    const heloOutcome = await checkSpf(input, { ...options, identity: 'helo' });
    const heloDecides = heloOutcome.result === 'fail' || heloOutcome.result === 'temperror';
    return { decisive: heloDecides ? heloOutcome : mailFromOutcome, all: [heloOutcome, mailFromOutcome] };
  }

  /** After DATA: verify the message as received, then build our header fields. */
  async inspect(fields: readonly HeaderField[], message: Buffer, spf: SpfEvaluation | undefined, clientIp: string): Promise<InboundMessage> {
    const dkim = await verifyDkim(message, this.#resolver);
    const arc = await verifyArc(dkim.arcChain, this.#resolver, clientIp);
    const dmarc = await evaluateDmarcPolicy(dkim, spf?.all.find((outcome) => outcome.identity === 'mailfrom'), arc, this.#resolver);
    const results: InboundResults = { spf: spf?.all ?? [], dkim, arc, ...(dmarc ? { dmarc } : {}) };
    return {
      add: [formatAuthenticationResults(this.authservId, results), ...(spf ? [formatReceivedSpf(spf.decisive, this.authservId)] : [])],
      authenticationResults: authenticationResultsValue(this.authservId, results),
      remove: forgedAuthenticationResults(fields, this.authservId),
      results,
    };
  }
}

// The decision record: exactly one log record per transaction (PRODUCT.md §7), whatever front end
// carried it. A typed, versioned contract: logs, metrics and any later report (DMARC aggregate)
// read this shape. Owns: the fields and their meaning. Must not: compute them (engine.ts does).
// Never a password or message text.

import type { TransactionOutcome } from '../observability/metrics.ts';
import type { SignatureMade } from '../signing/signer.ts';
import type { ArcSealOutcome } from './transaction.ts';

/** Raised when a field changes meaning or goes away; adding a field keeps the version. */
export const DECISION_RECORD_VERSION = 1;

export interface DecisionRecord {
  /** DECISION_RECORD_VERSION of the shape. */
  version: number;
  session: string;
  listener: string;
  /** The client's address as the engine knew it (socket, or forwarded by a trusted MTA). */
  client: string;
  /** The authenticated login, when there was one. */
  user?: string;
  /** MAIL FROM (empty for the null sender). */
  from: string;
  /** Recipients accepted (by sello and by the MTA behind it). */
  recipients: number;
  /** Reply codes of the recipients refused, by sello or by the MTA. */
  refusedRecipients: number[];
  /** The decisive SPF outcome and the action policy chose (PRODUCT.md §5). */
  spf?: { result: string; identity: string; domain: string; action: string };
  dkim?: { domain: string; selector: string; result: string }[];
  dmarc?: string;
  arc?: string;
  /** inbound.arc.seal: the set added (instance, cv), or why none was. */
  arcSeal?: ArcSealOutcome;
  /** Octets of the message as it left, edits applied. */
  size?: number;
  /** Signatures made, or why none. */
  signatures?: SignatureMade[];
  unsigned?: string;
  /** With unsigned domain-not-configured: the From domain no signing table entry matched. */
  unsignedFromDomain?: string;
  /** Where the front end handed the message, and what it answered. */
  relay?: { relay?: string; code: number; queueId?: string; recipients?: unknown };
  outcome?: TransactionOutcome | 'abandoned';
  /** Why the transaction was refused or deferred (for the log; the client saw a generic reply). */
  error?: string;
  durations: { totalMs?: number; spfMs?: number; signingMs?: number; relayMs?: number };
}

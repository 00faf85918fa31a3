// What the inbound checks report (PRODUCT.md §5). Checks only report; pipeline/policy.ts decides.
// Owns: the result types. Must not: hold behaviour or policy.

/** RFC 7208 §2.6 results. */
export type SpfResultWord = 'pass' | 'fail' | 'softfail' | 'neutral' | 'none' | 'temperror' | 'permerror';

export interface SpfOutcome {
  /** Which identity was checked: MAIL FROM (or postmaster@HELO for the null sender), or HELO. */
  identity: 'mailfrom' | 'helo';
  result: SpfResultWord;
  /** The domain whose policy was evaluated. */
  domain: string;
  /** The identity checked: the MAIL FROM address, or postmaster@<helo> (RFC 7208 §2.4). */
  sender: string;
  /** The MAIL FROM reverse-path as the client gave it ('' for the null sender), whatever the
   *  identity: Received-SPF reports it as envelope-from (RFC 7208 §9.1). */
  mailFrom: string;
  clientIp: string;
  helo: string;
  /** Human comment, e.g. "example.com: 192.0.2.1 is not allowed to send mail from example.com". */
  comment: string;
  /** The domain owner's exp= text (fail only; third-party text, never put in a reply verbatim). */
  explanation?: string;
  durationMs: number;
}

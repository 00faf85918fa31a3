// Narrow types for the pieces of mailauth's DKIM implementation that the signer and the ARC
// sealer compose (mailauth 7.1.0, pinned exactly; the interop tests with dkimpy and Exim catch
// any drift).
// Only src/signing/ and src/checks/ import these modules (STYLE.md: the mailauth boundary).

declare module 'mailauth/lib/tools.js' {
  export interface ParsedHeaderRow {
    /** lower-case field name */
    key: string;
    casedKey: string;
    /** the whole field, folded lines joined with CRLF, without the final CRLF */
    line: Buffer;
  }
  export function parseHeaders(buffer: Buffer): { parsed: ParsedHeaderRow[]; original: Buffer };
  export function formatSignatureHeaderLine(type: 'DKIM', values: Record<string, unknown>, folded: boolean): string;
  /** One RFC 8601 resinfo ("spf=pass (comment) smtp.mailfrom=…"), values quoted as needed. */
  export function formatAuthHeaderRow(
    method: string,
    status: { result: string; comment?: string; smtp?: Record<string, string>; header?: Record<string, string>; policy?: Record<string, string> },
    options?: { strict?: boolean },
  ): string;
  /** RFC 8601 §2.5 authserv-id: a token, else quoted (throws under strict). */
  export function formatAuthservId(authservId: string, strict?: boolean): string;
  /**
   * The tag-list of a DKIM-Signature or ARC header field (`line` is the whole field): each tag
   * under its lower-case name; an ARC field's i= is a number (NaN when it is not one).
   */
  export function parseDkimHeaders(line: Buffer | string): { parsed?: Record<string, { value?: unknown } | undefined> };
}

declare module 'mailauth/lib/dkim/body/index.js' {
  export interface BodyHasher {
    update(chunk: Buffer | null, final?: boolean): void;
    digest(encoding: 'base64'): string;
  }
  export function dkimBody(canonicalization: string, algorithm: string, maxBodyLength: number | false): BodyHasher;
}

declare module 'mailauth/lib/dkim/header/index.js' {
  import type { ParsedHeaderRow } from 'mailauth/lib/tools.js';
  export function generateCanonicalizedHeader(
    type: 'DKIM',
    signingHeaderLines: { keys: string; headers: ParsedHeaderRow[] },
    options: Record<string, unknown>,
  ): { canonicalizedHeader: Buffer; signatureHeaderLine: string; dkimHeaderOpts: Record<string, unknown> };
}

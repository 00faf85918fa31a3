// The signing table: which selectors sign mail from which From domain (PRODUCT.md §4).
// Owns: matching a domain against exact and "*.domain" entries. Must not: touch keys or DNS.

export interface SigningEntry {
  /** d= of the signatures: the configured domain (for "*.example.com", example.com). */
  signingDomain: string;
  selectors: readonly string[];
  /** The table key that matched, e.g. "*.example.com" (configured, so safe as a metric label). */
  pattern: string;
}

export class SigningTable {
  readonly #exact = new Map<string, SigningEntry>();
  readonly #wildcards = new Map<string, SigningEntry>();

  constructor(domains: Readonly<Record<string, string | readonly string[]>>) {
    for (const [pattern, value] of Object.entries(domains)) {
      const selectors = typeof value === 'string' ? [value] : [...value];
      if (pattern.startsWith('*.')) {
        const parent = pattern.slice(2);
        this.#wildcards.set(parent, { signingDomain: parent, selectors, pattern });
      } else {
        this.#exact.set(pattern, { signingDomain: pattern, selectors, pattern });
      }
    }
  }

  /**
   * The entry for a From domain: an exact entry first, else the closest "*.parent" entry.
   * A wildcard signs with d=parent, which DMARC's relaxed alignment accepts for a subdomain
   * From (RFC 7489 §3.1.1); strict alignment (adkim=s) needs an exact entry.
   */
  lookup(fromDomain: string): SigningEntry | undefined {
    const domain = fromDomain.toLowerCase().replace(/\.$/, '');
    const exact = this.#exact.get(domain);
    if (exact) return exact;
    for (let dot = domain.indexOf('.'); dot !== -1; dot = domain.indexOf('.', dot + 1)) {
      const entry = this.#wildcards.get(domain.slice(dot + 1));
      if (entry) return entry;
    }
    return undefined;
  }

  /** Every (domain, selector) pair the table needs a key for. */
  *keys(): Generator<{ domain: string; selector: string }> {
    for (const entry of [...this.#exact.values(), ...this.#wildcards.values()]) {
      for (const selector of entry.selectors) yield { domain: entry.signingDomain, selector };
    }
  }
}

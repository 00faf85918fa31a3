// A bounded cache whose entries expire: least recently used entries go first when full, and an
// entry is never served after its expiry time on the injected clock.
// Owns: storage, expiry, eviction. Must not: decide TTLs or what is cacheable (resolver.ts).

type Entry<V> = { value: V; expiresAt: number };

export class ExpiringCache<V> {
  readonly #entries = new Map<string, Entry<V>>();
  readonly #maxEntries: number;
  readonly #now: () => number;

  /** @param now clock in milliseconds */
  constructor(maxEntries: number, now: () => number) {
    this.#maxEntries = maxEntries;
    this.#now = now;
  }

  get(key: string): V | undefined {
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    if (this.#now() >= entry.expiresAt) {
      this.#entries.delete(key);
      return undefined;
    }
    // Map keeps insertion order: re-inserting makes this the most recently used entry.
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    return entry.value;
  }

  /** Store for ttlMs; a non-positive TTL or a zero-sized cache stores nothing. */
  set(key: string, value: V, ttlMs: number): void {
    if (this.#maxEntries <= 0 || !(ttlMs > 0)) return;
    this.#entries.delete(key);
    while (this.#entries.size >= this.#maxEntries) {
      const oldest = this.#entries.keys().next();
      if (oldest.done) break;
      this.#entries.delete(oldest.value);
    }
    this.#entries.set(key, { value, expiresAt: this.#now() + ttlMs });
  }

  clear(): void {
    this.#entries.clear();
  }

  get size(): number {
    return this.#entries.size;
  }
}

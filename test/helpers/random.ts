// A seeded pseudo-random generator for the fuzz and property tests, so a failing case can be
// replayed from its seed. Must not: be used where randomness must be unpredictable (it is not).

/** mulberry32: small, fast, and the same sequence for the same seed everywhere; values in [0, 1). */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let value = state;
    value = Math.imul(value ^ (value >>> 15), value | 1);
    value ^= value + Math.imul(value ^ (value >>> 7), value | 61);
    return ((value ^ (value >>> 14)) >>> 0) / 4294967296;
  };
}

// The rotation state of one signing domain: keys/<domain>/rotation.yaml, which keys are pending
// (made by `sello rotate`, not yet signing), active (signing) and retiring (no longer signing,
// record still published). Read by every process from the same file; written atomically.
// Owns: the file's format and validation, the promotion rule (a pending key replaces the active
// key of its algorithm), which selectors sign once the file is applied to the signing table, and
// when a retiring key's record may go. Must not: query DNS, decide when to promote (the gate in
// rotation-watcher.ts does), or generate keys.

import { randomBytes } from 'node:crypto';
import { open, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { parseDocument, stringify } from 'yaml';
import { z } from 'zod';
import { ConfigError, KeyError } from '../errors.ts';
import { syncDirectory, validateDomain, validateSelector, type KeyAlgorithm } from './keys.ts';

export const ROTATION_FILE = 'rotation.yaml';

export type RotationKeyState = 'pending' | 'active' | 'retiring';

export interface RotationKey {
  selector: string;
  state: RotationKeyState;
  /** rsa or ed25519; absent in a hand-written entry (then read from the key file when needed). */
  algorithm?: KeyAlgorithm;
  /** When the key entered its state: pending = made, active = promoted, retiring = last signature. */
  since?: Date;
}

export interface RotationState {
  domain: string;
  keys: RotationKey[];
}

/** When the server promotes and when a retiring record may go (signing.rotation, signing.expiry). */
export interface RotationTiming {
  /** signing.expiry in ms, or false when signatures carry no x=. */
  expiryMs: number | false;
  retireMarginMs: number;
}

/** Without a config (--keys-dir alone): the schema defaults signing.expiry 7d, signing.rotation.retireMargin 1d. */
export const DEFAULT_ROTATION_TIMING: RotationTiming = { expiryMs: 7 * 86_400_000, retireMarginMs: 86_400_000 };

/** Without x= a signature never expires; its record is kept for the default expiry (7 days) + margin. */
export const EXPIRY_WHEN_OFF_MS = 7 * 86_400_000;

const timestamp = z.union([z.string(), z.date()]).transform((value, context) => {
  const date = value instanceof Date ? value : new Date(value);
  if (Number.isNaN(date.getTime()) || (typeof value === 'string' && !/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/.test(value.trim()))) {
    context.addIssue({ code: 'custom', message: `not a timestamp: ${JSON.stringify(value)} (use e.g. 2026-12-04T16:00:00Z)` });
    return z.NEVER;
  }
  return date;
});

const selectorName = z.union([z.string(), z.number()]).transform((value, context) => {
  try {
    return validateSelector(String(value));
  } catch (error) {
    context.addIssue({ code: 'custom', message: error instanceof Error ? error.message : String(error) });
    return z.NEVER;
  }
});

const fileSchema = z.strictObject({
  keys: z
    .array(
      z.strictObject({
        selector: selectorName,
        state: z.enum(['pending', 'active', 'retiring']),
        algorithm: z.enum(['rsa', 'ed25519']).optional(),
        since: timestamp.optional(),
      }),
    )
    .min(1, 'list at least the active key'),
});

export function rotationPath(keysDir: string, domain: string): string {
  return join(keysDir, validateDomain(domain), ROTATION_FILE);
}

/** The file's text and its parsed state; undefined when the domain has no rotation.yaml. */
export async function readRotation(keysDir: string, domain: string): Promise<{ state: RotationState; text: string } | undefined> {
  const path = rotationPath(keysDir, domain);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return undefined;
    throw new ConfigError(path, `cannot read the rotation state: ${error instanceof Error ? error.message : String(error)}`);
  }
  return { state: parseRotation(text, path, validateDomain(domain)), text };
}

/** Parses and validates rotation.yaml; every problem is a ConfigError naming the file and the entry. */
export function parseRotation(text: string, path: string, domain: string): RotationState {
  const document = parseDocument(text, { prettyErrors: false, uniqueKeys: true });
  if (document.errors.length > 0) throw new ConfigError(path, `not valid YAML: ${document.errors[0]?.message ?? 'parse error'}`);
  const parsed = fileSchema.safeParse(document.toJS());
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue ? issue.path.map((part) => (typeof part === 'number' ? `[${String(part)}]` : `.${String(part)}`)).join('').replace(/^\./, '') : '';
    throw new ConfigError(path, `${where === '' ? '' : `${where}: `}${issue?.message ?? 'invalid'}`);
  }
  const keys: RotationKey[] = parsed.data.keys.map((key) => ({
    selector: key.selector,
    state: key.state,
    ...(key.algorithm ? { algorithm: key.algorithm } : {}),
    ...(key.since ? { since: key.since } : {}),
  }));
  const seen = new Set<string>();
  for (const [index, key] of keys.entries()) {
    if (seen.has(key.selector)) throw new ConfigError(path, `keys[${String(index)}].selector: ${key.selector} is listed twice`);
    seen.add(key.selector);
    // The removal time is counted from the last signature; without it nobody can say when it is safe.
    if (key.state === 'retiring' && key.since === undefined) {
      throw new ConfigError(path, `keys[${String(index)}].since: a retiring key needs since: (the time of its last signature)`);
    }
  }
  if (!keys.some((key) => key.state === 'active')) throw new ConfigError(path, 'keys: no key is active, so nothing would sign');
  return { domain, keys };
}

/** The file's text: a comment that says what it is, then the keys in a stable order. */
export function formatRotation(state: RotationState): string {
  const order: Record<RotationKeyState, number> = { pending: 0, active: 1, retiring: 2 };
  const keys = [...state.keys]
    .sort((a, b) => order[a.state] - order[b.state])
    .map((key) => ({
      selector: key.selector,
      state: key.state,
      ...(key.algorithm ? { algorithm: key.algorithm } : {}),
      ...(key.since ? { since: key.since.toISOString() } : {}),
    }));
  return [
    `# DKIM key rotation of ${state.domain} (docs/rotation.md). Written by sello rotate and by the`,
    '# server when it promotes a key; it may be edited by hand. state: pending (not signing until DNS',
    '# serves its record), active (signing), retiring (no longer signing; since = last signature).',
    stringify({ keys }, { lineWidth: 0 }),
  ].join('\n');
}

/**
 * Writes rotation.yaml atomically (temporary file, fsync, rename). With `expected`, the file must
 * still hold that text just before the rename, so a concurrent writer (another process promoting,
 * `sello rotate`, an admin) is not overwritten: false then, and nothing is written.
 */
export async function writeRotation(keysDir: string, state: RotationState, expected?: string): Promise<boolean> {
  const path = rotationPath(keysDir, state.domain);
  const temporary = join(keysDir, state.domain, `.${ROTATION_FILE}.${randomBytes(6).toString('hex')}.tmp`);
  let handle;
  try {
    handle = await open(temporary, 'wx', 0o600);
    await handle.writeFile(formatRotation(state));
    await handle.sync();
    await handle.close();
    handle = undefined;
    if (expected !== undefined) {
      const current = await readFile(path, 'utf8').catch(() => undefined);
      if (current !== expected) {
        await unlink(temporary).catch(() => undefined);
        return false;
      }
    }
    await rename(temporary, path);
  } catch (error) {
    await handle?.close().catch(() => undefined);
    await unlink(temporary).catch(() => undefined);
    throw new KeyError(path, `cannot write the rotation state: ${error instanceof Error ? error.message : String(error)}`);
  }
  await syncDirectory(join(keysDir, state.domain));
  return true;
}


/**
 * Promotes a pending key at `at`: it becomes active, and the active keys of the same algorithm
 * become retiring (their last signature is `at`). An active key of the other algorithm stays, so
 * RSA + Ed25519 dual signing (RFC 8463) rotates one algorithm at a time. Pure.
 */
export function promote(state: RotationState, selector: string, algorithmOf: (key: RotationKey) => KeyAlgorithm, at: Date): RotationState {
  const pending = state.keys.find((key) => key.selector === selector && key.state === 'pending');
  if (!pending) return state;
  const algorithm = algorithmOf(pending);
  return {
    domain: state.domain,
    keys: state.keys.map((key): RotationKey => {
      if (key === pending) return { ...key, algorithm, state: 'active', since: at };
      if (key.state === 'active' && algorithmOf(key) === algorithm) return { ...key, algorithm, state: 'retiring', since: at };
      return key;
    }),
  };
}

/** Promotions this process made but could not write (read-only keys, e.g. a Kubernetes Secret). */
export type HeldPromotions = Map<string, { selector: string; at: Date; algorithmOf: Map<string, KeyAlgorithm> }[]>;

/** The file's state with this process's held promotions applied (those still pending in the file). */
export function withHeldPromotions(state: RotationState, held: HeldPromotions | undefined): RotationState {
  let result = state;
  for (const promotion of held?.get(state.domain) ?? []) {
    result = promote(result, promotion.selector, (key) => key.algorithm ?? promotion.algorithmOf.get(key.selector) ?? 'rsa', promotion.at);
  }
  return result;
}

export function selectorsIn(state: RotationState, wanted: RotationKeyState): string[] {
  return state.keys.filter((key) => key.state === wanted).map((key) => key.selector);
}

/**
 * The signing table with every domain's rotation.yaml applied: a signing domain that has one signs
 * with its active keys, whatever signing.domains lists for it (the file is newer than the config).
 * Selectors are always lists, so two tables compare equal exactly when they sign alike.
 */
export async function rotatedSigningDomains(
  domains: Readonly<Record<string, string | readonly string[]>>,
  keysDir: string,
  held?: HeldPromotions,
): Promise<{ domains: Record<string, readonly string[]>; states: Map<string, RotationState> }> {
  const states = new Map<string, RotationState>();
  const result: Record<string, readonly string[]> = {};
  for (const [pattern, selectors] of Object.entries(domains)) {
    const signingDomain = pattern.replace(/^\*\./, '');
    if (!states.has(signingDomain)) {
      const read = await readRotation(keysDir, signingDomain);
      if (read) states.set(signingDomain, withHeldPromotions(read.state, held));
    }
    const state = states.get(signingDomain);
    result[pattern] = state ? selectorsIn(state, 'active') : [selectors].flat();
  }
  return { domains: result, states };
}

/** From when a retiring key's record may be removed: its last signature + x= lifetime + margin. */
export function removableFrom(key: RotationKey, timing: RotationTiming): Date | undefined {
  if (key.state !== 'retiring' || key.since === undefined) return undefined;
  // RFC 6376 §3.5 x=: a verifier may reject a signature after its expiry, so until then the
  // record must stay; the margin covers mail still queued and clocks that differ.
  const lifetime = timing.expiryMs === false ? EXPIRY_WHEN_OFF_MS : timing.expiryMs;
  return new Date(key.since.getTime() + lifetime + timing.retireMarginMs);
}

function errorCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string' ? error.code : undefined;
}

// The running server's side of key rotation: every signing.rotation.checkInterval it looks up the
// record of each pending key through sello's own resolver, judges it with keycheck's function, and
// promotes the key once it was judged ok `confirmations` times in a row, checkInterval apart.
// Then it records the promotion in rotation.yaml (or holds it in memory when the keys directory is
// read-only) and asks app.ts to swap the key store, as a reload does.
// Owns: the promotion gate, its log lines, the key-state gauge and the readiness detail.
// Must not: share state with other processes (each decides from the same files and DNS alone),
// sign anything, or swap the signer itself (the `apply` callback does).

import type { Logger } from '../observability/logger.ts';
import type { DkimKeyState, Metrics } from '../observability/metrics.ts';
import { KeyError } from '../errors.ts';
import { checkKey, type KeyCheck } from './key-check.ts';
import { keyPath, loadKey, type KeyAlgorithm } from './keys.ts';
import {
  promote,
  readRotation,
  removableFrom,
  rotatedSigningDomains,
  selectorsIn,
  withHeldPromotions,
  writeRotation,
  type HeldPromotions,
  type RotationKey,
  type RotationState,
  type RotationTiming,
} from './rotation.ts';

export type SigningDomains = Readonly<Record<string, string | readonly string[]>>;

export interface RotationSettings {
  keysDir: string;
  /** signing.domains as configured (before rotation.yaml is applied). */
  domains: SigningDomains;
  checkIntervalMs: number;
  confirmations: number;
  timing: RotationTiming;
}

export interface RotationWatcherOptions {
  /** Asked at every check: a reload may change the config. */
  settings(): RotationSettings;
  resolve(name: string, rrtype: string): Promise<unknown>;
  /** Promotions that could not be written; shared with loadSigning so a reload keeps them. */
  held: HeldPromotions;
  logger: Logger;
  metrics: Pick<Metrics, 'dkimKeyStates' | 'dkimKeyPromoted'>;
  now: () => Date;
  /** The table (rotation.yaml applied) the running signer was built from. */
  signingDomains(): SigningDomains;
  /** Builds a new key store and signer from the files (and held promotions) and swaps them in. */
  apply(): Promise<void>;
}

/**
 * Consecutive ok sightings of one pending record. A sighting counts only when it comes at least a
 * check interval after the last one counted, so extra checks cannot shorten the period.
 */
export class PromotionGate {
  readonly #streaks = new Map<string, { count: number; lastAt: number }>();

  /** Records one judgement; returns how many ok sightings in a row there are now. */
  observe(key: string, ok: boolean, at: Date, intervalMs: number): number {
    if (!ok) {
      this.#streaks.delete(key);
      return 0;
    }
    const streak = this.#streaks.get(key);
    // 1% slack: a timer may fire a millisecond early after rounding.
    if (!streak) this.#streaks.set(key, { count: 1, lastAt: at.getTime() });
    else if (at.getTime() - streak.lastAt >= intervalMs * 0.99) this.#streaks.set(key, { count: streak.count + 1, lastAt: at.getTime() });
    return this.#streaks.get(key)?.count ?? 0;
  }

  forget(key: string): void {
    this.#streaks.delete(key);
  }
}

/** What /readyz shows for one pending key (never a reason to be unready: the old key still signs). */
export interface PendingKeyStatus {
  name: string;
  state: KeyCheck['state'];
  detail: string;
  seen: number;
  needed: number;
}

export class RotationWatcher {
  readonly #options: RotationWatcherOptions;
  readonly #gate = new PromotionGate();
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #stopped = false;
  /** Last logged judgement per pending key, so a log line is written when it changes. */
  readonly #lastLogged = new Map<string, string>();
  readonly #warnedReadOnly = new Set<string>();
  #pending: PendingKeyStatus[] = [];

  constructor(options: RotationWatcherOptions) {
    this.#options = options;
  }

  /** Checks now, then every checkInterval (read again after each check) until stop(). */
  start(): void {
    const loop = () => {
      if (this.#stopped) return;
      this.#running = this.check()
        .catch((error: unknown) => this.#options.logger.error({ err: error instanceof Error ? error.message : String(error) }, 'key rotation check failed'))
        .finally(() => {
          this.#running = undefined;
          // unref: the listeners keep the process alive, a pending check never should.
          if (!this.#stopped) this.#timer = setTimeout(loop, this.#options.settings().checkIntervalMs).unref();
        });
    };
    loop();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#running;
  }

  /** The pending keys and their last judgement, for /readyz. */
  get pending(): readonly PendingKeyStatus[] {
    return this.#pending;
  }

  /** One round: judge every pending key, promote those that passed the gate, swap if anything changed. */
  async check(): Promise<void> {
    const settings = this.#options.settings();
    const { logger, held } = this.#options;
    const states: { domain: string; selector: string; state: DkimKeyState }[] = [];
    const pending: PendingKeyStatus[] = [];
    const signingDomains = new Map<string, string[]>();
    for (const [pattern, selectors] of Object.entries(settings.domains)) {
      const domain = pattern.replace(/^\*\./, '');
      signingDomains.set(domain, [...new Set([...(signingDomains.get(domain) ?? []), ...[selectors].flat()])]);
    }

    for (const [domain, configured] of signingDomains) {
      let read;
      try {
        read = await readRotation(settings.keysDir, domain);
      } catch (error) {
        this.#logOnce(`${domain}/file`, `error:${String(error)}`, () =>
          logger.error({ domain, err: error instanceof Error ? error.message : String(error) }, 'rotation.yaml is invalid: signing keeps the keys in use'),
        );
        continue;
      }
      if (!read) {
        held.delete(domain);
        for (const selector of configured) states.push({ domain, selector, state: 'active' });
        continue;
      }
      this.#lastLogged.delete(`${domain}/file`);
      // A held promotion the file now shows (another process or an admin wrote it) is done.
      const stillHeld = (held.get(domain) ?? []).filter((promotion) => selectorsIn(read.state, 'pending').includes(promotion.selector));
      if (stillHeld.length > 0) held.set(domain, stillHeld);
      else held.delete(domain);

      let state = withHeldPromotions(read.state, held);
      for (const key of state.keys.filter((entry) => entry.state === 'pending')) {
        const path = keyPath(settings.keysDir, domain, key.selector);
        const judged = await checkKey({ domain, selector: key.selector, path }, this.#options.resolve);
        const gateKey = `${domain}/${key.selector}`;
        const seen = this.#gate.observe(gateKey, judged.state === 'ok', this.#options.now(), settings.checkIntervalMs);
        pending.push({ name: judged.name, state: judged.state, detail: judged.detail, seen, needed: settings.confirmations });
        this.#logJudgement(judged, seen, settings.confirmations);
        if (seen < settings.confirmations) continue;

        const promoted = await this.#promote(state, key, read.text, settings);
        if (!promoted) continue;
        state = promoted;
        this.#gate.forget(gateKey);
        pending.pop();
      }
      for (const key of state.keys) states.push({ domain, selector: key.selector, state: key.state });
    }
    this.#pending = pending;
    this.#options.metrics.dkimKeyStates(states);

    const { domains: effective } = await rotatedSigningDomains(settings.domains, settings.keysDir, held);
    if (JSON.stringify(effective) !== JSON.stringify(this.#options.signingDomains())) {
      try {
        await this.#options.apply();
      } catch (error) {
        logger.error({ err: error instanceof Error ? error.message : String(error) }, 'could not switch to the rotated keys: the keys in use keep signing');
      }
    }
  }

  /**
   * Promotes `key` (RFC 6376 §3.6.2.2: the verifier now finds its record): records it in
   * rotation.yaml when the file is still as read, holds it in memory when the file cannot be
   * written. Undefined when another writer changed the file first (the next check reads it).
   */
  async #promote(state: RotationState, key: RotationKey, fileText: string, settings: RotationSettings): Promise<RotationState | undefined> {
    const { logger, held } = this.#options;
    const domain = state.domain;
    const algorithms = new Map<string, KeyAlgorithm>();
    for (const entry of state.keys) {
      if (entry.algorithm) algorithms.set(entry.selector, entry.algorithm);
      else if (entry.state !== 'retiring') {
        try {
          algorithms.set(entry.selector, (await loadKey(keyPath(settings.keysDir, domain, entry.selector))).algorithm);
        } catch (error) {
          logger.error({ domain, selector: entry.selector, err: error instanceof Error ? error.message : String(error) }, 'cannot promote: a key of the rotation cannot be read');
          return undefined;
        }
      }
    }
    const at = this.#options.now();
    const next = promote(state, key.selector, (entry) => algorithms.get(entry.selector) ?? 'rsa', at);
    let where: 'rotation.yaml' | 'memory';
    try {
      if (!(await writeRotation(settings.keysDir, next, fileText))) {
        logger.info({ domain, selector: key.selector }, 'rotation.yaml changed while promoting: reading it again at the next check');
        return undefined;
      }
      held.delete(domain);
      where = 'rotation.yaml';
    } catch (error) {
      if (!(error instanceof KeyError)) throw error;
      held.set(domain, [...(held.get(domain) ?? []), { selector: key.selector, at, algorithmOf: algorithms }]);
      where = 'memory';
      if (!this.#warnedReadOnly.has(domain)) {
        this.#warnedReadOnly.add(domain);
        logger.warn({ domain, err: error.message }, 'cannot record the promotion in rotation.yaml (read-only keys directory?): this process holds it in memory; see docs/rotation.md');
      }
    }
    const retiring = next.keys.filter((entry) => entry.state === 'retiring' && entry.since?.getTime() === at.getTime());
    this.#options.metrics.dkimKeyPromoted(domain);
    logger.info(
      {
        domain,
        selector: key.selector,
        recorded: where,
        retiring: retiring.map((entry) => ({ selector: entry.selector, recordRemovableFrom: removableFrom(entry, settings.timing)?.toISOString() })),
      },
      'DKIM key promoted: DNS serves its record, it signs from now on',
    );
    return next;
  }

  #logJudgement(judged: KeyCheck, seen: number, needed: number): void {
    const { logger } = this.#options;
    const fields = { domain: judged.domain, selector: judged.selector, record: judged.name, state: judged.state, ...(judged.detail ? { reason: judged.detail } : {}) };
    this.#logOnce(`${judged.domain}/${judged.selector}`, `${judged.state}:${judged.detail}:${String(seen)}`, () => {
      if (judged.state === 'ok') logger.info({ ...fields, seen, needed }, 'pending DKIM key: DNS serves its record');
      else if (judged.state === 'missing') logger.info(fields, 'pending DKIM key: its record is not published yet, not promoted');
      else if (judged.state === 'error') logger.warn(fields, 'pending DKIM key: cannot be checked now (DNS or the key file), not promoted');
      else logger.warn(fields, 'pending DKIM key: its record is wrong, not promoted');
    });
  }

  #logOnce(key: string, value: string, write: () => void): void {
    if (this.#lastLogged.get(key) === value) return;
    this.#lastLogged.set(key, value);
    write();
  }
}

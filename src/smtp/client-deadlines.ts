// Deadlines for what a client owes sello, per connection (issue 10, defect 4). smtp-server's
// socket timeout is an idle timer that every byte resets, so a client trickling one byte every
// few seconds held its slot for ever. Owns, as Postfix does with smtpd_timeout and its
// stress-dependent settings (STRESS_README):
// - a deadline for each command line, from the previous command: bytes do not extend it;
// - for the DATA phase, the same deadline plus the time the bytes received would take at
//   limits.minDataRate (Postfix's smtpd_min_data_rate), so a slow but steady sender finishes;
// - while the listener holds STRESS_SHARE of maxConnections or more, limits.stressTimeout
//   instead of limits.commandTimeout, for new and open connections alike.
// Time sello itself spends (a hook deciding, the MTA answering) never counts against the client.
// Must not: write to the socket itself (onExpired does), or know about sessions and mail.

/** The share of maxConnections from which the listener is under stress. */
export const STRESS_SHARE = 0.8;

export interface DeadlineLimits {
  commandTimeoutMs: number;
  stressTimeoutMs: number;
  /** Bytes per second the DATA phase must average once the command deadline has passed. */
  minDataRate: number;
}

/** What a deadline needs to know about the connection, read when it is checked. */
export interface ConnectionView {
  /** sello owes the client a reply (a hook runs, or the message is being decided). */
  waitingForSello(): boolean;
  /** The client is sending the message (between 354 and the final dot). */
  inData(): boolean;
  /** Message bytes received so far in this DATA phase. */
  dataBytes(): number;
  /** The listener is near maxConnections. */
  stressed(): boolean;
}

export type DeadlineKind = 'command' | 'data';

export interface DeadlineExpiry {
  kind: DeadlineKind;
  stress: boolean;
  /** The deadline that applied (the command part, without the data-rate allowance). */
  timeoutMs: number;
}

/** How often an armed deadline looks again at most, so stress reaches open connections. */
const RECHECK_MS = 1000;

export class ClientDeadline {
  readonly #view: ConnectionView;
  readonly #limits: () => DeadlineLimits;
  readonly #onExpired: (expiry: DeadlineExpiry) => void;
  /** When the client last got the floor: its previous command, or sello's last busy moment. */
  #since = performance.now();
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(view: ConnectionView, limits: () => DeadlineLimits, onExpired: (expiry: DeadlineExpiry) => void) {
    this.#view = view;
    this.#limits = limits;
    this.#onExpired = onExpired;
    this.#arm(this.#timeoutMs());
  }

  /** The deadline that applies now: the short one while the listener is near maxConnections. */
  #timeoutMs(): number {
    const limits = this.#limits();
    return this.#view.stressed() ? limits.stressTimeoutMs : limits.commandTimeoutMs;
  }

  /** A command line arrived: the next one has a full deadline (DATA's phase starts here too). */
  commandReceived(): void {
    this.#since = performance.now();
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
  }

  #arm(delayMs: number): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => this.#check(), Math.max(1, Math.min(delayMs, RECHECK_MS)));
    this.#timer.unref();
  }

  #check(): void {
    const now = performance.now();
    const limits = this.#limits();
    const stress = this.#view.stressed();
    const timeoutMs = stress ? limits.stressTimeoutMs : limits.commandTimeoutMs;
    if (this.#view.waitingForSello()) {
      // RFC 5321 §4.5.3.2: the client waits for us; its time starts when we have answered.
      this.#since = now;
      return this.#arm(timeoutMs);
    }
    const inData = this.#view.inData();
    const allowedMs = timeoutMs + (inData && limits.minDataRate > 0 ? (this.#view.dataBytes() / limits.minDataRate) * 1000 : 0);
    const remainingMs = this.#since + allowedMs - now;
    if (remainingMs > 0) return this.#arm(remainingMs);
    this.stop();
    this.#onExpired({ kind: inData ? 'data' : 'command', stress, timeoutMs });
  }
}

// How a connection-level error from smtp-server is logged. Owns: telling client misbehaviour
// (a reset, a broken pipe, TLS garbage, a vanished client) from sello's own faults. Client faults
// are normal on the Internet: info, with a short reason and no stack, so that an alert on warn or
// error level means sello itself is in trouble. Also what happens to a command whose client left
// while it ran. Must not: decide replies to clients that are still there.

import { Replies, SmtpReplyError } from '../errors.ts';
import type { Config } from '../config/schema.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { RelaySession } from '../relay/types.ts';
import type { DeadlineExpiry, DeadlineLimits } from './client-deadlines.ts';
import { replyText } from './own-replies.ts';

/** Socket errors a peer causes by closing, resetting or stalling its side. */
const PEER_ERRORS = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED', 'ECONNECTION', 'EHOSTUNREACH', 'ENETUNREACH', 'ERR_STREAM_PREMATURE_CLOSE']);

/** A short reason when `error` is the client's doing (its code, or the TLS alert), else undefined. */
export function clientFaultReason(error: unknown): string | undefined {
  if (!(error instanceof Error)) return undefined;
  const { code, reason, library } = error as Error & { code?: string; reason?: string; library?: string };
  if (code && PEER_ERRORS.has(code)) return code;
  // OpenSSL errors carry library/reason; Node's TLS layer codes start with ERR_SSL_ / ERR_TLS_.
  if (library === 'SSL routines' || (code && /^ERR_(SSL|TLS)_/.test(code))) return `TLS: ${reason ?? code ?? 'handshake failed'}`;
  if (/socket disconnected before secure TLS connection|Client network socket disconnected/i.test(error.message)) return 'TLS: client left during the handshake';
  return undefined;
}

/** Logs a connection error of `listener`: info for client faults, warn with the error otherwise. */
export function logConnectionError(logger: Logger, listener: string, error: unknown): void {
  const reason = clientFaultReason(error);
  const client = (error as { remoteAddress?: string } | undefined)?.remoteAddress;
  if (reason) logger.info({ listener, ...(client ? { client } : {}), reason }, 'client error');
  else logger.warn({ listener, err: error }, 'smtp connection error');
}

/** A downstream session opened for a session that ended meanwhile: closed; the error to throw. */
export async function closedForEndedSession(relay: RelaySession): Promise<SmtpReplyError> {
  await relay.close();
  return new SmtpReplyError(Replies.connectionLost, 'the client left while the downstream session was opening');
}

/** A command cut short because the client left (its close hook closed the downstream session). */
export function logClientLeft(logger: Logger, listener: string, session: string, error: Error): Error {
  logger.info({ session, listener, reason: error.message }, 'client left during a command');
  return Object.assign(new Error(replyText(Replies.connectionLost)), { responseCode: Replies.connectionLost.code });
}

/** A slow client cut at its deadline (client-deadlines.ts): the client's doing, so info; counted. */
export function reportClientTimeout(deps: { logger: Logger; metrics: Metrics }, listener: string, expiry: DeadlineExpiry): void {
  deps.metrics.clientTimeout(listener, expiry.kind, expiry.stress);
  deps.logger.info({ listener, kind: expiry.kind, stress: expiry.stress, timeoutMs: expiry.timeoutMs }, 'client timed out');
}

/** The deadlines of a listener's connections, from the config's limits. */
export function deadlineLimitsOf(config: Config): DeadlineLimits {
  const { commandTimeout, stressTimeout, minDataRate } = config.limits;
  return { commandTimeoutMs: commandTimeout, stressTimeoutMs: stressTimeout, minDataRate };
}

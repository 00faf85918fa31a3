// sello's pino output captured in memory, for tests that assert what was logged (decision
// records, warnings, that no secret appears). Must not: filter or reformat what sello wrote.

import { Writable } from 'node:stream';
import { createLogger, type Logger } from '../../src/observability/logger.ts';

export interface CapturedLog {
  /** A sello logger at `level` writing here. */
  logger: Logger;
  /** Everything written, as written. */
  text(): string;
  /** Each JSON line, parsed. */
  records(): Record<string, unknown>[];
}

export function captureLog(level = 'info'): CapturedLog {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      chunks.push(String(chunk));
      callback();
    },
  });
  const text = () => chunks.join('');
  return {
    logger: createLogger(level, stream),
    text,
    records: () =>
      text()
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line) as Record<string, unknown>),
  };
}

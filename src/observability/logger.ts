// The process logger: pino on stdout, JSON or text (logging.format, log-text.ts). Owns: log level,
// format and redaction of secrets.
// Must not: be imported for anything but logging; components receive a Logger, never create one.

import { pino, type Logger } from 'pino';
import { textLogStream } from './log-text.ts';

export type { Logger } from 'pino';

export function createLogger(level: string, destination?: NodeJS.WritableStream, format: 'json' | 'text' = 'json'): Logger {
  const output = destination ?? pino.destination({ dest: 1, sync: false });
  return pino(
    {
      level,
      base: { service: 'sello' },
      // Belt and braces: no code logs these, and if one ever does they are not written.
      redact: { paths: ['password', '*.password', 'credentials', '*.credentials', 'privateKey', '*.privateKey'], censor: '[redacted]' },
    },
    format === 'text' ? textLogStream(output) : output,
  );
}

/** A logger that writes nothing, for tests and commands that do not log. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

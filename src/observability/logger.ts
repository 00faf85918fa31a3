// The process logger: pino JSON on stdout. Owns: log level and redaction of secrets.
// Must not: be imported for anything but logging; components receive a Logger, never create one.

import { pino, type Logger } from 'pino';

export type { Logger } from 'pino';

export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { service: 'sello' },
      // Belt and braces: no code logs these, and if one ever does they are not written.
      redact: { paths: ['password', '*.password', 'credentials', '*.credentials', 'privateKey', '*.privateKey'], censor: '[redacted]' },
    },
    destination ?? pino.destination({ dest: 1, sync: false }),
  );
}

/** A logger that writes nothing, for tests and commands that do not log. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

// logging.format: text — pino's JSON records rewritten as one greppable line each, for journald
// and humans: `2026-12-04T16:50:00.123Z INFO transaction session=… spf.result=fail relay.code=250`.
// Owns: the text line format. Must not: drop or reorder records, or let a value break the line
// (every value that is not a plain word is JSON-quoted, so CR and LF stay escaped).

import { Writable } from 'node:stream';

const levelNames: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };

/** Fields every record has, written in the line's fixed prefix (time, level, msg) or left out (service). */
const prefixFields = new Set(['time', 'level', 'msg', 'service']);

/** A word that needs no quotes: no space, quote, '=', control or non-ASCII character. */
const plainWord = /^[\x21\x23-\x3c\x3e-\x7e]+$/;

function formatValue(value: unknown): string {
  if (typeof value === 'string') return plainWord.test(value) ? value : JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null) return String(value);
  return JSON.stringify(value) ?? 'undefined';
}

/** key=value pairs; nested objects flattened with dots (spf.result=fail), arrays kept as JSON. */
function pairs(record: Record<string, unknown>, prefix = ''): string[] {
  const out: string[] = [];
  for (const [key, value] of Object.entries(record)) {
    if (prefix === '' && prefixFields.has(key)) continue;
    const name = `${prefix}${key}`;
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) out.push(...pairs(value as Record<string, unknown>, `${name}.`));
    else out.push(`${name}=${formatValue(value)}`);
  }
  return out;
}

/** One JSON record (a line pino wrote) as one text line, without the newline. */
export function formatTextRecord(line: string): string {
  let record: unknown;
  try {
    record = JSON.parse(line);
  } catch {
    return line; // not pino's JSON: passed on as it is rather than lost
  }
  if (record === null || typeof record !== 'object' || Array.isArray(record)) return line;
  const fields = record as Record<string, unknown>;
  const time = typeof fields.time === 'number' ? new Date(fields.time).toISOString() : String(fields.time ?? '');
  const level = typeof fields.level === 'number' ? (levelNames[fields.level] ?? `LEVEL${fields.level}`) : String(fields.level ?? '');
  const message = typeof fields.msg === 'string' ? formatValue(fields.msg) : '-';
  return [time, level, message, ...pairs(fields)].join(' ');
}

/** A stream for pino: takes its JSON lines, writes text lines to `destination`. */
export function textLogStream(destination: { write(text: string): unknown; flush?: (callback?: (error?: Error) => void) => void }): Writable & { flush(callback?: (error?: Error) => void): void } {
  let partial = '';
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      const lines = (partial + String(chunk)).split('\n');
      partial = lines.pop() ?? '';
      const text = lines.filter((line) => line !== '').map((line) => `${formatTextRecord(line)}\n`).join('');
      if (text === '') {
        callback();
        return;
      }
      destination.write(text);
      callback();
    },
    final(callback) {
      if (partial !== '') destination.write(`${formatTextRecord(partial)}\n`);
      partial = '';
      callback();
    },
  });
  // logger.flush() (at exit) reaches the real destination.
  return Object.assign(stream, {
    flush(callback?: (error?: Error) => void) {
      if (destination.flush) destination.flush(callback);
      else callback?.();
    },
  });
}

// `sello dns-zone [--config FILE]`: every key record of the signing table as one zone-file
// snippet to paste into the zone or hand to the DNS admin (what opendkim-genzone does).
// Owns: this command's flags and output. A record file beside a key (<selector>.txt, written by
// `sello keygen --record-file` or opendkim-genkey) supplies the record's tags (t=, s=, n=) when
// its p= is this key's. Must not: change keys or files, query DNS, or call process.exit.

import { readFile } from 'node:fs/promises';
import { loadConfig } from '../config/load.ts';
import { parseDuration } from '../config/schema.ts';
import { KeyError, UsageError } from '../errors.ts';
import { signingKeyPath } from '../signing/key-store.ts';
import { dnsRecordValue, formatRecord, loadKey, recordFilePath, recordName } from '../signing/keys.ts';
import { SigningTable } from '../signing/table.ts';
import { parseCommandArgs } from './args.ts';
import { configPath } from './config-path.ts';
import type { Command } from './io.ts';
import { parseKeyRecord } from './keycheck.ts';

export const dnsZoneUsage = `usage: sello dns-zone [options]

Prints the DNS TXT record of every key in the config's signing table as one zone-file snippet
(<selector>._domainkey.<domain>. IN TXT ( "…" )). A record file beside a key (<selector>.txt, from
sello keygen --record-file or opendkim-genkey) keeps its tags (t=y, s=email, n=…) if it carries
the same key; otherwise the record is made from the key alone.

options:
  --config FILE       the config whose signing table to use (default: $SELLO_CONFIG, /etc/sello/sello.yaml or config/sello.yaml)
  --ttl DURATION      a TTL on every record, e.g. 1h or 3600 (default: none, the zone's $TTL)
  -h, --help          show this help

exit status: 0 when every record was printed, 1 when a key could not be read (the others are
still printed), 2 for bad usage.
`;

/** The record file's value: its quoted character-strings joined (RFC 6376 §3.6.2.2), or undefined. */
async function recordFileValue(keyFile: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile(recordFilePath(keyFile), 'utf8');
  } catch {
    return undefined;
  }
  if (text.length > 64 * 1024) return undefined;
  const strings = [...text.replace(/;[^"\n]*$/gm, '').matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((match) => (match[1] ?? '').replace(/\\(.)/g, '$1'));
  return strings.length > 0 ? strings.join('') : undefined;
}

/** p= of a record value, white space removed (RFC 6376 §3.6.1 base64string may hold FWS). */
function publicKeyOf(value: string): string | undefined {
  const record = parseKeyRecord(value);
  return record.kind === 'key' ? (record.tags.get('p') ?? '').replace(/\s+/g, '') : undefined;
}

export const dnsZoneCommand: Command = async (args, io) => {
  const { values, positionals } = parseCommandArgs('dns-zone', { args, options: { config: { type: 'string' }, ttl: { type: 'string' } } });
  if (values.help) {
    io.stdout(dnsZoneUsage);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError('dns-zone takes no arguments (see sello dns-zone --help)');
  let ttlSeconds: number | undefined;
  if (values.ttl !== undefined) {
    const milliseconds = parseDuration(/^\d+$/.test(values.ttl) ? Number(values.ttl) : values.ttl);
    // RFC 2181 §8: a TTL is an unsigned 31-bit number of seconds.
    if (milliseconds === undefined || milliseconds % 1000 !== 0 || milliseconds / 1000 > 2 ** 31 - 1) {
      throw new UsageError(`--ttl must be whole seconds, e.g. 3600 or 1h, not ${JSON.stringify(values.ttl)}`);
    }
    ttlSeconds = milliseconds / 1000;
  }
  const file = configPath(values.config, io.env);
  const config = await loadConfig(file, io.env);
  const table = new SigningTable(config.signing.domains);

  const lines = [`; DKIM key records of the signing table of ${file} (sello dns-zone)`];
  const seen = new Set<string>();
  let failures = 0;
  for (const { domain, selector } of table.keys()) {
    const name = recordName(domain, selector);
    if (seen.has(name)) continue; // "example.com" and "*.example.com" may share a key
    seen.add(name);
    const path = signingKeyPath(config.signing.keysDir, domain, selector, config.signing);
    let computed: string;
    try {
      const key = await loadKey(path);
      for (const warning of key.warnings) io.stderr(`warning: ${warning}\n`);
      computed = dnsRecordValue(key);
    } catch (error) {
      if (!(error instanceof KeyError)) throw error;
      io.stderr(`sello dns-zone: ${name}: ${error.message}\n`);
      failures += 1;
      continue;
    }
    let value = computed;
    const written = await recordFileValue(path);
    if (written !== undefined) {
      if (publicKeyOf(written) === publicKeyOf(computed)) value = written;
      else io.stderr(`warning: ${recordFilePath(path)} does not carry the key ${path}; printing the key's own record instead\n`);
    }
    lines.push(formatRecord(domain, selector, value, 'bind', ttlSeconds));
  }
  io.stdout(`${lines.join('\n')}\n`);
  return failures === 0 ? 0 : 1;
};

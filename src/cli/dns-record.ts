// `sello dns-record <domain> <selector>`: print again the DNS TXT record of an existing key
// (PKCS#8 or PKCS#1). Owns: this command's flags and output.
// Must not: create, change or move key files, touch DNS, or call process.exit.

import { UsageError } from '../errors.ts';
import { dnsRecordValue, formatRecord, keyPath, loadKey, validateDomain, validateSelector } from '../signing/keys.ts';
import { asUsage, parseCommandArgs, recordFormatFlag } from './args.ts';
import type { Command } from './io.ts';

export const dnsRecordUsage = `usage: sello dns-record <domain> <selector> [options]

Prints the DNS TXT record for the key <keys-dir>/<domain>/<selector>.pem, to be published at
<selector>._domainkey.<domain>.

options:
  --format F          bind (default: zone-file line, value split into strings of <= 255 octets),
                      value (the record value alone), json
  --keys-dir DIR      key directory (default: keys)
  -h, --help          show this help
`;

export const dnsRecordCommand: Command = async (args, io) => {
  const parsed = parseCommandArgs('dns-record', {
    args,
    allowPositionals: true,
    options: {
      format: { type: 'string' },
      'keys-dir': { type: 'string' },
    },
  });
  const { values, positionals } = parsed;
  if (values.help) {
    io.stdout(dnsRecordUsage);
    return 0;
  }
  if (positionals.length !== 2) {
    throw new UsageError(`expected a domain and a selector, got ${String(positionals.length)} arguments (see sello dns-record --help)`);
  }
  const format = recordFormatFlag(values.format);
  const keysDir = values['keys-dir'] ?? 'keys';
  if (keysDir === '') throw new UsageError('--keys-dir must not be empty');
  const domain = asUsage(() => validateDomain(positionals[0] ?? ''));
  const selector = asUsage(() => validateSelector(positionals[1] ?? ''));

  const key = await loadKey(keyPath(keysDir, domain, selector));
  for (const warning of key.warnings) io.stderr(`warning: ${warning}\n`);
  io.stdout(`${formatRecord(domain, selector, dnsRecordValue(key), format)}\n`);
  return 0;
};

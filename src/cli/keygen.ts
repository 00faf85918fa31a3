// `sello keygen`: make DKIM key(s) under <keys-dir>/<domain>/<selector>.pem and print the DNS
// TXT record(s) to publish. Owns: keygen's flags, defaults (date selector, RSA 2048) and output.
// Must not: overwrite an existing key, touch DNS, or call process.exit (main.ts maps errors).

import { createPrivateKey } from 'node:crypto';
import { lstat } from 'node:fs/promises';
import { KeyError, UsageError } from '../errors.ts';
import {
  dnsRecordValue,
  formatRecord,
  generateKey,
  keyPath,
  loadKey,
  recordName,
  rsaKeySizes,
  validateSelector,
  writeKey,
  writeRecordFile,
  type KeyAlgorithm,
  type RecordTags,
  type RsaKeySize,
} from '../signing/keys.ts';
import { algorithmFlag, asUsage, onlyDomain, parseCommandArgs, recordFormatFlag } from './args.ts';
import type { CliIo, Command } from './io.ts';
import { defaultKeysDir } from './keys-dir.ts';

export const keygenUsage = `usage: sello keygen <domain> [options]

Makes a DKIM private key, writes it to <keys-dir>/<domain>/<selector>.pem (mode 0600; an existing
key is never overwritten) and prints the DNS TXT record to publish at
<selector>._domainkey.<domain> before signing with the key.

options:
  --selector S        selector (default: year and month in UTC, e.g. 202611)
  --algorithm A       rsa (default), ed25519, or both: two keys, selectors S-rsa and S-ed25519,
                      one record each (RFC 8463 dual signing)
  --bits N            RSA key size: 2048 (default), 3072, 4096; 1024 is allowed with a warning
                      (the RFC 8301 minimum) for DNS providers that cannot take a split record
  --format F          bind (default: zone-file line, value split into strings of <= 255 octets),
                      value (the record value alone), json (one object per line)
  --keys-dir DIR      key directory (default: signing.keysDir of the config found as sello serve
                      finds it: $SELLO_CONFIG, /etc/sello/sello.yaml, config/sello.yaml; else keys)
  --if-missing        keep a key that already exists and print its record instead of failing
  --record-file       also write the record (bind form) beside the key: <keys-dir>/<domain>/<selector>.txt
                      (what sello dns-zone reads back, with the tags below)

record tags (RFC 6376 §3.6.1), as opendkim-genkey and rspamadm write them:
  --testing           t=y: the domain is testing DKIM (verifiers treat its mail as unsigned)
  --strict-subdomains t=s: signatures' i= must be in d= itself, not a subdomain
  --service S         s=S: email (the key signs mail only) or * (any service, the default)
  --note TEXT         n=TEXT: a note for whoever reads the record
  -h, --help          show this help
`;

/** The default selector: the current month in UTC as YYYYMM, so a rotation gets a new name. */
export function defaultSelector(now: Date): string {
  return `${String(now.getUTCFullYear()).padStart(4, '0')}${String(now.getUTCMonth() + 1).padStart(2, '0')}`;
}

/** keygen with an injected clock (for the default selector). */
export function createKeygenCommand(now: () => Date = () => new Date()): Command {
  return async (args, io) => {
    const options = parseKeygenArgs(args);
    if (options === 'help') {
      io.stdout(keygenUsage);
      return 0;
    }
    const { domain, format, bits, ifMissing, tags, recordFile } = options;
    const keysDir = options.keysDir ?? (await defaultKeysDir(io));
    if (bits === 1024) {
      io.stderr('warning: a 1024-bit RSA key is the RFC 8301 §3.2 minimum; use it only if your DNS provider cannot take a record split into several strings\n');
    }
    const base = options.selector ?? defaultSelector(now());
    const plan: { algorithm: KeyAlgorithm; selector: string }[] =
      options.algorithm === 'both'
        ? [
            { algorithm: 'rsa', selector: `${base}-rsa` },
            { algorithm: 'ed25519', selector: `${base}-ed25519` },
          ]
        : [{ algorithm: options.algorithm, selector: base }];

    // Check every target first, so `--algorithm both` writes both keys or neither.
    const targets = [];
    for (const { algorithm, selector } of plan) {
      const validSelector = asUsage(() => validateSelector(selector));
      const path = keyPath(keysDir, domain, validSelector);
      const exists = await fileExists(path);
      if (exists && !ifMissing) {
        throw new KeyError(path, 'a key already exists there; refusing to overwrite it. Choose a new selector with --selector (or keep the key with --if-missing)');
      }
      targets.push({ algorithm, selector: validSelector, path, exists });
    }

    for (const { algorithm, selector, path, exists } of targets) {
      const name = recordName(domain, selector);
      let value: string;
      if (exists) {
        const key = await loadKey(path);
        reportWarnings(io, key.warnings);
        if (key.algorithm !== algorithm) {
          io.stderr(`warning: ${path} is an ${key.algorithm} key, not ${algorithm}; kept as it is\n`);
        }
        value = dnsRecordValue(key, tags);
        io.stdout(`${formatRecord(domain, selector, value, format)}\n`);
        io.stderr(`kept existing key ${path}; its record belongs at ${name}\n`);
        if (recordFile) io.stderr(`wrote the record to ${await writeRecordFile(path, formatRecord(domain, selector, value, 'bind'))}\n`);
      } else {
        const pem = generateKey(algorithm, algorithm === 'rsa' ? bits : undefined);
        const written = await writeKey(keysDir, domain, selector, pem);
        value = dnsRecordValue(createPrivateKey(pem), tags);
        io.stdout(`${formatRecord(domain, selector, value, format)}\n`);
        io.stderr(`wrote ${algorithm} key to ${written}; publish the record above at ${name} before signing with it\n`);
        if (recordFile) io.stderr(`wrote the record to ${await writeRecordFile(written, formatRecord(domain, selector, value, 'bind'))}\n`);
      }
    }
    return 0;
  };
}

export const keygenCommand: Command = createKeygenCommand();

interface KeygenOptions {
  domain: string;
  selector: string | undefined;
  algorithm: KeyAlgorithm | 'both';
  bits: RsaKeySize | undefined;
  format: 'bind' | 'value' | 'json';
  /** undefined: the config's signing.keysDir (keys-dir.ts). */
  keysDir: string | undefined;
  ifMissing: boolean;
  tags: RecordTags;
  recordFile: boolean;
}

function parseKeygenArgs(args: string[]): KeygenOptions | 'help' {
  const { values, positionals } = parseCommandArgs('keygen', {
    args,
    allowPositionals: true,
    options: {
      selector: { type: 'string' },
      algorithm: { type: 'string' },
      bits: { type: 'string' },
      format: { type: 'string' },
      'keys-dir': { type: 'string' },
      'if-missing': { type: 'boolean' },
      'record-file': { type: 'boolean' },
      testing: { type: 'boolean' },
      'strict-subdomains': { type: 'boolean' },
      service: { type: 'string' },
      note: { type: 'string' },
    },
  });
  if (values.help) return 'help';
  const domain = onlyDomain('keygen', positionals);
  const algorithm = algorithmFlag(values.algorithm) ?? 'rsa';
  let bits: RsaKeySize | undefined;
  if (values.bits !== undefined) {
    if (algorithm === 'ed25519') throw new UsageError('--bits applies to RSA keys only; Ed25519 keys have a fixed size');
    bits = rsaKeySizes.find((size) => String(size) === values.bits);
    if (bits === undefined) {
      throw new UsageError(`--bits must be 2048, 3072 or 4096 (or 1024, the RFC 8301 minimum), not ${JSON.stringify(values.bits)}`);
    }
  }
  const format = recordFormatFlag(values.format);
  const keysDir = values['keys-dir'];
  if (keysDir === '') throw new UsageError('--keys-dir must not be empty');
  const selector = values.selector === undefined ? undefined : asUsage(() => validateSelector(values.selector ?? ''));

  const service = values.service;
  if (service !== undefined && service !== 'email' && service !== '*') {
    // RFC 6376 §3.6.1 defines "email" and "*"; anything else would make verifiers ignore the key for mail.
    throw new UsageError(`--service must be email or * (RFC 6376 §3.6.1), not ${JSON.stringify(service)}`);
  }
  const note = values.note;
  if (note !== undefined && (note.length > 200 || /[\x00-\x1f\x7f]/.test(note))) {
    throw new UsageError('--note must be one line of at most 200 characters');
  }
  const tags: RecordTags = {
    ...(values.testing ? { testing: true } : {}),
    ...(values['strict-subdomains'] ? { strictSubdomains: true } : {}),
    ...(service !== undefined ? { service } : {}),
    ...(note !== undefined ? { note } : {}),
  };
  return { domain, selector, algorithm, bits, format, keysDir, ifMissing: values['if-missing'] ?? false, tags, recordFile: values['record-file'] ?? false };
}

async function fileExists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (error) {
    if (typeof error === 'object' && error !== null && 'code' in error && error.code === 'ENOENT') return false;
    throw new KeyError(path, `cannot check for an existing key: ${error instanceof Error ? error.message : String(error)}`);
  }
}

function reportWarnings(io: CliIo, warnings: readonly string[]): void {
  for (const warning of warnings) io.stderr(`warning: ${warning}\n`);
}

// argv → command. Owns: the command table and turning thrown errors into exit codes.
// Must not: hold command logic; each command lives in src/cli/<name>.ts.

import { UsageError } from '../errors.ts';
import type { CliIo, Command } from './io.ts';

const commands: Record<string, () => Promise<Command>> = {
  serve: async () => (await import('./serve.ts')).serveCommand,
  keygen: async () => (await import('./keygen.ts')).keygenCommand,
  'dns-record': async () => (await import('./dns-record.ts')).dnsRecordCommand,
  keycheck: async () => (await import('./keycheck.ts')).keycheckCommand,
  sign: async () => (await import('./sign.ts')).signCommand,
  'check-config': async () => (await import('./check-config.ts')).checkConfigCommand,
  spf: async () => (await import('./spf.ts')).spfCommand,
  passwd: async () => (await import('./passwd.ts')).passwdCommand,
  verify: async () => (await import('./verify.ts')).verifyCommand,
  rotate: async () => (await import('./rotate.ts')).rotateCommand,
  import: async () => (await import('./import-opendkim.ts')).importCommand,
  'dns-zone': async () => (await import('./dns-zone.ts')).dnsZoneCommand,
  version: async () => (await import('./version.ts')).versionCommand,
};

const usage = `usage: sello <command> [options]

commands:
  serve          run the listeners (config: --config, $SELLO_CONFIG, /etc/sello/sello.yaml, config/sello.yaml)
  keygen         make a DKIM key and print its DNS TXT record
  dns-record     print the DNS TXT record of an existing key again
  keycheck       compare the published DKIM records with the local keys
  sign           DKIM-sign a message from stdin with the configured keys
  check-config   validate the configuration and keys
  spf            evaluate SPF for an IP, sender and HELO, print the result and Received-SPF
  passwd         print a user's line for a local AUTH credentials file
  verify         verify the DKIM signatures and ARC chain of a message from stdin
  rotate         make the next DKIM key; the server switches once DNS serves it
  import         print the sello config of an OpenDKIM setup (sello import opendkim [FILE])
  dns-zone       print the DNS TXT records of every key in the signing table as a zone snippet
  version        print sello's version and its Node.js runtime (also: sello --version)

Run 'sello <command> --help' for a command's options.
`;

export async function main(argv: string[], io: CliIo): Promise<number> {
  const [given, ...args] = argv;
  const name = given === '--version' || given === '-V' ? 'version' : given;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    io.stdout(usage);
    return name ? 0 : 2;
  }
  const load = commands[name];
  if (!load) {
    io.stderr(`sello: unknown command '${name}'\n\n${usage}`);
    return 2;
  }
  try {
    return await (await load())(args, io);
  } catch (error) {
    if (error instanceof UsageError) {
      io.stderr(`sello ${name}: ${error.message}\n`);
      return error.exitCode;
    }
    if (error instanceof Error && ['ConfigError', 'KeyError', 'BindError'].includes(error.name)) {
      io.stderr(`sello ${name}: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
}

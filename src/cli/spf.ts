// `sello spf --ip IP --sender ADDR --helo NAME`: evaluate SPF once, the way the mx listener does
// (checkSpf + formatReceivedSpf over sello's own resolver), and print the result.
// Owns: this command's flags, output and exit codes.
// Must not: decide policy (the result is reported, not acted on), or call process.exit.

import { isIP } from 'node:net';
import os from 'node:os';
import { checkSpf, DEFAULT_SPF_TIME_BUDGET_MS } from '../checks/spf.ts';
import { parseDuration } from '../config/schema.ts';
import { createResolver, systemServers } from '../dns/resolver.ts';
import { UsageError } from '../errors.ts';
import { formatReceivedSpf } from '../pipeline/received-spf.ts';
import { parseCommandArgs, parseDnsServerFlag } from './args.ts';
import type { Command } from './io.ts';

export const spfUsage = `usage: sello spf --ip IP --sender ADDR --helo NAME [options]

Evaluates SPF (RFC 7208) for one client the way the mx listener does, and prints the result
word on the first line, then the Received-SPF header field sello would add (folded lines).
The domain's exp= explanation, if any, goes to stderr.

options:
  --ip IP               the client's IP address (IPv4 or IPv6)
  --sender ADDR         the MAIL FROM address; '' or '<>' for the null sender, whose identity
                        is postmaster@<helo> (RFC 7208 §2.4). Optional with --identity helo
  --helo NAME           the EHLO/HELO name the client gave
  --identity ID         mailfrom (default) or helo (RFC 7208 §2.3)
  --dns HOST:PORT       a recursive DNS server ("[v6]:port" for IPv6; a bare address means
                        port 53); repeat for several. Default: the nameservers of /etc/resolv.conf
  --timeout DURATION    overall time for the evaluation, e.g. 20s (default), 500ms; past it the
                        result is temperror (RFC 7208 §4.6.4)
  --receiver NAME       our host name, for the comment and the %{r} macro (default: this host's name)
  -h, --help            show this help

exit status:
  0   the evaluation completed, whatever its result (pass, fail, …, temperror, permerror):
      read the result from the first line, e.g. result=$(sello spf … | head -n 1)
  2   bad usage
`;

// A per-query budget like the server's default (config dns.timeout), never beyond the overall one.
const DEFAULT_QUERY_TIMEOUT_MS = 5000;

export const spfCommand: Command = async (args, io) => {
  const parsed = parseCommandArgs('spf', {
    args,
    allowPositionals: false,
    options: {
      ip: { type: 'string' },
      sender: { type: 'string' },
      helo: { type: 'string' },
      identity: { type: 'string' },
      dns: { type: 'string', multiple: true },
      timeout: { type: 'string' },
      receiver: { type: 'string' },
    },
  });
  const { values } = parsed;
  if (values.help) {
    io.stdout(spfUsage);
    return 0;
  }

  const identity = values.identity ?? 'mailfrom';
  if (identity !== 'mailfrom' && identity !== 'helo') throw new UsageError(`--identity must be mailfrom or helo, not ${JSON.stringify(identity)}`);
  if (values.ip === undefined) throw new UsageError('--ip is required (see sello spf --help)');
  if (isIP(values.ip) === 0) throw new UsageError(`--ip must be an IPv4 or IPv6 address, not ${JSON.stringify(values.ip)}`);
  if (values.helo === undefined) throw new UsageError('--helo is required (see sello spf --help)');
  if (values.sender === undefined && identity === 'mailfrom') {
    throw new UsageError("--sender is required with --identity mailfrom ('' or '<>' for the null sender)");
  }
  const mailFrom = reversePath(values.sender ?? '');
  const timeBudgetMs = values.timeout === undefined ? DEFAULT_SPF_TIME_BUDGET_MS : parseDuration(values.timeout);
  if (timeBudgetMs === undefined || timeBudgetMs <= 0) {
    throw new UsageError(`--timeout must be a duration such as 20s or 500ms, not ${JSON.stringify(values.timeout)}`);
  }
  const servers = values.dns === undefined ? systemServers() : values.dns.map(parseDnsServerFlag);
  const receiver = values.receiver ?? os.hostname();

  const resolver = createResolver({
    servers,
    timeoutMs: Math.min(DEFAULT_QUERY_TIMEOUT_MS, timeBudgetMs),
    cache: { maxEntries: 1000, maxTtlSeconds: 3600 },
  });
  const outcome = await checkSpf({ clientIp: values.ip, mailFrom, helo: values.helo, receiver }, { resolver: resolver.resolve, timeBudgetMs, identity });
  io.stdout(`${outcome.result}\n${formatReceivedSpf(outcome, receiver).replace(/\r\n/g, '\n')}`);
  if (outcome.explanation !== undefined) io.stderr(`explanation: ${outcome.explanation}\n`);
  return 0;
};

/** "<a@b>" → "a@b", "<>" → "" (the null reverse-path, RFC 5321 §4.1.1.2). */
function reversePath(sender: string): string {
  const trimmed = sender.trim();
  return trimmed.startsWith('<') && trimmed.endsWith('>') ? trimmed.slice(1, -1) : trimmed;
}

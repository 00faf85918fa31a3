// `sello verify [--dns HOST:PORT …] [--timeout DURATION] [--json] < message`: verify every
// DKIM-Signature and the ARC chain of a message from stdin the way the mx listener does
// (line endings as it normalises them by default, verifyDkim and verifyArc over sello's own
// resolver), and print one result per signature.
// Owns: this command's flags, output and exit codes.
// Must not: evaluate SPF or DMARC (there is no SMTP transaction to take SPF's inputs from), decide
// policy, or call process.exit.

import { buffer } from 'node:stream/consumers';
import type { ArcVerification } from '../checks/arc.ts';
import type { DkimSignatureResult, DkimVerification } from '../checks/dkim-verify.ts';
import { parseConfig } from '../config/load.ts';
import { parseDuration } from '../config/schema.ts';
import { createResolver, systemServers } from '../dns/resolver.ts';
import { dnsError, type DnsResolve } from '../dns/types.ts';
import { UsageError } from '../errors.ts';
import { createLogger } from '../observability/logger.ts';
import { createMetrics } from '../observability/metrics.ts';
import { InboundChecks, MessagePipeline, TransactionEngine } from '../pipeline/index.ts';
import { Signer } from '../signing/signer.ts';
import { SigningTable } from '../signing/table.ts';
import { parseCommandArgs, parseDnsServerFlag } from './args.ts';
import type { Command } from './io.ts';

export const verifyUsage = `usage: sello verify [options] < message

Verifies every DKIM-Signature (RFC 6376) of the message on stdin, and its ARC chain (RFC 8617),
the way the mx listener does. Prints one line per signature, the result word first (pass, fail,
neutral, policy, temperror, permerror) so scripts can cut it, then the signature's d=, s= and a=
and the verifier's comment if it gave one (why the signature did not pass), then the arc= result:

  pass d=example.com s=rsa1 a=rsa-sha256
  fail d=example.com s=ed1 a=ed25519-sha256 (body hash did not verify)
  arc=none

A message without any DKIM-Signature prints "none" in place of the signature lines.
Bare LF (or CR) line endings, as editors and mail(1) save messages, become CRLF before verifying,
as the mx listener does by default.
SPF and DMARC are not evaluated: SPF needs the SMTP client's address, MAIL FROM and HELO (see
sello spf), and DMARC is incomplete without the SPF result.

options:
  --dns HOST:PORT       a recursive DNS server ("[v6]:port" for IPv6; a bare address means
                        port 53); repeat for several. Default: the nameservers of /etc/resolv.conf
  --timeout DURATION    overall time for the DNS lookups, e.g. 20s (default), 500ms; a key
                        lookup not answered in time gives temperror
  --json                print one JSON object instead: {"signatures": [{"result", "domain",
                        "selector", "algorithm", "reason"?, "info"}], "arc": {"result", "info"}}
  -h, --help            show this help

exit status (the arc= result does not change it):
  0   the message has at least one signature, and every signature passed
  1   a signature did not pass, or the message has none
  2   bad usage
`;

const DEFAULT_TIME_BUDGET_MS = 20_000;
// Per query and server, like the server's default (config dns.timeout), but never beyond the
// overall budget: a query the deadline gave up on keeps the process alive until its own timeout.
const DEFAULT_QUERY_TIMEOUT_MS = 5000;

export const verifyCommand: Command = async (args, io) => {
  const { values } = parseCommandArgs('verify', {
    args,
    allowPositionals: false,
    options: {
      dns: { type: 'string', multiple: true },
      timeout: { type: 'string' },
      json: { type: 'boolean' },
    },
  });
  if (values.help) {
    io.stdout(verifyUsage);
    return 0;
  }
  const timeBudgetMs = values.timeout === undefined ? DEFAULT_TIME_BUDGET_MS : parseDuration(values.timeout);
  if (timeBudgetMs === undefined || timeBudgetMs <= 0) {
    throw new UsageError(`--timeout must be a duration such as 20s or 500ms, not ${JSON.stringify(values.timeout)}`);
  }
  const servers = values.dns === undefined ? systemServers() : values.dns.map(parseDnsServerFlag);

  const message = await buffer(io.stdin);
  const resolver = createResolver({
    servers,
    timeoutMs: Math.min(DEFAULT_QUERY_TIMEOUT_MS, timeBudgetMs),
    cache: { maxEntries: 1000, maxTtlSeconds: 3600 },
  });
  const resolve = resolveUntil(resolver.resolve, performance.now() + timeBudgetMs);
  const { dkim, arc } = await inspect(message, resolve);

  const signatures = dkim.signatures.map((signature) => ({ ...signature, reason: resinfoComments(signature.info) }));
  if (values.json) {
    io.stdout(`${JSON.stringify({ signatures: signatures.map(jsonSignature), arc: { result: arc.result, info: arc.info } })}\n`);
  } else {
    const lines = signatures.length === 0 ? ['none'] : signatures.map(textLine);
    io.stdout(`${[...lines, arc.info].join('\n')}\n`);
  }
  return signatures.length > 0 && signatures.every((signature) => signature.result === 'pass') ? 0 : 1;
};

/**
 * The engine's session, as a verifying listener runs it for a client it knows nothing of (no SPF:
 * no address, MAIL FROM or HELO): line endings normalised, then DKIM and the ARC chain. mailauth
 * uses the client's address only to record smtp.remote-ip in strict mode, which sello does not
 * use; the chain itself is validated from the message alone (RFC 8617 §5.2).
 */
async function inspect(message: Buffer, resolve: DnsResolve): Promise<{ dkim: DkimVerification; arc: ArcVerification }> {
  // The schema needs a listener; verify starts none. DMARC is never enforced here (the default),
  // and neither the message nor its header is too large (a local file is not an SMTP client's;
  // normalising bare line endings at most doubles the header).
  const config = parseConfig({ listeners: [{ name: 'verify', role: 'submission', listen: '127.0.0.1:0' }], limits: { maxHeaderSize: message.length * 2 + 2, maxMessageSize: message.length + 1 } });
  const inbound = new InboundChecks(config, resolve);
  const noKeys = { get: () => undefined, warnings: [], size: 0, loaded: [] };
  const engine = new TransactionEngine({
    config,
    pipeline: new MessagePipeline(config, new Signer(new SigningTable({}), noKeys, config.signing), inbound),
    inbound,
    metrics: createMetrics({ defaultMetrics: false }),
    logger: createLogger('silent'),
  });
  const session = engine.session({ listener: 'verify', role: 'milter', signs: false, verifies: true, mtaJudgesRelay: true });
  await session.mail('', { sessionId: 'verify', address: '', addressKnown: false, helo: '', trusted: false });
  const verdict = await session.end(message);
  session.abort();
  if (verdict.action !== 'accept' || !verdict.inbound?.dkim || !verdict.inbound.arc) {
    throw new Error(`the message could not be inspected${verdict.action === 'accept' ? '' : `: ${verdict.reason ?? verdict.reply.text}`}`);
  }
  return { dkim: verdict.inbound.dkim, arc: verdict.inbound.arc };
}

type ReportedSignature = DkimSignatureResult & { reason: string | undefined };

function textLine(signature: ReportedSignature): string {
  const line = `${signature.result} d=${signature.domain} s=${signature.selector} a=${signature.algorithm}`;
  return signature.reason === undefined ? line : `${line} (${signature.reason})`;
}

function jsonSignature(signature: ReportedSignature): Record<string, string> {
  const { result, domain, selector, algorithm, reason, info } = signature;
  return { result, domain, selector, algorithm, ...(reason === undefined ? {} : { reason }), info };
}

/**
 * The comments right after the result word of a resinfo ("dkim=fail (body hash did not verify)
 * header.i=…" → "body hash did not verify"): the signature's reason travels only inside `info`,
 * where the formatter escaped "\", "(" and ")" with a backslash (RFC 5322 §3.2.2 quoted-pair).
 */
export function resinfoComments(info: string): string | undefined {
  const leading = /^\S+((?: \((?:[^\\()]|\\.)*\))+)/.exec(info)?.[1];
  if (leading === undefined) return undefined;
  const texts = [...leading.matchAll(/\(((?:[^\\()]|\\.)*)\)/g)].map((match) => (match[1] ?? '').replace(/\\(.)/g, '$1'));
  return texts.join('; ');
}

/**
 * One deadline for every lookup, however many keys and resolver rounds there are: a lookup still
 * unanswered when it passes fails as a silent server does (ETIMEOUT, which verifies as temperror).
 */
function resolveUntil(resolve: DnsResolve, deadline: number): DnsResolve {
  return async (name, rrtype) => {
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(dnsError('ETIMEOUT', name, rrtype)), deadline - performance.now());
    });
    try {
      return await Promise.race([resolve(name, rrtype), expired]);
    } finally {
      clearTimeout(timer);
    }
  };
}

// `sello sign [--config FILE | --keys-dir DIR --domain D --selector S [--selector S2 …]]`:
// sign a message from stdin, signed message on stdout — the server's own engine session, as a
// submission listener runs it (line-ending policy, From rule, signing table, oversigning).
// Exit 0 signed; 1 not signed (reason on stderr, nothing on stdout: never silently unsigned).

import { buffer } from 'node:stream/consumers';
import { loadSigning } from '../app.ts';
import { inConfigFile, loadConfig, parseConfig } from '../config/load.ts';
import type { Config } from '../config/schema.ts';
import type { DnsResolve } from '../dns/types.ts';
import { formatReply, UsageError } from '../errors.ts';
import { applyHeaderEdits, splitMessage } from '../message/index.ts';
import { createLogger } from '../observability/logger.ts';
import { createMetrics } from '../observability/metrics.ts';
import { InboundChecks, MessagePipeline, TransactionEngine } from '../pipeline/index.ts';
import { configPath } from './config-path.ts';
import { parseCommandArgs } from './args.ts';
import type { Command } from './io.ts';

const usage = `usage: sello sign [--config FILE] < message > signed
       sello sign --keys-dir DIR --domain D --selector S [--selector S2 …] < message > signed
`;

export const signCommand: Command = async (args, io) => {
  const { values } = parseCommandArgs('sign', {
    args,
    options: {
      config: { type: 'string' },
      'keys-dir': { type: 'string' },
      domain: { type: 'string' },
      selector: { type: 'string', multiple: true },
    },
  });
  if (values.help) {
    io.stdout(usage);
    return 0;
  }
  const direct = values['keys-dir'] !== undefined || values.domain !== undefined || values.selector !== undefined;
  if (direct && values.config) throw new UsageError(`give --config or --keys-dir/--domain/--selector, not both\n${usage}`);
  if (direct && !(values['keys-dir'] && values.domain && values.selector?.length)) {
    throw new UsageError(`--keys-dir, --domain and --selector go together\n${usage}`);
  }
  const file = direct ? undefined : configPath(values.config, io.env);
  const config: Config = file === undefined
    ? // The same schema as a config file, so keys and selectors are validated the same way;
      // the listener is a placeholder the schema requires and sign never starts.
      parseConfig({
        listeners: [{ name: 'sign', role: 'submission', listen: '127.0.0.1:0' }],
        signing: { keysDir: values['keys-dir'], domains: { [values.domain as string]: values.selector } },
      })
    : await loadConfig(file, io.env);

  const { signer } = file === undefined ? await loadSigning(config) : await inConfigFile(file, () => loadSigning(config));
  const message = await buffer(io.stdin);
  // The server's engine, as a submission listener sees a trusted local client.
  const engine = new TransactionEngine({
    config,
    pipeline: new MessagePipeline(config, signer),
    inbound: new InboundChecks(config, noDns),
    metrics: createMetrics({ defaultMetrics: false }),
    logger: createLogger('silent'),
  });
  const session = engine.session({ listener: 'sign', role: 'submission', signs: true, verifies: false, mtaJudgesRelay: true });
  await session.mail('', { sessionId: 'sign', address: '127.0.0.1', addressKnown: false, helo: '', trusted: true });
  const verdict = await session.end(message);
  if (verdict.action !== 'accept') {
    const { reply, reason } = verdict;
    io.stderr(`sello sign: refused: ${formatReply(reply)}${reason && reason !== formatReply(reply) ? ` (${reason})` : ''}\n`);
    return 1;
  }
  session.delivered({ code: 250 });
  if (!verdict.record.signatures) {
    const domain = verdict.record.unsignedFromDomain ? ` (From domain ${verdict.record.unsignedFromDomain})` : '';
    io.stderr(`sello sign: not signed: ${verdict.record.unsigned}${domain}\n`);
    return 1;
  }
  for (const chunk of applyHeaderEdits(verdict.message, splitMessage(verdict.message).header, verdict.edits)) io.stdout(chunk);
  return 0;
};

/** sign verifies nothing: no lookup is ever made. */
const noDns: DnsResolve = async (name) => {
  throw Object.assign(new Error(`sello sign looks up nothing (${name})`), { code: 'ESERVFAIL' });
};

// `sello sign [--config FILE | --keys-dir DIR --domain D --selector S [--selector S2 …]]`:
// sign a message from stdin, signed message on stdout — the server's own pipeline (line-ending
// policy, From rule, signing table, oversigning), for admins and scripts.
// Exit 0 signed; 1 not signed (reason on stderr, nothing on stdout: never silently unsigned).

import { buffer } from 'node:stream/consumers';
import { loadSigning } from '../app.ts';
import { loadConfig, parseConfig } from '../config/load.ts';
import type { Config } from '../config/schema.ts';
import { formatReply, SmtpReplyError, UsageError } from '../errors.ts';
import { MessagePipeline } from '../pipeline/transaction.ts';
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
  const config: Config = direct
    ? // The same schema as a config file, so keys and selectors are validated the same way;
      // the listener is a placeholder the schema requires and sign never starts.
      parseConfig({
        listeners: [{ name: 'sign', role: 'submission', listen: '127.0.0.1:0' }],
        signing: { keysDir: values['keys-dir'], domains: { [values.domain as string]: values.selector } },
      })
    : await loadConfig(configPath(values.config, io.env), io.env);

  const { signer } = await loadSigning(config);
  const message = await buffer(io.stdin);
  try {
    const prepared = await new MessagePipeline(config, signer).process(message, { role: 'submission', signs: true });
    if (!prepared.signing.signed) {
      const domain = 'fromDomain' in prepared.signing ? ` (From domain ${prepared.signing.fromDomain})` : '';
      io.stderr(`sello sign: not signed: ${prepared.signing.reason}${domain}\n`);
      return 1;
    }
    for (const chunk of prepared.chunks) io.stdout(chunk);
    return 0;
  } catch (error) {
    if (error instanceof SmtpReplyError) {
      io.stderr(`sello sign: refused: ${formatReply(error.reply)}${error.message !== formatReply(error.reply) ? ` (${error.message})` : ''}\n`);
      return 1;
    }
    throw error;
  }
};

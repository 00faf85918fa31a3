// The downstream SMTP sink of the benchmark, run as its own process: accepts every envelope,
// reads and discards the data, answers 250. It counts messages and the DKIM-Signature fields at
// the top of each (so the parent can check that what was meant to be signed was signed).
// Owns: nothing but that. Must not: keep message data, check signatures, or delay replies; it
// is the baseline every setup is measured against, so it must stay as cheap as it can be.
// Usage (forked by bench/child.ts): node bench/sink-process.ts

import type { SMTPServerDataStream } from 'smtp-server';
import { PromptSMTPServer } from '../src/smtp/prompt-server.ts';
import { ownUsage, serveParent, type ChildToParent } from './child.ts';

/** DKIM-Signature fields are prepended, so the first few KiB of the data hold all of them. */
const headBytes = 8192;
const signatureField = /^DKIM-Signature:/gim;

let messages = 0;
let signatures = 0;

function onData(stream: SMTPServerDataStream, callback: (error?: Error | null, message?: string) => void): void {
  const head: Buffer[] = [];
  let headLength = 0;
  stream.on('data', (chunk: Buffer) => {
    if (headLength >= headBytes) return;
    head.push(chunk);
    headLength += chunk.length;
  });
  stream.on('end', () => {
    messages++;
    signatures += Buffer.concat(head).subarray(0, headBytes).toString('latin1').split('\r\n\r\n', 1)[0]!.match(signatureField)?.length ?? 0;
    callback(null, `Ok: queued as SINK${messages}`);
  });
}

// smtp-server waits a hard-coded 100 ms before every greeting; PromptSMTPServer (sello's own
// override, used here with no delay) greets at once, as a local MTA would.
const server = new PromptSMTPServer(
  {
    logger: false,
    banner: 'bench sink',
    disableReverseLookup: true,
    hideSTARTTLS: true,
    authOptional: true,
    disabledCommands: ['AUTH'],
    size: 64 * 1024 * 1024,
    maxClients: 10_000,
    onData: (stream, _session, callback) => onData(stream, callback),
  },
  0,
);

server.listen(0, '127.0.0.1', () => {
  const address = server.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  serveParent(() => ownUsage({ messages, signatures }));
  process.send?.({ type: 'ready', port, usage: ownUsage({ messages, signatures }) } satisfies ChildToParent);
});

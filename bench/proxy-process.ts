// The proxy-shape baseline of the benchmark (setup p), run as its own process: what a Node SMTP
// proxy costs with no checks and no crypto — smtp-server receiving (the same greeting-at-once
// server sello's listeners use), each message relayed in step through a pooled nodemailer
// transport to the sink, the client's 250 only after the sink's 250. sello's figures are ratios
// to this one, measured in the same run.
// Owns: nothing but that. Must not: parse, check, sign or log anything, or answer before the
// sink did; it is the floor a Node proxy stands on.
// Usage (forked by bench/child.ts): node bench/proxy-process.ts <sink port> <pool size>

import nodemailer from 'nodemailer';
import type { SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import { PromptSMTPServer } from '../src/smtp/prompt-server.ts';
import { ownUsage, serveParent, type ChildToParent } from './child.ts';

const [sinkPort = '', poolSize = '20'] = process.argv.slice(2);

// Pooled: warm connections to the sink, reused message after message (RSET between them).
const transport = nodemailer.createTransport({
  pool: true,
  host: '127.0.0.1',
  port: Number(sinkPort),
  ignoreTLS: true,
  maxConnections: Number(poolSize),
  maxMessages: Infinity,
  name: 'proxy.bench.test',
});

function onData(stream: SMTPServerDataStream, session: SMTPServerSession, callback: (error?: Error | null, message?: string) => void): void {
  const chunks: Buffer[] = [];
  stream.on('data', (chunk: Buffer) => chunks.push(chunk));
  stream.on('end', () => {
    const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
    const to = session.envelope.rcptTo.map((recipient) => recipient.address);
    transport.sendMail({ envelope: { from, to }, raw: Buffer.concat(chunks) }).then(
      (info) => callback(null, `Ok: ${info.response.replace(/^\d{3}\s+/, '')}`),
      (error: Error & { responseCode?: number }) => callback(Object.assign(new Error(error.message), { responseCode: error.responseCode ?? 451 })),
    );
  });
}

const server = new PromptSMTPServer(
  {
    logger: false,
    banner: 'bench proxy',
    disableReverseLookup: true,
    hideSTARTTLS: true,
    authOptional: true,
    disabledCommands: ['AUTH'],
    size: 64 * 1024 * 1024,
    maxClients: 10_000,
    onData,
  },
  0,
);

server.listen(0, '127.0.0.1', () => {
  const address = server.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  serveParent(() => ownUsage());
  process.send?.({ type: 'ready', port, usage: ownUsage() } satisfies ChildToParent);
});

// A downstream SMTP server for component tests: records what it is sent, refuses what it is
// told to, checks AUTH against one user. Real SMTP on loopback (smtp-server).
// Must not: be used as the thing under test.

import { SMTPServer } from 'smtp-server';

export interface SinkMessage {
  mailFrom: string;
  mailParameters: Record<string, string | true>;
  rcptTo: string[];
  rcptParameters: Record<string, string | true>[];
  data: Buffer;
  user?: string;
  /** Who the sink believed the client was: the socket, or what XFORWARD/XCLIENT said. */
  client: { session: string; remoteAddress: string; remotePort: number; xForward: Record<string, string | number | false>; xClient: Record<string, string | number | false> };
}

export interface SinkOptions {
  /** recipient address → "550 5.1.1 No such user" style reply */
  refuseRecipients?: Record<string, string>;
  auth?: { username: string; password: string };
  /** Reply code/text to the final dot instead of 250. */
  dataReply?: string;
  /** Delay before answering the final dot. */
  dataDelayMs?: number;
  /** Accept XFORWARD / XCLIENT from anyone (smtp-server's useXForward / useXClient). */
  useXForward?: boolean;
  useXClient?: boolean;
}

export interface Sink {
  port: number;
  host: string;
  url: string;
  messages: SinkMessage[];
  /** Transactions that ended without a final dot (aborted). */
  aborted: number;
  /** TCP connections sello made to the sink: ever opened, and open now. */
  connections: { opened: number; open: number };
  close(): Promise<void>;
}

function replyError(reply: string): Error {
  const match = /^(\d{3}) (.*)$/.exec(reply);
  return Object.assign(new Error(match?.[2] ?? reply), { responseCode: Number(match?.[1] ?? 550) });
}

export async function startSink(options: SinkOptions = {}): Promise<Sink> {
  const messages: SinkMessage[] = [];
  const sink = { aborted: 0, connections: { opened: 0, open: 0 } } as Sink;
  const server = new SMTPServer({
    logger: false,
    disableReverseLookup: true,
    // close() ends idle connections at once (421, as an MTA that stops does) instead of waiting
    // 30 s for them: sello keeps pooled connections to its relay target open between sessions.
    closeTimeout: 1,
    hideENHANCEDSTATUSCODES: true,
    hideSTARTTLS: true,
    hideDSN: false,
    size: 50 * 1024 * 1024,
    authOptional: true,
    allowInsecureAuth: true,
    authMethods: ['PLAIN', 'LOGIN'],
    disabledCommands: options.auth ? [] : ['AUTH'],
    useXForward: options.useXForward ?? false,
    useXClient: options.useXClient ?? false,
    onAuth(auth, _session, callback) {
      // XCLIENT LOGIN= from a peer allowed XCLIENT: believed, as Postfix does (XCLIENT_README).
      if (auth.method === 'XCLIENT') return callback(null, { user: auth.username });
      if (auth.username === options.auth?.username && auth.password === options.auth?.password) return callback(null, { user: auth.username });
      callback(replyError('535 5.7.8 Authentication credentials invalid'));
    },
    onRcptTo(address, _session, callback) {
      const refusal = options.refuseRecipients?.[address.address];
      callback(refusal ? replyError(refusal) : null);
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', () => {
        const finish = () => {
          if (options.dataReply) return callback(replyError(options.dataReply));
          messages.push({
            mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
            mailParameters: (session.envelope.mailFrom && session.envelope.mailFrom.args) || {},
            rcptTo: session.envelope.rcptTo.map((rcpt) => rcpt.address),
            rcptParameters: session.envelope.rcptTo.map((rcpt) => rcpt.args || {}),
            data: Buffer.concat(chunks),
            ...(session.user ? { user: String(session.user) } : {}),
            client: {
              session: session.id,
              remoteAddress: session.remoteAddress,
              remotePort: session.remotePort,
              xForward: Object.fromEntries(session.xForward),
              xClient: Object.fromEntries(session.xClient),
            },
          });
          callback(null, `2.0.0 Ok: queued as SINK${messages.length}`);
        };
        if (options.dataDelayMs) setTimeout(finish, options.dataDelayMs);
        else finish();
      });
    },
  });
  // sello cuts a downstream session mid-command when its client leaves: a reset, not a sink fault.
  server.on('error', () => undefined);
  server.server.on('connection', (socket: import('node:net').Socket) => {
    sink.connections.opened++;
    sink.connections.open++;
    socket.once('close', () => sink.connections.open--);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return Object.assign(sink, {
    port,
    host: '127.0.0.1',
    url: `smtp://127.0.0.1:${port}`,
    messages,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  });
}

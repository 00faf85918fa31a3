// A deliberately lenient downstream MTA for smuggling tests: in DATA it drops NUL bytes and takes
// a bare CR or a bare LF as a line end, as some real MTAs do, so any "." line sello lets through
// in any of those forms ends the message early and what follows is read as new commands — a
// smuggled second transaction shows up here as a second message. Real SMTP on loopback.
// Must not: be strict (that is what the other sinks are for).

import net from 'node:net';

export interface LenientMessage {
  mailFrom: string;
  rcptTo: string[];
  /** The message as this MTA understood it (NULs dropped, line ends as CRLF, dots unstuffed). */
  data: string;
}

export interface LenientMta {
  port: number;
  url: string;
  messages: LenientMessage[];
  close(): Promise<void>;
}

/** Every line of `text` with NUL dropped and CR, LF or CRLF as the line end. */
function lenientLines(text: string): { lines: string[]; rest: string } {
  const cleaned = text.replace(/\0/g, '');
  const lines: string[] = [];
  let start = 0;
  for (let index = 0; index < cleaned.length; index++) {
    const char = cleaned[index];
    if (char !== '\r' && char !== '\n') continue;
    // A CR at the very end may be the first half of a CRLF still on its way.
    if (char === '\r' && index === cleaned.length - 1) break;
    lines.push(cleaned.slice(start, index));
    if (char === '\r' && cleaned[index + 1] === '\n') index++;
    start = index + 1;
  }
  return { lines, rest: cleaned.slice(start) };
}

export async function startLenientMta(): Promise<LenientMta> {
  const messages: LenientMessage[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.setEncoding('latin1');
    let buffered = '';
    let inData = false;
    let envelope: { mailFrom: string; rcptTo: string[] } = { mailFrom: '', rcptTo: [] };
    let body: string[] = [];
    socket.write('220 lenient.test ESMTP\r\n');
    socket.on('data', (chunk: string) => {
      const { lines, rest } = lenientLines(buffered + chunk);
      buffered = rest;
      for (const line of lines) {
        if (inData) {
          if (line === '.') {
            inData = false;
            messages.push({ ...envelope, data: body.map((text) => `${text}\r\n`).join('') });
            envelope = { mailFrom: '', rcptTo: [] };
            socket.write(`250 2.0.0 Ok: queued as LENIENT${messages.length}\r\n`);
          } else body.push(line.startsWith('.') ? line.slice(1) : line);
          continue;
        }
        const verb = line.slice(0, 4).toUpperCase();
        if (verb === 'EHLO' || verb === 'HELO') socket.write('250 lenient.test\r\n');
        else if (verb === 'MAIL') {
          envelope = { mailFrom: /<([^>]*)>/.exec(line)?.[1] ?? '', rcptTo: [] };
          socket.write('250 2.1.0 Ok\r\n');
        } else if (verb === 'RCPT') {
          envelope.rcptTo.push(/<([^>]*)>/.exec(line)?.[1] ?? '');
          socket.write('250 2.1.5 Ok\r\n');
        } else if (verb === 'DATA') {
          inData = true;
          body = [];
          socket.write('354 End data with <CR><LF>.<CR><LF>\r\n');
        } else if (verb === 'RSET' || verb === 'NOOP') socket.write('250 2.0.0 Ok\r\n');
        else if (verb === 'QUIT') socket.end('221 2.0.0 Bye\r\n');
        else socket.write('502 5.5.2 Error: command not recognized\r\n');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    port,
    url: `smtp://127.0.0.1:${port}`,
    messages,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

// The fuzz suite's seeded generator of mutated SMTP sessions (issue 10). Owns: turning a seed
// into the same list of client actions every time — commands with and without CRLF, pipelined
// bursts, AUTH garbage, STARTTLS followed by garbage bytes, DATA with bare CR/LF/NUL and
// end-of-data lookalikes, huge lines, random bytes, and a disconnect (FIN, destroy or reset) at
// any stage. Must not: know what sello answers (the harness judges the outcome).

import { seededRandom } from '../helpers/random.ts';

/** One thing the fuzzing client does. */
export type Action =
  | { kind: 'write'; bytes: Buffer }
  | { kind: 'pause'; ms: number }
  /** STARTTLS, then (if answered 220) these bytes raw on the socket instead of a handshake. */
  | { kind: 'starttls-garbage'; bytes: Buffer }
  /** Waits (bounded) for the replies to what was written so far. */
  | { kind: 'read' };

export type Ending = 'quit' | 'fin' | 'destroy' | 'reset';

export interface FuzzSession {
  id: number;
  listener: 'submission' | 'mx' | 'filter';
  actions: Action[];
  ending: Ending;
}

/** End-of-data lookalikes (SEC Consult's SMTP smuggling variants, NUL forms included). */
export const LOOKALIKES = ['\n.\n', '\n.\r\n', '\r.\r', '\r.\r\n', '\r\n.\r', '\r\n.\n', '\n.\r', '\r.\n', '\r\n\x00.\r\n', '\r\n.\x00\r\n', '\n\x00.\n', '\r\x00.\r', '\r\r\n.\r\r\n'];

const LINE_ENDS = ['\r\n', '\r\n', '\r\n', '\r\n', '\n', '\r', ''];

class Picker {
  readonly next: () => number;
  constructor(seed: number) {
    this.next = seededRandom(seed);
  }
  int(below: number): number {
    return Math.floor(this.next() * below);
  }
  chance(probability: number): boolean {
    return this.next() < probability;
  }
  one<T>(items: readonly T[]): T {
    return items[this.int(items.length)] as T;
  }
  bytes(length: number): Buffer {
    const out = Buffer.alloc(length);
    for (let index = 0; index < length; index++) out[index] = this.int(256);
    return out;
  }
}

/** A message body of the session: headers, a token to trace it, and perhaps hostile content. */
function message(pick: Picker, token: string): string {
  const lines = [`From: alice@example.com`, `To: bob@example.net`, `Subject: fuzz ${token}`, `Message-ID: <${token}@fuzz.test>`, '', `token ${token}`];
  const body: string[] = [];
  for (let count = pick.int(6); count > 0; count--) {
    switch (pick.int(7)) {
      case 0:
        body.push(`lookalike${pick.one(LOOKALIKES)}MAIL FROM:<mallory@example.com>`);
        break;
      case 1:
        body.push(`bare${pick.one(['\r', '\n', '\x00'])}ending`);
        break;
      case 2:
        body.push('.leading dot');
        break;
      case 3:
        body.push('x'.repeat(pick.int(3000)));
        break;
      case 4:
        body.push(pick.bytes(pick.int(64)).toString('latin1').replace(/\r\n\.\r\n/g, ''));
        break;
      default:
        body.push('ordinary line');
    }
  }
  // RFC 5321 §4.5.2: the client stuffs dots (sometimes it "forgets", on purpose).
  const text = [...lines, ...body].join('\r\n');
  return pick.chance(0.9) ? text.replace(/(^|\r\n)\./g, '$1..') : text;
}

/** The commands of an ordinary transaction, each a line without its end. */
function transaction(pick: Picker): string[] {
  const commands = ['MAIL FROM:<alice@example.com>'];
  for (let count = 1 + pick.int(3); count > 0; count--) commands.push(`RCPT TO:<${pick.one(['bob', 'carol', 'postmaster'])}@example.net>`);
  commands.push('DATA');
  return commands;
}

/** Session number `id` of the run with `seed`: the same actions for the same (seed, id). */
export function generateSession(seed: number, id: number): FuzzSession {
  const pick = new Picker((seed * 1_000_003 + id) >>> 0);
  const listener = pick.one(['submission', 'submission', 'mx', 'filter'] as const);
  const actions: Action[] = [];
  const line = (text: string, end = pick.one(LINE_ENDS)) => Buffer.from(`${text}${end}`, 'latin1');
  const write = (bytes: Buffer) => actions.push({ kind: 'write', bytes });
  write(line(pick.one(['EHLO fuzz.test', 'EHLO fuzz.test', 'HELO fuzz.test', 'LHLO x', 'EHLO', '']), pick.chance(0.9) ? '\r\n' : pick.one(LINE_ENDS)));
  actions.push({ kind: 'read' });
  const steps = 1 + pick.int(6);
  for (let step = 0; step < steps; step++) {
    switch (pick.int(12)) {
      case 0:
      case 1:
      case 2: {
        // A whole transaction, one command at a time or pipelined (RFC 2920), then the message.
        const token = `${seed}-${id}-${step}`;
        const commands = transaction(pick);
        if (pick.chance(0.5)) {
          write(Buffer.concat(commands.map((command) => line(command, '\r\n'))));
          actions.push({ kind: 'read' });
        } else {
          for (const command of commands) {
            write(line(command, pick.chance(0.95) ? '\r\n' : pick.one(LINE_ENDS)));
            actions.push({ kind: 'read' });
          }
        }
        const body = Buffer.from(message(pick, token), 'latin1');
        // Sometimes the data is cut short, or ends in a lookalike rather than CRLF . CRLF.
        const cut = pick.chance(0.15) ? body.subarray(0, pick.int(body.length)) : body;
        const end = pick.chance(0.85) ? '\r\n.\r\n' : pick.one(LOOKALIKES);
        write(Buffer.concat([cut, Buffer.from(end, 'latin1')]));
        actions.push({ kind: 'read' });
        break;
      }
      case 3:
        write(line(pick.one(['AUTH PLAIN', 'AUTH LOGIN', 'AUTH CRAM-MD5', 'AUTH XOAUTH2', 'AUTH']) + (pick.chance(0.5) ? ` ${pick.bytes(pick.int(80)).toString('base64')}` : '')));
        for (let count = pick.int(3); count > 0; count--) write(line(pick.chance(0.5) ? '*' : pick.bytes(pick.int(100)).toString(pick.chance(0.5) ? 'base64' : 'latin1')));
        actions.push({ kind: 'read' });
        break;
      case 4:
        actions.push({ kind: 'starttls-garbage', bytes: pick.chance(0.5) ? pick.bytes(1 + pick.int(300)) : Buffer.from('\x16\x03\x01\x00\x05garbage\r\n', 'latin1') });
        break;
      case 5:
        // A huge line: over smtp-server's 16 KiB command limit, or just under it.
        write(line(`${pick.one(['MAIL FROM:<', 'RCPT TO:<', 'NOOP ', 'X'])}${'a'.repeat(pick.chance(0.5) ? 17_000 + pick.int(20_000) : 1000 + pick.int(15_000))}`));
        actions.push({ kind: 'read' });
        break;
      case 6:
        write(pick.bytes(1 + pick.int(200)));
        break;
      case 7:
        write(line(pick.one(['RSET', 'NOOP', 'VRFY bob', 'HELP', 'EXPN list', 'XCLIENT ADDR=192.0.2.1', 'XFORWARD ADDR=192.0.2.1', 'BDAT 10 LAST', 'QUIT', 'GET / HTTP/1.1', 'STARTTLS'])));
        actions.push({ kind: 'read' });
        break;
      case 8:
        actions.push({ kind: 'pause', ms: pick.int(50) });
        break;
      case 9:
        // A command split across writes, byte by byte at first.
        for (const byte of line(pick.one(['MAIL FROM:<alice@example.com>', 'RCPT TO:<bob@example.net>', 'NOOP']))) write(Buffer.from([byte]));
        actions.push({ kind: 'read' });
        break;
      default:
        write(line(pick.one(transaction(pick))));
        actions.push({ kind: 'read' });
    }
  }
  const ending = pick.one(['quit', 'quit', 'fin', 'destroy', 'reset'] as const);
  return { id, listener, actions, ending };
}

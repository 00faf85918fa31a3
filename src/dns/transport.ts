// One DNS exchange with one server: the query over UDP, repeated over TCP when the answer comes
// back truncated (RFC 7766 §5), under a single deadline. Owns: sockets, the two-octet TCP framing
// and the spoofing defences of RFC 5452 §9 (random ID, fresh random source port, a connected
// socket so only the server's datagrams arrive, answer must echo ID and question).
// Must not: interpret rcodes or records, try other servers, or cache (resolver.ts and answer.ts).

import { randomInt } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import * as dnsPacket from 'dns-packet';
import type { DecodedPacket, Question } from 'dns-packet';

export type DnsServerAddress = { host: string; port: number };

export type ExchangeOutcome =
  /** The server answered this question (any rcode). */
  | { kind: 'response'; packet: DecodedPacket }
  /** No matching answer before the deadline. */
  | { kind: 'timeout' }
  /** The server could not be reached or hung up (ICMP port unreachable, TCP reset, …). */
  | { kind: 'unreachable'; error: Error }
  /** The server answered, but the answer is unusable (still truncated over TCP). */
  | { kind: 'bad-response'; reason: string };

export type ExchangeOptions = {
  /** Budget for the whole exchange, UDP and any TCP retry together. */
  timeoutMs: number;
  /** Called once per message put on the wire (for the resolver's statistics). */
  onSend?: (transport: 'udp' | 'tcp') => void;
};

// RFC 6891 §6.2.5 and the DNS flag day 2020 recommendation: 1232 octets avoids IP fragmentation.
const EDNS_UDP_PAYLOAD = 1232;

export function encodeQuery(id: number, question: Question): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id,
    // RFC 1035 §4.1.1: RD asks the (recursive) server to resolve the name for us.
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [question],
    additionals: [
      { type: 'OPT', name: '.', udpPayloadSize: EDNS_UDP_PAYLOAD, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] },
    ],
  });
}

function sameName(a: string, b: string): boolean {
  return a.replace(/\.$/, '').toLowerCase() === b.replace(/\.$/, '').toLowerCase();
}

/**
 * Decode a message and accept it only as the answer to our query: a response with our ID and
 * exactly our question (RFC 5452 §9.1; names compare case-insensitively, RFC 4343 §3). Anything
 * else — garbage, another query's answer, a forged datagram — is ignored (undefined).
 */
export function decodeAnswerTo(message: Buffer, id: number, question: Question): DecodedPacket | undefined {
  let packet: DecodedPacket;
  try {
    packet = dnsPacket.decode(message);
  } catch {
    return undefined;
  }
  if (packet.type !== 'response' || packet.id !== id) return undefined;
  const echoed = packet.questions;
  if (!echoed || echoed.length !== 1) return undefined;
  const [first] = echoed;
  if (!first || !sameName(first.name, question.name) || first.type !== question.type) return undefined;
  if ((first.class ?? 'IN') !== (question.class ?? 'IN')) return undefined;
  return packet;
}

/** Ask one server one question; never rejects, every way it can end is an outcome. */
export async function exchange(server: DnsServerAddress, question: Question, options: ExchangeOptions): Promise<ExchangeOutcome> {
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(), options.timeoutMs);
  try {
    const id = randomInt(0, 0x10000);
    const overUdp = await udpExchange(server, encodeQuery(id, question), id, question, deadline.signal, options.onSend);
    if (overUdp.kind !== 'response' || !overUdp.packet.flag_tc) return overUdp;
    // RFC 7766 §5 (and RFC 1035 §4.2.1): a truncated UDP answer is retried over TCP, same server.
    const tcpId = randomInt(0, 0x10000);
    const overTcp = await tcpExchange(server, encodeQuery(tcpId, question), tcpId, question, deadline.signal, options.onSend);
    if (overTcp.kind === 'response' && overTcp.packet.flag_tc) return { kind: 'bad-response', reason: 'truncated answer over TCP' };
    return overTcp;
  } finally {
    clearTimeout(timer);
  }
}

function udpExchange(
  server: DnsServerAddress,
  query: Buffer,
  id: number,
  question: Question,
  signal: AbortSignal,
  onSend: ExchangeOptions['onSend'],
): Promise<ExchangeOutcome> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve({ kind: 'timeout' });
      return;
    }
    // A new socket per query gets a fresh random source port from the OS (RFC 5452 §9.2).
    const socket = dgram.createSocket(net.isIPv6(server.host.replace(/%.*$/, '')) ? 'udp6' : 'udp4');
    let settled = false;
    const finish = (outcome: ExchangeOutcome): void => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      try {
        socket.close();
      } catch {
        // already closed after an error
      }
      resolve(outcome);
    };
    const onAbort = (): void => finish({ kind: 'timeout' });
    signal.addEventListener('abort', onAbort, { once: true });
    // On a connected socket the kernel reports ICMP "port unreachable" as ECONNREFUSED, so a dead
    // server fails fast instead of costing the whole timeout.
    socket.on('error', (error) => finish({ kind: 'unreachable', error }));
    socket.on('message', (message) => {
      const packet = decodeAnswerTo(message, id, question);
      if (packet) finish({ kind: 'response', packet });
    });
    socket.connect(server.port, server.host, () => {
      if (settled) return;
      onSend?.('udp');
      socket.send(query, (error) => {
        if (error) finish({ kind: 'unreachable', error });
      });
    });
  });
}

function tcpExchange(
  server: DnsServerAddress,
  query: Buffer,
  id: number,
  question: Question,
  signal: AbortSignal,
  onSend: ExchangeOptions['onSend'],
): Promise<ExchangeOutcome> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve({ kind: 'timeout' });
      return;
    }
    const socket = net.connect({ host: server.host, port: server.port });
    let settled = false;
    const finish = (outcome: ExchangeOutcome): void => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      socket.destroy();
      resolve(outcome);
    };
    const onAbort = (): void => finish({ kind: 'timeout' });
    signal.addEventListener('abort', onAbort, { once: true });
    socket.on('error', (error) => finish({ kind: 'unreachable', error }));
    socket.on('close', () => finish({ kind: 'unreachable', error: new Error('connection closed before an answer') }));
    socket.on('connect', () => {
      // RFC 1035 §4.2.2: over TCP each message is preceded by its length in two octets.
      const framed = Buffer.alloc(2 + query.length);
      framed.writeUInt16BE(query.length, 0);
      query.copy(framed, 2);
      onSend?.('tcp');
      socket.write(framed);
    });
    let pending = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 2) {
        const length = pending.readUInt16BE(0);
        if (pending.length < 2 + length) return;
        const message = pending.subarray(2, 2 + length);
        pending = pending.subarray(2 + length);
        const packet = decodeAnswerTo(message, id, question);
        if (packet) {
          finish({ kind: 'response', packet });
          return;
        }
      }
    });
  });
}

// A real authoritative DNS server for tests, on loopback, over UDP and TCP (RFC 1035 §4.2).
// Owns: serving a mutable in-memory zone (A, AAAA, MX, TXT, PTR, CNAME, wildcards), fault modes
// (SERVFAIL, silence) and a log of the queries it saw, so tests can assert what was asked.
// Must not: touch the host's resolver configuration, recurse, or listen beyond the address given
// (default 127.0.0.1, port 0). It is a test fixture, not a model of a production DNS server.

import dgram from 'node:dgram';
import net from 'node:net';
import * as dnsPacket from 'dns-packet';
import type { Answer, DecodedPacket, Packet, Question } from 'dns-packet';

export type MxRecord = { exchange: string; priority: number };

/** The records published at one name. A name present with no record of the asked type gives NODATA. */
export type RecordSet = {
  /** Each entry is one TXT record. A string longer than 255 octets is split into 255-octet
   *  character-strings (RFC 7208 §3.3, RFC 6376 §3.6.2.2); a string[] gives the character-strings
   *  explicitly (each at most 255 octets). */
  TXT?: (string | string[])[];
  A?: string[];
  AAAA?: string[];
  MX?: MxRecord[];
  PTR?: string[];
  /** An alias: every query for another type answers the CNAME and follows it inside the zone. */
  CNAME?: string;
  /** TTL of every record in this set, seconds; default 60. */
  ttl?: number;
  /** Misbehave for this name only: 'servfail' answers SERVFAIL, 'drop' never answers. */
  fault?: 'servfail' | 'drop';
};

/** Names are case-insensitive, with or without the trailing dot. A leading "*." label is a
 *  wildcard (RFC 1034 §4.3.3) matching any name below its parent that has no set of its own. */
export type Zone = Record<string, RecordSet>;

/** normal answers from the zone; servfail answers every query with SERVFAIL; drop answers nothing. */
export type DnsMode = 'normal' | 'servfail' | 'drop';

export type DnsQuery = { name: string; type: string; transport: 'udp' | 'tcp' };

export interface DnsServer {
  readonly host: string;
  readonly port: number;
  /** "host:port", the form resolvers take (IPv4 only; host is a literal address). */
  readonly address: string;
  /** Replace the record set at a name (creating the name). */
  set(name: string, records: RecordSet): void;
  /** Remove a name: it then answers NXDOMAIN. */
  remove(name: string): void;
  setMode(mode: DnsMode): void;
  /** Every query received, oldest first (names lower-case, without trailing dot). */
  readonly queries: DnsQuery[];
  close(): Promise<void>;
}

export type DnsServerOptions = {
  host?: string;
  /** 0 (default) picks a free port shared by UDP and TCP. */
  port?: number;
};

const DEFAULT_TTL = 60;
// RFC 1035 §4.2.1: UDP messages are limited to 512 octets unless EDNS(0) says more (RFC 6891 §6.2.5).
const CLASSIC_UDP_LIMIT = 512;
const OUR_EDNS_PAYLOAD = 1232;
const MAX_CNAME_CHAIN = 8;
const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4 } as const;

export function normalizeName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

function validateRecordSet(name: string, records: RecordSet): void {
  for (const txt of records.TXT ?? []) {
    if (Array.isArray(txt)) {
      for (const part of txt) {
        if (Buffer.byteLength(part) > 255) {
          throw new Error(`dns-server: ${name}: a TXT character-string is limited to 255 octets (got ${Buffer.byteLength(part)})`);
        }
      }
    }
  }
  for (const a of records.A ?? []) if (net.isIPv4(a) === false) throw new Error(`dns-server: ${name}: bad A ${a}`);
  for (const a of records.AAAA ?? []) if (net.isIPv6(a) === false) throw new Error(`dns-server: ${name}: bad AAAA ${a}`);
}

/** One TXT record → its character-strings (RFC 1035 §3.3.14). */
export function txtCharacterStrings(txt: string | string[]): Buffer[] {
  if (Array.isArray(txt)) return txt.map((part) => Buffer.from(part));
  const bytes = Buffer.from(txt);
  if (bytes.length === 0) return [Buffer.alloc(0)];
  const parts: Buffer[] = [];
  for (let offset = 0; offset < bytes.length; offset += 255) parts.push(bytes.subarray(offset, offset + 255));
  return parts;
}

type Resolution = { rcode: number; answers: Answer[]; drop: boolean };

class ZoneStore {
  readonly #sets = new Map<string, RecordSet>();

  constructor(zone: Zone) {
    for (const [name, records] of Object.entries(zone)) this.set(name, records);
  }

  set(name: string, records: RecordSet): void {
    validateRecordSet(name, records);
    this.#sets.set(normalizeName(name), structuredClone(records));
  }

  remove(name: string): void {
    this.#sets.delete(normalizeName(name));
  }

  /** Exact match first, then the closest wildcard (RFC 1034 §4.3.3, simplified: no empty
   *  non-terminal handling beyond "an existing name blocks the wildcard"). */
  find(name: string): RecordSet | undefined {
    const exact = this.#sets.get(name);
    if (exact) return exact;
    const labels = name.split('.');
    for (let i = 1; i < labels.length; i++) {
      const wildcard = this.#sets.get(['*', ...labels.slice(i)].join('.'));
      if (wildcard) return wildcard;
    }
    return undefined;
  }

  resolve(qname: string, qtype: string): Resolution {
    const answers: Answer[] = [];
    let name = qname;
    for (let hop = 0; hop <= MAX_CNAME_CHAIN; hop++) {
      const set = this.find(name);
      if (!set) return { rcode: answers.length ? RCODE.NOERROR : RCODE.NXDOMAIN, answers, drop: false };
      if (hop === 0 && set.fault === 'drop') return { rcode: RCODE.SERVFAIL, answers: [], drop: true };
      if (hop === 0 && set.fault === 'servfail') return { rcode: RCODE.SERVFAIL, answers: [], drop: false };
      const ttl = set.ttl ?? DEFAULT_TTL;
      // RFC 1034 §3.6.2: a CNAME owner has no other data; the alias is followed for other types.
      if (set.CNAME !== undefined && qtype !== 'CNAME') {
        const target = normalizeName(set.CNAME);
        answers.push({ type: 'CNAME', name, ttl, class: 'IN', data: target });
        name = target;
        continue;
      }
      answers.push(...recordsOfType(name, set, qtype, ttl));
      return { rcode: RCODE.NOERROR, answers, drop: false };
    }
    return { rcode: RCODE.SERVFAIL, answers: [], drop: false }; // CNAME loop
  }
}

function recordsOfType(name: string, set: RecordSet, qtype: string, ttl: number): Answer[] {
  const any = qtype === 'ANY';
  const out: Answer[] = [];
  if (any || qtype === 'A') for (const data of set.A ?? []) out.push({ type: 'A', name, ttl, class: 'IN', data });
  if (any || qtype === 'AAAA') for (const data of set.AAAA ?? []) out.push({ type: 'AAAA', name, ttl, class: 'IN', data });
  if (any || qtype === 'MX') {
    for (const mx of set.MX ?? []) {
      out.push({ type: 'MX', name, ttl, class: 'IN', data: { preference: mx.priority, exchange: normalizeName(mx.exchange) } });
    }
  }
  if (any || qtype === 'TXT') for (const txt of set.TXT ?? []) out.push({ type: 'TXT', name, ttl, class: 'IN', data: txtCharacterStrings(txt) });
  if (any || qtype === 'PTR') for (const data of set.PTR ?? []) out.push({ type: 'PTR', name, ttl, class: 'IN', data: normalizeName(data) });
  if ((any || qtype === 'CNAME') && set.CNAME !== undefined) {
    out.push({ type: 'CNAME', name, ttl, class: 'IN', data: normalizeName(set.CNAME) });
  }
  return out;
}

function rcodeOf(packet: DecodedPacket): number {
  return (packet.flags ?? 0) & 0xf;
}

/** Build the response to a query, or undefined when the server must stay silent. */
function respond(store: ZoneStore, mode: DnsMode, query: DecodedPacket, udpLimit: number | undefined): Buffer | undefined {
  if (mode === 'drop') return undefined;
  const question: Question | undefined = query.questions?.[0];
  const recursionDesired = (query.flags ?? 0) & dnsPacket.RECURSION_DESIRED;
  const base = { type: 'response' as const, id: query.id ?? 0, questions: question ? [question] : [] };
  const opt = query.additionals?.find((record) => record.type === 'OPT');
  const additionals: Answer[] = opt ? [{ type: 'OPT', name: '.', udpPayloadSize: OUR_EDNS_PAYLOAD, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }] : [];

  let rcode: number;
  let answers: Answer[] = [];
  if (!question || rcodeOf(query) !== 0 || query.type !== 'query') {
    rcode = RCODE.FORMERR;
  } else if (mode === 'servfail') {
    rcode = RCODE.SERVFAIL;
  } else if ((question.class ?? 'IN') !== 'IN') {
    rcode = RCODE.NOTIMP;
  } else {
    const resolution = store.resolve(normalizeName(question.name), question.type);
    if (resolution.drop) return undefined;
    rcode = resolution.rcode;
    answers = resolution.answers;
  }

  const flags = dnsPacket.AUTHORITATIVE_ANSWER | recursionDesired | rcode;
  const full: Packet = { ...base, flags, answers, additionals };
  const encoded = dnsPacket.encode(full);
  if (udpLimit === undefined || encoded.length <= udpLimit) return encoded;
  // RFC 1035 §4.2.1 / RFC 7766 §5: too big for UDP → empty answer with TC set, client retries over TCP.
  return dnsPacket.encode({ ...base, flags: flags | dnsPacket.TRUNCATED_RESPONSE, answers: [], additionals });
}

function udpLimitOf(query: DecodedPacket): number {
  const opt = query.additionals?.find((record) => record.type === 'OPT');
  if (opt && opt.type === 'OPT') return Math.max(CLASSIC_UDP_LIMIT, Math.min(opt.udpPayloadSize, OUR_EDNS_PAYLOAD));
  return CLASSIC_UDP_LIMIT;
}

export async function startDnsServer(zone: Zone = {}, options: DnsServerOptions = {}): Promise<DnsServer> {
  const host = options.host ?? '127.0.0.1';
  const store = new ZoneStore(zone);
  const queries: DnsQuery[] = [];
  let mode: DnsMode = 'normal';

  const record = (query: DecodedPacket, transport: 'udp' | 'tcp'): void => {
    const question = query.questions?.[0];
    if (question) queries.push({ name: normalizeName(question.name), type: question.type, transport });
  };

  const makeUdpSocket = (): dgram.Socket => {
    const socket = dgram.createSocket({ type: net.isIPv6(host) ? 'udp6' : 'udp4' });
    socket.on('error', () => {}); // a send to a vanished client must not crash the test run
    socket.on('message', (message, remote) => {
      let query: DecodedPacket;
      try {
        query = dnsPacket.decode(message);
      } catch {
        return; // not DNS: ignore, as a real server would
      }
      record(query, 'udp');
      const response = respond(store, mode, query, udpLimitOf(query));
      if (response) socket.send(response, remote.port, remote.address);
    });
    return socket;
  };

  const tcpSockets = new Set<net.Socket>();
  const tcp = net.createServer((socket) => {
    tcpSockets.add(socket);
    socket.on('close', () => tcpSockets.delete(socket));
    socket.on('error', () => socket.destroy());
    let pending = Buffer.alloc(0);
    socket.on('data', (chunk) => {
      pending = Buffer.concat([pending, chunk]);
      // RFC 1035 §4.2.2: each message is preceded by a two-octet length.
      while (pending.length >= 2) {
        const length = pending.readUInt16BE(0);
        if (pending.length < 2 + length) break;
        const message = pending.subarray(2, 2 + length);
        pending = pending.subarray(2 + length);
        let query: DecodedPacket;
        try {
          query = dnsPacket.decode(message);
        } catch {
          socket.destroy();
          return;
        }
        record(query, 'tcp');
        const response = respond(store, mode, query, undefined);
        if (response) {
          const framed = Buffer.alloc(2 + response.length);
          framed.writeUInt16BE(response.length, 0);
          response.copy(framed, 2);
          socket.write(framed);
        }
      }
    });
  });

  const { udp, port } = await bindBoth(makeUdpSocket, tcp, host, options.port ?? 0);

  return {
    host,
    port,
    address: `${host}:${port}`,
    queries,
    set: (name, records) => store.set(name, records),
    remove: (name) => store.remove(name),
    setMode: (next) => {
      mode = next;
    },
    close: async () => {
      for (const socket of tcpSockets) socket.destroy();
      await Promise.all([
        new Promise<void>((resolve) => udp.close(() => resolve())),
        new Promise<void>((resolve) => tcp.close(() => resolve())),
      ]);
    },
  };
}

/** Bind UDP and TCP on the same port; with port 0, retry until a port is free for both. */
async function bindBoth(
  makeUdpSocket: () => dgram.Socket,
  tcp: net.Server,
  host: string,
  wanted: number,
): Promise<{ udp: dgram.Socket; port: number }> {
  for (let attempt = 0; ; attempt++) {
    const udp = makeUdpSocket();
    const port = await new Promise<number>((resolve, reject) => {
      const onError = (error: Error): void => {
        udp.close();
        reject(error);
      };
      udp.once('error', onError);
      udp.bind(wanted, host, () => {
        udp.off('error', onError);
        resolve(udp.address().port);
      });
    });
    try {
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen(port, host, () => {
          tcp.off('error', reject);
          resolve();
        });
      });
      return { udp, port };
    } catch (error) {
      await new Promise<void>((resolve) => udp.close(() => resolve()));
      if (wanted !== 0 || attempt >= 20) throw error;
    }
  }
}

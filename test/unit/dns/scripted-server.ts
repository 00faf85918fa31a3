// A UDP "server" on loopback whose replies a test writes by hand, for what the zone server in
// test/helpers/dns-server.ts cannot produce: SOA authority sections, REFUSED, forged datagrams.
// Must not: be used where the real test DNS server would do.

import dgram from 'node:dgram';
import * as dnsPacket from 'dns-packet';
import type { DecodedPacket, Packet } from 'dns-packet';

export type ScriptedServer = {
  readonly port: number;
  /** Every query received, oldest first. */
  readonly received: DecodedPacket[];
  close(): Promise<void>;
};

/** `reply` returns the datagrams to send back (in order) for one query. */
export async function startScriptedServer(reply: (query: DecodedPacket) => Buffer[]): Promise<ScriptedServer> {
  const socket = dgram.createSocket('udp4');
  const received: DecodedPacket[] = [];
  socket.on('message', (message, remote) => {
    const query = dnsPacket.decode(message);
    received.push(query);
    for (const datagram of reply(query)) socket.send(datagram, remote.port, remote.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
  return {
    port: socket.address().port,
    received,
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}

/** A response to `query` with its ID and question unless overridden. */
export function responseTo(query: DecodedPacket, fields: Partial<Packet> & { rcode?: number }): Buffer {
  const { rcode = 0, ...rest } = fields;
  return dnsPacket.encode({
    type: 'response',
    id: query.id,
    flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | rcode,
    questions: query.questions,
    ...rest,
  });
}

/** A port on loopback where nothing listens over UDP (bound, then released). */
export async function deadUdpPort(): Promise<number> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
  const { port } = socket.address();
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  return port;
}

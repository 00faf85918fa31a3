// Reading answers (src/dns/answer.ts) from packets the test server cannot produce: CNAME loops,
// null MX, records of other owners or classes, negative TTLs bounded by the chain.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as dnsPacket from 'dns-packet';
import type { Answer, Packet } from 'dns-packet';
import { interpretAnswer } from '../../../src/dns/answer.ts';

function response(fields: Partial<Packet> & { rcode?: number }): ReturnType<typeof dnsPacket.decode> {
  const { rcode = 0, ...rest } = fields;
  return dnsPacket.decode(dnsPacket.encode({ type: 'response', id: 1, flags: rcode, questions: [{ name: 'q.example', type: 'A', class: 'IN' }], ...rest }));
}

const cname = (name: string, data: string, ttl = 300): Answer => ({ type: 'CNAME', name, ttl, class: 'IN', data });
const a = (name: string, data: string, ttl = 300): Answer => ({ type: 'A', name, ttl, class: 'IN', data });
const soa = (ttl: number, minimum: number): Answer => ({
  type: 'SOA',
  name: 'example',
  ttl,
  class: 'IN',
  data: { mname: 'ns.example', rname: 'hostmaster.example', serial: 1, refresh: 1, retry: 1, expire: 1, minimum },
});

test('a CNAME loop is a server failure, not an answer', () => {
  const packet = response({ answers: [cname('q.example', 'r.example'), cname('r.example', 'q.example')] });
  assert.deepEqual(interpretAnswer(packet, 'q.example', 'A'), { kind: 'failure', code: 'ESERVFAIL' });
});

test("only the chain's last name counts, and the TTL is the smallest along the chain", () => {
  const packet = response({
    answers: [cname('Q.example', 'r.example', 30), a('q.example', '192.0.2.1'), a('r.example', '192.0.2.2', 600), a('other.example', '192.0.2.3')],
  });
  assert.deepEqual(interpretAnswer(packet, 'q.example.', 'A'), { kind: 'records', records: ['192.0.2.2'], ttlSeconds: 30 });
});

test('records of another class are ignored (NODATA)', () => {
  const packet = response({ answers: [{ type: 'A', name: 'q.example', ttl: 300, class: 'CH', data: '192.0.2.1' }] });
  assert.deepEqual(interpretAnswer(packet, 'q.example', 'A'), { kind: 'negative', code: 'ENODATA', ttlSeconds: undefined });
});

test('NXDOMAIN at the end of a chain: the negative TTL is bounded by the CNAME and the SOA (RFC 2308 §5)', () => {
  const packet = response({ rcode: 3, answers: [cname('q.example', 'gone.example', 10)], authorities: [soa(300, 60)] });
  assert.deepEqual(interpretAnswer(packet, 'q.example', 'A'), { kind: 'negative', code: 'ENOTFOUND', ttlSeconds: 10 });
  const plain = response({ rcode: 3, authorities: [soa(300, 60)] });
  assert.deepEqual(interpretAnswer(plain, 'q.example', 'A'), { kind: 'negative', code: 'ENOTFOUND', ttlSeconds: 60 });
});

test('null MX (RFC 7505) has the exchange "" as node:dns reports it; FORMERR/NOTIMP are server failures', () => {
  const packet = dnsPacket.decode(
    dnsPacket.encode({
      type: 'response',
      id: 1,
      questions: [{ name: 'q.example', type: 'MX', class: 'IN' }],
      answers: [{ type: 'MX', name: 'q.example', ttl: 300, class: 'IN', data: { preference: 0, exchange: '.' } }],
    }),
  );
  assert.deepEqual(interpretAnswer(packet, 'q.example', 'MX'), { kind: 'records', records: [{ exchange: '', priority: 0 }], ttlSeconds: 300 });
  assert.deepEqual(interpretAnswer(response({ rcode: 1 }), 'q.example', 'A'), { kind: 'failure', code: 'ESERVFAIL' });
  assert.deepEqual(interpretAnswer(response({ rcode: 4 }), 'q.example', 'A'), { kind: 'failure', code: 'ESERVFAIL' });
});

// SMTPServerSession → ClientIdentity (src/smtp/client-identity.ts): the socket's client, or the
// one a trusted peer forwarded, never a mix of the two (XFORWARD_README note 4).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { SMTPServerSession } from 'smtp-server';
import { clientIdentity, sameClient } from '../../../src/smtp/client-identity.ts';

/** The fields smtp-server sets that clientIdentity reads. */
function session(fields: Partial<SMTPServerSession>): SMTPServerSession {
  return {
    remoteAddress: '127.0.0.1',
    remotePort: 50000,
    localAddress: '127.0.0.1',
    localPort: 10025,
    clientHostname: '[127.0.0.1]',
    hostNameAppearsAs: 'mta.example.org',
    openingCommand: 'EHLO',
    xClient: new Map(),
    xForward: new Map(),
    ...fields,
  } as SMTPServerSession;
}

test('no forwarding: the socket peer, its EHLO name; a PTR name only when one was looked up', () => {
  assert.deepEqual(clientIdentity(session({ remoteAddress: '192.0.2.7', remotePort: 40000, clientHostname: '[192.0.2.7]', hostNameAppearsAs: 'client.test' })), {
    address: '192.0.2.7',
    port: 40000,
    helo: 'client.test',
    protocol: 'ESMTP',
    localAddress: '127.0.0.1',
    localPort: 10025,
  });
  const looked = clientIdentity(session({ clientHostname: 'host.example.net', openingCommand: 'HELO' }));
  assert.equal(looked.hostname, 'host.example.net');
  assert.equal(looked.protocol, 'SMTP');
});

test('XFORWARD (smtp-server already put ADDR into remoteAddress): the forwarded values, nothing of the peer\'s own session', () => {
  const forwarded = session({
    remoteAddress: '192.0.2.9',
    remotePort: 50000, // the peer's port: XFORWARD sent no PORT
    clientHostname: 'mail.example.org',
    xForward: new Map<string, string | number | false>([
      ['ADDR:DEFAULT', '127.0.0.1'],
      ['ADDR', '192.0.2.9'],
      ['NAME', 'mail.example.org'],
      ['PROTO', 'ESMTP'],
      ['IDENT', '4Xb2Kq1z0Mz9'],
      ['SOURCE', 'remote'],
    ]),
  });
  assert.deepEqual(clientIdentity(forwarded), {
    address: '192.0.2.9',
    port: 0,
    helo: '', // not the peer's "mta.example.org"
    hostname: 'mail.example.org',
    protocol: 'ESMTP',
    localAddress: '127.0.0.1',
    localPort: 10025,
    ident: '4Xb2Kq1z0Mz9',
    source: 'REMOTE',
  });
  const withPortAndHelo = new Map(forwarded.xForward);
  withPortAndHelo.set('PORT', 40123).set('HELO', 'client.example.org').set('NAME', false).set('PROTO', 'SMTP');
  const identity = clientIdentity(session({ ...forwarded, xForward: withPortAndHelo }));
  assert.equal(identity.port, 40123);
  assert.equal(identity.helo, 'client.example.org');
  assert.equal(identity.hostname, undefined, 'NAME=[UNAVAILABLE]');
  assert.equal(identity.protocol, 'SMTP');
});

test('XCLIENT: HELO from the command survives the peer\'s next EHLO; LOGIN is carried', () => {
  const identity = clientIdentity(
    session({
      remoteAddress: '2001:db8::9',
      remotePort: 40123,
      hostNameAppearsAs: 'mta.example.org',
      xClient: new Map<string, string | number | false>([
        ['ADDR', '2001:db8::9'],
        ['PORT', 40123],
        ['HELO', 'Client.Example.org'],
        ['LOGIN', 'alice'],
      ]),
    }),
  );
  assert.equal(identity.address, '2001:db8::9');
  assert.equal(identity.port, 40123);
  assert.equal(identity.helo, 'Client.Example.org');
  assert.equal(identity.login, 'alice');
});

test('sameClient: every field counts; no previous client → false', () => {
  const a = clientIdentity(session({ remoteAddress: '192.0.2.7' }));
  assert.equal(sameClient(a, { ...a }), true);
  assert.equal(sameClient(a, { ...a, address: '192.0.2.8' }), false);
  assert.equal(sameClient(a, { ...a, ident: 'X' }), false);
  assert.equal(sameClient(undefined, a), false);
});

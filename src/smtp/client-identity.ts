// Who the client of an SMTP session is, for the relay (PRODUCT.md §3): the socket's peer, or on
// a filter listener the client that a trusted peer (`xforwardPeers`) forwarded with XFORWARD or
// XCLIENT. smtp-server checks the peer against that list and then puts the forwarded ADDR (and
// PORT) into session.remoteAddress/remotePort; the other attributes stay in session.xForward /
// session.xClient, where this file reads them.
// Owns: SMTPServerSession → ClientIdentity. Must not: decide trust (config and smtp-server do).

import type { SMTPServerSession } from 'smtp-server';
import type { ClientIdentity } from '../relay/types.ts';

type Forwarded = ReadonlyMap<string, string | number | false>;

/** A forwarded attribute as text; undefined when absent or [UNAVAILABLE] (smtp-server: false). */
function text(forwarded: readonly Forwarded[], name: string): string | undefined {
  for (const attributes of forwarded) {
    const value = attributes.get(name);
    if (value !== undefined) return value === false ? undefined : String(value);
  }
  return undefined;
}

/** The session's client as the relay passes it on. XCLIENT values win over XFORWARD ones. */
export function clientIdentity(session: SMTPServerSession): ClientIdentity {
  // smtp-server keeps the maps on the session (empty unless a trusted peer sent the command).
  const xClient: Forwarded[] = session.xClient instanceof Map ? [session.xClient] : [];
  const xForward: Forwarded[] = session.xForward instanceof Map ? [session.xForward] : [];
  const forwarded = [...xClient, ...xForward];
  const addressForwarded = forwarded.some((attributes) => typeof attributes.get('ADDR') === 'string');
  // With a forwarded ADDR the socket's port belongs to the peer, not to the client.
  const forwardedPort = Number(text(forwarded, 'PORT'));
  const port = addressForwarded ? (Number.isInteger(forwardedPort) && forwardedPort > 0 ? forwardedPort : 0) : session.remotePort;
  const forwardedProtocol = text(forwarded, 'PROTO')?.toUpperCase();
  const protocol =
    forwardedProtocol === 'SMTP' ? 'SMTP' : forwardedProtocol?.startsWith('ESMTP') ? 'ESMTP' : session.openingCommand === 'HELO' ? 'SMTP' : 'ESMTP';
  // XFORWARD_README note 4: never mix the peer's own session (its EHLO name, its PTR name)
  // into a forwarded client. XCLIENT HELO persists through the peer's next EHLO (XCLIENT_README).
  const mixable = !addressForwarded;
  const ownHelo = mixable ? session.hostNameAppearsAs || '' : '';
  const helo = forwarded.some((attributes) => attributes.has('HELO')) ? (text(forwarded, 'HELO') ?? '') : ownHelo;
  // smtp-server's clientHostname is the PTR name, or "[address]" when none was looked up.
  const ownHostname = mixable && session.clientHostname && !session.clientHostname.startsWith('[') ? session.clientHostname : undefined;
  const hostname = forwarded.some((attributes) => attributes.has('NAME')) ? text(forwarded, 'NAME') : ownHostname;
  const login = text(xClient, 'LOGIN');
  const ident = text(xForward, 'IDENT');
  const source = text(xForward, 'SOURCE')?.toUpperCase();
  return {
    address: session.remoteAddress,
    port,
    helo,
    ...(hostname ? { hostname } : {}),
    protocol,
    localAddress: session.localAddress,
    localPort: session.localPort,
    ...(login ? { login } : {}),
    ...(ident ? { ident } : {}),
    ...(source === 'LOCAL' || source === 'REMOTE' ? { source } : {}),
  };
}

/** Whether two identities are the same client (a downstream session is bound to one). */
export function sameClient(a: ClientIdentity | undefined, b: ClientIdentity): boolean {
  if (!a) return false;
  const keys = new Set([...Object.keys(a), ...Object.keys(b)] as (keyof ClientIdentity)[]);
  return [...keys].every((key) => a[key] === b[key]);
}

// A scripted raw SMTP/LMTP peer on 127.0.0.1:0 for tests that need exact control of the wire:
// each connection runs a script that reads lines / DATA bytes and writes raw replies.
// Owns: nothing in production; test-only helpers (also a self-signed certificate maker).
// Must not: be imported from src/.

import { generateKeyPairSync } from 'node:crypto';
import net from 'node:net';
import forge from 'node-forge';
import type { SmtpClientOptions } from '../../../src/relay/smtp-client.ts';

export class ScriptedPeer {
  readonly socket: net.Socket;
  /** Every byte the client sent on this connection. */
  received: Buffer = Buffer.alloc(0);
  private cursor = 0;
  private wake: (() => void) | undefined;
  private ended = false;

  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.received = Buffer.concat([this.received, chunk]);
      this.wake?.();
    });
    socket.on('close', () => {
      this.ended = true;
      this.wake?.();
    });
    socket.on('error', () => {});
  }

  send(text: string): void {
    if (!this.socket.destroyed) this.socket.write(text);
  }

  /** The next line the client sent, without CRLF; undefined when the client went away. */
  async readLine(): Promise<string | undefined> {
    const end = await this.waitFor((data) => {
      const index = data.indexOf('\r\n', this.cursor);
      return index === -1 ? -1 : index;
    });
    if (end === -1) return undefined;
    const line = this.received.subarray(this.cursor, end).toString('utf8');
    this.cursor = end + 2;
    return line;
  }

  /** The next `count` raw bytes (e.g. a binary PROXY v2 header); undefined when the client went away first. */
  async readBytes(count: number): Promise<Buffer | undefined> {
    const end = await this.waitFor((data) => (data.length - this.cursor >= count ? this.cursor + count : -1));
    if (end === -1) return undefined;
    const bytes = this.received.subarray(this.cursor, end);
    this.cursor = end;
    return bytes;
  }

  /** The raw bytes after DATA's 354 up to and including the end-of-data "\r\n.\r\n" (or ".\r\n"). */
  async readData(): Promise<Buffer | undefined> {
    const end = await this.waitFor((data) => {
      if (data.subarray(this.cursor, this.cursor + 3).toString() === '.\r\n') return this.cursor + 3;
      const index = data.indexOf('\r\n.\r\n', this.cursor);
      return index === -1 ? -1 : index + 5;
    });
    if (end === -1) return undefined;
    const bytes = this.received.subarray(this.cursor, end);
    this.cursor = end;
    return bytes;
  }

  /** Resolves once the client closed the connection. */
  async closedByClient(): Promise<void> {
    await this.waitFor(() => -1);
  }

  close(): void {
    this.socket.destroy();
  }

  private async waitFor(find: (data: Buffer) => number): Promise<number> {
    for (;;) {
      const found = find(this.received);
      if (found !== -1) return found;
      if (this.ended) return -1;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
      this.wake = undefined;
    }
  }
}

export interface FakeMta {
  readonly port: number;
  readonly peers: ScriptedPeer[];
  /** Resolves when every connection's script finished; rejects with a script's error. */
  scriptsDone(): Promise<void>;
  close(): Promise<void>;
}

/** Starts a server on 127.0.0.1:0 that runs `script` for every connection. */
export async function startFakeMta(script: (peer: ScriptedPeer) => Promise<void>): Promise<FakeMta> {
  const peers: ScriptedPeer[] = [];
  const runs: Promise<void>[] = [];
  const server = net.createServer((socket) => {
    const peer = new ScriptedPeer(socket);
    peers.push(peer);
    runs.push(script(peer));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address() as net.AddressInfo;
  return {
    port: address.port,
    peers,
    scriptsDone: async () => {
      await Promise.all(runs);
    },
    close: async () => {
      for (const peer of peers) peer.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Greets with 220 and answers EHLO/LHLO with the given keywords. Returns the hello line. */
export async function greetAndHello(peer: ScriptedPeer, keywords: readonly string[] = []): Promise<string | undefined> {
  peer.send('220 fake.test ESMTP\r\n');
  const hello = await peer.readLine();
  const lines = ['fake.test', ...keywords];
  peer.send(lines.map((line, index) => `250${index === lines.length - 1 ? ' ' : '-'}${line}\r\n`).join(''));
  return hello;
}

/** A port on 127.0.0.1 with nothing listening (bound, noted, released). */
export async function unusedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export function clientOptions(port: number, overrides: Partial<SmtpClientOptions> = {}): SmtpClientOptions {
  return {
    host: '127.0.0.1',
    port,
    protocol: 'smtp',
    helo: 'sello.test',
    starttls: 'never',
    tlsRejectUnauthorized: false,
    timeouts: { connectMs: 2000, commandMs: 2000, dataMs: 2000 },
    ...overrides,
  };
}

/** A throwaway self-signed certificate for CN=localhost (key from node:crypto, cert by node-forge). */
export function selfSignedCertificate(): { key: string; cert: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    privateKeyEncoding: { type: 'pkcs1', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  const certificate = forge.pki.createCertificate();
  certificate.publicKey = forge.pki.publicKeyFromPem(publicKey);
  certificate.serialNumber = '01';
  certificate.validity.notBefore = new Date(Date.now() - 60_000);
  certificate.validity.notAfter = new Date(Date.now() + 86_400_000);
  const name = [{ name: 'commonName', value: 'localhost' }];
  certificate.setSubject(name);
  certificate.setIssuer(name);
  certificate.setExtensions([{ name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }, { type: 7, ip: '127.0.0.1' }] }]);
  certificate.sign(forge.pki.privateKeyFromPem(privateKey), forge.md.sha256.create());
  return { key: privateKey, cert: forge.pki.certificateToPem(certificate) };
}

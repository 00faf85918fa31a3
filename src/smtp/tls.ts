// TLS material for a listener: the configured certificate, or a self-signed one made at start.
// Owns: making the self-signed certificate (node:crypto makes the key; node-forge only builds
// and signs the X.509 certificate, which node:crypto cannot do). Must not: write keys to disk.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import forge from 'node-forge';
import { ConfigError } from '../errors.ts';

export interface TlsMaterial {
  key: string;
  cert: string;
  selfSigned: boolean;
}

/** A self-signed certificate for `hostname`, valid for a year from now. */
export function selfSignedCertificate(hostname: string, now: Date = new Date()): TlsMaterial {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const certificate = forge.pki.createCertificate();
  certificate.publicKey = forge.pki.publicKeyFromPem(publicKey.export({ type: 'spki', format: 'pem' }).toString());
  // RFC 5280 §4.1.2.2: a positive serial number of at most 20 octets.
  certificate.serialNumber = `01${randomBytes(15).toString('hex')}`;
  certificate.validity.notBefore = new Date(now.getTime() - 60_000);
  certificate.validity.notAfter = new Date(now.getTime() + 365 * 86_400_000);
  const subject = [{ name: 'commonName', value: hostname }];
  certificate.setSubject(subject);
  certificate.setIssuer(subject);
  certificate.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames: [{ type: 2, value: hostname }] },
  ]);
  certificate.sign(forge.pki.privateKeyFromPem(keyPem), forge.md.sha256.create());
  return { key: keyPem, cert: forge.pki.certificateToPem(certificate), selfSigned: true };
}

/** Reads the configured PEM files; `configPath` names the listener's tls key in errors. */
export async function loadTlsMaterial(configPath: string, files: { cert?: string; key?: string }, hostname: string): Promise<TlsMaterial> {
  if (!files.cert || !files.key) return selfSignedCertificate(hostname);
  const read = async (key: 'cert' | 'key', file: string) => {
    try {
      return await readFile(file, 'utf8');
    } catch (error) {
      throw new ConfigError(`${configPath}.${key}`, `cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? error}`);
    }
  };
  return { cert: await read('cert', files.cert), key: await read('key', files.key), selfSigned: false };
}

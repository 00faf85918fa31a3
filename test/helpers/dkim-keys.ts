// Test DKIM keys: generation and the DNS TXT record text for them, computed here independently
// of src/signing so tests do not trust the code under test to describe its own keys.
// Owns: key records per RFC 6376 §3.6.1 (RSA: p= is the DER SubjectPublicKeyInfo) and RFC 8463 §4
// (Ed25519: p= is the raw 32-octet public key). Must not: write keys anywhere but where told.

import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';

export type DkimAlgorithm = 'rsa-sha256' | 'ed25519-sha256';

export type DkimTestKey = {
  algorithm: DkimAlgorithm;
  privateKey: KeyObject;
  /** PKCS#8 PEM, the usual on-disk form. */
  privateKeyPem: string;
  /** TXT record text, e.g. "v=DKIM1; k=rsa; p=MIIB…" (may exceed 255 octets; the DNS server splits it). */
  record: string;
};

export function generateDkimKey(algorithm: DkimAlgorithm, rsaBits = 2048): DkimTestKey {
  const { privateKey } =
    algorithm === 'rsa-sha256'
      ? generateKeyPairSync('rsa', { modulusLength: rsaBits })
      : generateKeyPairSync('ed25519');
  return {
    algorithm,
    privateKey,
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    record: dkimKeyRecord(privateKey),
  };
}

export function dkimKeyRecord(key: KeyObject | string): string {
  const publicKey = createPublicKey(key);
  if (publicKey.asymmetricKeyType === 'rsa') {
    return `v=DKIM1; k=rsa; p=${publicKey.export({ type: 'spki', format: 'der' }).toString('base64')}`;
  }
  if (publicKey.asymmetricKeyType === 'ed25519') {
    const jwk = publicKey.export({ format: 'jwk' });
    return `v=DKIM1; k=ed25519; p=${Buffer.from(jwk.x ?? '', 'base64url').toString('base64')}`;
  }
  throw new Error(`dkimKeyRecord: unsupported key type ${publicKey.asymmetricKeyType}`);
}

/** The private key in the form dkimpy takes: PKCS#1 PEM for RSA, base64 seed for Ed25519. */
export function dkimpyPrivateKey(key: KeyObject | string): { algorithm: DkimAlgorithm; privateKey: string } {
  const privateKey = typeof key === 'string' ? createPrivateKey(key) : key;
  if (privateKey.asymmetricKeyType === 'rsa') {
    return { algorithm: 'rsa-sha256', privateKey: privateKey.export({ type: 'pkcs1', format: 'pem' }).toString() };
  }
  if (privateKey.asymmetricKeyType === 'ed25519') {
    const jwk = privateKey.export({ format: 'jwk' });
    return { algorithm: 'ed25519-sha256', privateKey: Buffer.from(jwk.d ?? '', 'base64url').toString('base64') };
  }
  throw new Error(`dkimpyPrivateKey: unsupported key type ${privateKey.asymmetricKeyType}`);
}

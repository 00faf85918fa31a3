// dkimpy (Debian python3-dkim) as an independent DKIM verifier, ARC validator and signer for tests.
// Owns: running test/helpers/dkimpy-verify.py and dkimpy-sign.py with the system Python and
// parsing what they print. Must not: fall back to another Python or another DKIM library — gate
// tests with requireTool(t, checkDkimpy()) from tools.ts instead.

import { spawn } from 'node:child_process';
import type { KeyObject } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { dkimpyPrivateKey, type DkimAlgorithm } from './dkim-keys.ts';
import { SYSTEM_PYTHON } from './tools.ts';

const VERIFY_SCRIPT = fileURLToPath(new URL('./dkimpy-verify.py', import.meta.url));
const SIGN_SCRIPT = fileURLToPath(new URL('./dkimpy-sign.py', import.meta.url));

export type DkimpySignature = {
  domain: string;
  selector: string;
  algorithm: string;
  ok: boolean;
  /** dkimpy's reason when not ok, e.g. "ValidationError: body hash mismatch (…)". */
  error?: string;
  keyBits?: number;
};

export type DkimpyVerification = { signatures: DkimpySignature[] };

type RunResult = { stdout: Buffer; stderr: string; code: number | null };

function runPython(script: string, args: string[], input: Buffer, timeoutMs: number): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(SYSTEM_PYTHON, [script, ...args], { stdio: ['pipe', 'pipe', 'pipe'], timeout: timeoutMs });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    child.on('error', reject);
    child.on('close', (code) => resolve({ stdout: Buffer.concat(stdout), stderr: Buffer.concat(stderr).toString(), code }));
    child.stdin.on('error', () => {}); // the script may exit before reading everything; 'close' reports it
    child.stdin.end(input);
  });
}

/** Verify every DKIM-Signature of `message`, keys looked up at the given DNS server (UDP, TCP on TC). */
export async function verifyWithDkimpy(
  message: Buffer,
  dns: { host: string; port: number },
  options: { timeoutSeconds?: number; minimumRsaBits?: number } = {},
): Promise<DkimpyVerification> {
  const timeoutSeconds = options.timeoutSeconds ?? 5;
  const args = ['--dns-host', dns.host, '--dns-port', String(dns.port), '--timeout', String(timeoutSeconds)];
  if (options.minimumRsaBits !== undefined) args.push('--minkey', String(options.minimumRsaBits));
  const result = await runPython(VERIFY_SCRIPT, args, message, (timeoutSeconds * 4 + 30) * 1000);
  if (result.code !== 0) throw new Error(`dkimpy-verify.py exited ${result.code}:\n${result.stderr}`);
  return JSON.parse(result.stdout.toString()) as DkimpyVerification;
}

export type DkimpyArcSet = { instance: number; cv: string; asValid: boolean; amsValid: boolean; domain: string; selector: string };

export type DkimpyArcVerification = {
  /** dkimpy's chain result: pass, fail, none; null for a chain an earlier seal reported as failed. */
  cv: 'pass' | 'fail' | 'none' | null;
  /** "success", or why not. */
  reason: string;
  /** Each set dkimpy checked, newest first. */
  sets: DkimpyArcSet[];
};

/** Validate the ARC chain of `message` with dkim.arc_verify, keys looked up at the given DNS server. */
export async function arcVerifyWithDkimpy(message: Buffer, dns: { host: string; port: number }, options: { timeoutSeconds?: number } = {}): Promise<DkimpyArcVerification> {
  const timeoutSeconds = options.timeoutSeconds ?? 5;
  const args = ['--arc', '--dns-host', dns.host, '--dns-port', String(dns.port), '--timeout', String(timeoutSeconds)];
  const result = await runPython(VERIFY_SCRIPT, args, message, (timeoutSeconds * 4 + 30) * 1000);
  if (result.code !== 0) throw new Error(`dkimpy-verify.py --arc exited ${result.code}:\n${result.stderr}`);
  return (JSON.parse(result.stdout.toString()) as { arc: DkimpyArcVerification }).arc;
}

export type DkimpySignOptions = {
  domain: string;
  selector: string;
  /** PEM (any format node:crypto reads) or KeyObject; RSA or Ed25519. */
  privateKey: string | KeyObject;
  /** Defaults from the key type. */
  algorithm?: DkimAlgorithm;
  /** [header, body]; default relaxed/simple (dkimpy's default). */
  canonicalize?: ['relaxed' | 'simple', 'relaxed' | 'simple'];
  /** h= list; default dkimpy's choice (all present headers it considers signable). */
  headers?: string[];
  identity?: string;
  /** Add l= (body length). */
  length?: boolean;
};

/** The DKIM-Signature header field dkimpy makes for `message` (CRLF-terminated). */
export async function dkimpySignatureHeader(message: Buffer, options: DkimpySignOptions): Promise<Buffer> {
  const key = dkimpyPrivateKey(options.privateKey);
  const request = {
    message: message.toString('base64'),
    domain: options.domain,
    selector: options.selector,
    privateKey: key.privateKey,
    algorithm: options.algorithm ?? key.algorithm,
    canonicalize: options.canonicalize ?? ['relaxed', 'simple'],
    headers: options.headers,
    identity: options.identity,
    length: options.length ?? false,
  };
  const result = await runPython(SIGN_SCRIPT, [], Buffer.from(JSON.stringify(request)), 60_000);
  if (result.code !== 0) throw new Error(`dkimpy-sign.py exited ${result.code}:\n${result.stderr}`);
  return result.stdout;
}

/** `message` with a dkimpy DKIM-Signature prepended (RFC 6376 §5.6: signatures go on top). */
export async function signWithDkimpy(message: Buffer, options: DkimpySignOptions): Promise<Buffer> {
  return Buffer.concat([await dkimpySignatureHeader(message, options), message]);
}

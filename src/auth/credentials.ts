// Local AUTH credentials: PRODUCT.md §2's alternative to passing AUTH through to the MTA, "a local
// credentials file with hashed passwords". Owns: the file format (one "user:hash" per line), the
// scrypt hash format, and checking a password against it in constant time.
// Must not: speak SMTP, or put a password or a hash into an error, a warning or a log.

import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { ConfigError } from '../errors.ts';

/**
 * The PHC string form of scrypt (as passlib writes it): `$scrypt$ln=15,r=8,p=1$<salt>$<hash>`,
 * salt and hash in unpadded standard base64. N = 2^ln.
 */
export interface ScryptHash {
  readonly logN: number;
  readonly r: number;
  readonly p: number;
  readonly salt: Buffer;
  readonly hash: Buffer;
}

/**
 * New hashes: N = 2^15, r = 8, p = 1 (twice the 2^14 the scrypt paper gave for interactive logins
 * in 2009): 32 MiB and about 80 ms per check on a 2-core test machine, on libuv's thread pool,
 * off the event loop. 16-byte salt, 32-byte hash.
 */
export const NEW_HASH_PARAMETERS = { logN: 15, r: 8, p: 1 } as const;
const SALT_BYTES = 16;
const HASH_BYTES = 32;

// Bounds on what a file may ask for: a hash from elsewhere must not make every AUTH cost seconds
// or gigabytes. 128·N·r bytes is scrypt's memory (RFC 7914 §2); 256 MiB at most.
const MAX_SCRYPT_MEMORY = 256 * 1024 * 1024;
const LIMITS = { logN: [10, 20], r: [1, 32], p: [1, 16] } as const;

const base64 = (bytes: Buffer) => bytes.toString('base64').replace(/=+$/, '');

export function formatScryptHash(value: ScryptHash): string {
  return `$scrypt$ln=${value.logN},r=${value.r},p=${value.p}$${base64(value.salt)}$${base64(value.hash)}`;
}

/** The hash in `text`, or why it is not one we accept (the text itself is never repeated). */
export function parseScryptHash(text: string): ScryptHash | string {
  const match = /^\$scrypt\$ln=(\d{1,2}),r=(\d{1,3}),p=(\d{1,3})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$/.exec(text);
  if (!match) return 'not a "$scrypt$ln=…,r=…,p=…$salt$hash" password hash (make one with sello passwd)';
  const [logN, r, p] = [Number(match[1]), Number(match[2]), Number(match[3])];
  for (const [name, value] of [['ln', logN], ['r', r], ['p', p]] as const) {
    const [low, high] = LIMITS[name === 'ln' ? 'logN' : name];
    if (value < low || value > high) return `scrypt parameter ${name}=${value} is outside ${low}–${high}`;
  }
  if (128 * 2 ** logN * r > MAX_SCRYPT_MEMORY) return `scrypt parameters ln=${logN},r=${r} need more than ${MAX_SCRYPT_MEMORY / 1024 / 1024} MiB per check`;
  const salt = Buffer.from(match[4] as string, 'base64');
  const hash = Buffer.from(match[5] as string, 'base64');
  if (salt.length < 8) return 'the scrypt salt is shorter than 8 bytes';
  if (hash.length < 16) return 'the scrypt hash is shorter than 16 bytes';
  return { logN, r, p, salt, hash };
}

function derive(password: string, salt: Buffer, parameters: { logN: number; r: number; p: number }, length: number): Promise<Buffer> {
  const options: ScryptOptions = { N: 2 ** parameters.logN, r: parameters.r, p: parameters.p, maxmem: MAX_SCRYPT_MEMORY + 16 * 1024 * 1024 };
  return new Promise((resolve, reject) => {
    scrypt(password.normalize('NFC'), salt, length, options, (error, key) => (error ? reject(error) : resolve(key)));
  });
}

/** A new hash line value for `password` (sello passwd). */
export async function hashPassword(password: string, parameters: { logN: number; r: number; p: number } = NEW_HASH_PARAMETERS): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  return formatScryptHash({ ...parameters, salt, hash: await derive(password, salt, parameters, HASH_BYTES) });
}

/** Whether `password` matches `expected`, comparing in constant time. */
export async function passwordMatches(password: string, expected: ScryptHash): Promise<boolean> {
  const derived = await derive(password, expected.salt, expected, expected.hash.length);
  return timingSafeEqual(derived, expected.hash);
}

/**
 * SASL user names (RFC 4616 authcid) as they appear in the file: no ":" (the separator), no
 * white space or control characters, at most 255 octets (UTF-8). Compared exactly, case included.
 */
const USER_NAME = /^[^\s:\p{Cc}]{1,255}$/u;

export function isUserName(name: string): boolean {
  return USER_NAME.test(name) && Buffer.byteLength(name) <= 255;
}

export class CredentialStore {
  readonly file: string;
  /** Non-fatal findings (file mode), for the start-up log and check-config. */
  readonly warnings: readonly string[];
  readonly #users: ReadonlyMap<string, ScryptHash>;
  /** Checked for unknown users too, so a reply's timing does not tell which users exist. */
  readonly #decoy: ScryptHash;

  private constructor(file: string, users: ReadonlyMap<string, ScryptHash>, warnings: string[], decoy: ScryptHash) {
    this.file = file;
    this.#users = users;
    this.warnings = warnings;
    this.#decoy = decoy;
  }

  get size(): number {
    return this.#users.size;
  }

  /**
   * Reads `file`; `configPath` names the config key in errors, e.g. "listeners[0].auth.credentials".
   * Every problem is an error naming the line: a file with one bad line is not half used.
   */
  static async load(file: string, configPath: string): Promise<CredentialStore> {
    const fail = (message: string) => new ConfigError(configPath, `${file}: ${message}`);
    let text: string;
    let mode: number;
    try {
      [text, mode] = await Promise.all([readFile(file, 'utf8'), stat(file).then((info) => info.mode & 0o777)]);
    } catch (error) {
      throw fail(`cannot read the credentials file (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
    }
    const users = new Map<string, ScryptHash>();
    for (const [index, rawLine] of text.split('\n').entries()) {
      const line = rawLine.replace(/\r$/, '').trim();
      if (line === '' || line.startsWith('#')) continue;
      const at = `line ${index + 1}`;
      const separator = line.lastIndexOf(':');
      if (separator <= 0) throw fail(`${at}: expected "user:hash"`);
      const user = line.slice(0, separator);
      if (!isUserName(user)) throw fail(`${at}: the user name must be 1–255 bytes, without ":", white space or control characters`);
      if (users.has(user)) throw fail(`${at}: user ${JSON.stringify(user)} is listed twice`);
      const hash = parseScryptHash(line.slice(separator + 1));
      if (typeof hash === 'string') throw fail(`${at}: ${hash}`);
      users.set(user, hash);
    }
    if (users.size === 0) throw fail('no users (one "user:hash" per line; make the hash with sello passwd)');
    const warnings: string[] = [];
    if ((mode & 0o077) !== 0) {
      warnings.push(`${file}: credentials file mode is ${mode.toString(8).padStart(4, '0')}, readable by others than its owner; it should be 0600`);
    }
    const decoySalt = randomBytes(SALT_BYTES);
    const decoy = { ...NEW_HASH_PARAMETERS, salt: decoySalt, hash: await derive(randomBytes(16).toString('hex'), decoySalt, NEW_HASH_PARAMETERS, HASH_BYTES) };
    return new CredentialStore(file, users, warnings, decoy);
  }

  /** Whether `user` exists and `password` is theirs; an unknown user costs the same work. */
  async verify(user: string, password: string): Promise<boolean> {
    const expected = this.#users.get(user);
    const matches = await passwordMatches(password, expected ?? this.#decoy);
    return expected !== undefined && matches;
  }
}

// `node bench/body-hash.ts`: CPU per message of the relaxed body hash (RFC 6376 §3.4.4), sello's
// (src/signing/relaxed-body-hash.ts) against mailauth's, on the benchmark's 100 KiB body and on
// the same body with every line indented (runs of spaces: the byte-by-byte path), in 64 KiB
// chunks as a socket delivers them. In-process, so no other process takes part.
// Owns: nothing but this measurement. Must not: change anything in src/.

import { dkimBody } from 'mailauth/lib/dkim/body/index.js';
import { RelaxedBodyHasher } from '../src/signing/dkim-signature.ts';
import { buildMessage } from './messages.ts';

const message = buildMessage(102400, 'bench.example');
const plain = message.subarray(message.indexOf('\r\n\r\n') + 4);
const indented = Buffer.from(plain.toString('latin1').replace(/\r\n/g, '\r\n    '), 'latin1');
const rounds = 2000;

function chunks(body: Buffer): Buffer[] {
  const pieces: Buffer[] = [];
  for (let at = 0; at < body.length; at += 65536) pieces.push(body.subarray(at, at + 65536));
  return pieces;
}

const hashers = {
  mailauth: (pieces: Buffer[]) => {
    const hasher = dkimBody('relaxed/relaxed', 'sha256', false);
    for (const piece of pieces) hasher.update(piece);
    return hasher.digest('base64');
  },
  sello: (pieces: Buffer[]) => {
    const hasher = new RelaxedBodyHasher({ crlfLineEndings: true });
    for (const piece of pieces) hasher.update(piece);
    return hasher.digest().relaxedSha256;
  },
};

for (const [label, body] of [['100 KiB text', plain], ['100 KiB text, lines indented', indented]] as const) {
  const pieces = chunks(body);
  if (hashers.mailauth(pieces) !== hashers.sello(pieces)) throw new Error(`${label}: the hashes differ`);
  // Interleaved, three times each: the median is printed.
  const results: Record<string, number[]> = { mailauth: [], sello: [] };
  for (let repeat = 0; repeat < 3; repeat++) {
    for (const [name, hash] of Object.entries(hashers)) {
      const before = process.cpuUsage();
      for (let round = 0; round < rounds; round++) hash(pieces);
      const used = process.cpuUsage(before);
      results[name]?.push((used.user + used.system) / 1000 / rounds);
    }
  }
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[1] as number;
  process.stdout.write(`${label}: mailauth ${median(results.mailauth ?? []).toFixed(3)} ms, sello ${median(results.sello ?? []).toFixed(3)} ms CPU per body\n`);
}

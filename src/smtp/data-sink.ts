// Receiving one message from the client's DATA stream. Owns: holding at most
// limits.maxMessageSize of it — once smtp-server's parser has counted more than the limit
// (stream.sizeExceeded), what was held is dropped and the rest is counted by the parser and
// discarded as it arrives, so a 400 MiB message costs no more memory than a 25 MiB one — and
// turning a client that vanished mid-DATA into a quiet end of the transaction.
// Must not: look at the content, or reply (the listener answers 552 5.3.4 from sizeExceeded).

import type { SMTPServerDataStream } from 'smtp-server';
import { Replies, SmtpReplyError } from '../errors.ts';

/** The message as received, or an empty buffer when it exceeded the limit (`stream.sizeExceeded`). */
export async function receiveMessage(stream: SMTPServerDataStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  try {
    for await (const chunk of stream) {
      if (stream.sizeExceeded) {
        chunks.length = 0;
        continue;
      }
      chunks.push(chunk as Buffer);
    }
  } catch (error) {
    // smtp-server destroys the stream with ECONNECTION when the client leaves mid-DATA: the
    // client's doing, not sello's fault (the transaction is recorded as abandoned).
    if ((error as NodeJS.ErrnoException).code === 'ECONNECTION') throw new SmtpReplyError(Replies.connectionLost, 'the client left during DATA');
    throw error;
  }
  return Buffer.concat(chunks);
}

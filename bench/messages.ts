// The messages the benchmark sends: a plain-text message of an exact size in bytes (header
// included), CRLF line endings, lines under 80 characters, from a chosen author domain.
// Owns: the message shape. Must not: vary per message (every message of a run is the same
// bytes, so runs differ only in the setup) or contain lines starting with "." (no dot-stuffing).

const words = (
  'the quick brown fox jumps over a lazy dog while seven wizards quietly hex jumbo ' +
  'fjords and pack my box with five dozen liquor jugs before the mail server relays it'
).split(' ');

export function buildMessage(size: number, fromDomain: string): Buffer {
  const header =
    `From: Alice Example <alice@${fromDomain}>\r\n` +
    'To: Bob Example <bob@example.net>\r\n' +
    `Subject: sello benchmark message of ${size} bytes\r\n` +
    'Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n' +
    `Message-ID: <bench-${size}@${fromDomain}>\r\n` +
    'MIME-Version: 1.0\r\n' +
    'Content-Type: text/plain; charset=us-ascii\r\n' +
    '\r\n';
  if (size < header.length + 2) throw new Error(`a message needs at least ${header.length + 2} bytes, asked for ${size}`);
  const lines: string[] = [];
  let remaining = size - header.length;
  let word = 0;
  while (remaining > 0) {
    // Words up to 60–72 characters, then CRLF; the last line is cut or padded to fit exactly.
    let line = '';
    while (line.length < 60) line += `${line ? ' ' : ''}${words[word++ % words.length]}`;
    if (remaining - (line.length + 2) < 2) {
      const length = remaining - 2;
      line = line.slice(0, length).padEnd(length, 'x').replace(/ +$/, (spaces) => 'x'.repeat(spaces.length));
    }
    lines.push(`${line}\r\n`);
    remaining -= line.length + 2;
  }
  const message = Buffer.from(header + lines.join(''), 'latin1');
  if (message.length !== size) throw new Error(`built ${message.length} bytes, wanted ${size}`);
  return message;
}

// Enhanced status codes (RFC 3463) for the refusals smtp-server writes itself (syntax and sequence
// errors, SIZE at MAIL FROM, its 421s), so every 4xx/5xx reply on the wire carries one, as the
// replies sello composes do. Owns: the mapping from smtp-server's (code, text) to the catalogue
// in errors.ts. Must not: touch 2xx/3xx replies (sello does not advertise ENHANCEDSTATUSCODES,
// and the greeting and EHLO reply never carry one, RFC 2034 §3) or change a reply's basic code.

import { Replies, type SmtpReply } from '../errors.ts';

/** What follows the basic code on the wire: "4.3.2 Too many connections, try again later". */
export function replyText(reply: SmtpReply): string {
  return [reply.enhanced, reply.text].filter(Boolean).join(' ');
}

/** smtp-server's texts that have a catalogue reply of their own (the text is replaced). */
const CATALOGUED: readonly { code: number; text: RegExp; reply: SmtpReply }[] = [
  { code: 421, text: /Too many connected clients/, reply: Replies.tooManyConnections },
  { code: 421, text: /^Timeout/, reply: Replies.clientTimeout },
  { code: 421, text: /Command line too long/, reply: Replies.commandLineTooLong },
  { code: 421, text: /Server shutting down/, reply: Replies.shuttingDown },
  { code: 421, text: /You talk too soon/, reply: Replies.earlyTalker },
  { code: 421, text: /HTTP requests not allowed/, reply: Replies.httpRefused },
  { code: 421, text: /too many unrecognized commands/, reply: Replies.tooManyErrors },
  { code: 552, text: /exceeds fixed maximum message size/, reply: Replies.messageTooLarge },
];

/** RFC 3463 §3 for the rest, by basic code (smtp-server's text is kept). */
const BY_CODE: Readonly<Record<number, string>> = {
  421: '4.3.0',
  450: '4.2.1',
  451: '4.3.0',
  452: '4.5.3',
  454: '4.7.0',
  500: '5.5.2', // X.5.2 syntax error: command unrecognised
  501: '5.5.4', // X.5.4 invalid command arguments
  502: '5.5.1', // X.5.1 invalid command
  503: '5.5.1', // bad sequence of commands
  504: '5.5.4',
  530: '5.7.0',
  535: '5.7.8',
  538: '5.7.11',
  550: '5.7.1', // smtp-server's 550s are "not allowed" (XCLIENT/XFORWARD from an unlisted peer)
  552: '5.3.4',
  553: '5.1.3',
  554: '5.5.0',
};

const HAS_ENHANCED = /^[245]\.\d{1,3}\.\d{1,3}( |$)/;

/** The text to write after `code`: unchanged when it already has an enhanced code or needs none. */
export function withEnhancedCode(code: number, text: string): string {
  if (code < 400 || HAS_ENHANCED.test(text)) return text;
  const catalogued = CATALOGUED.find((entry) => entry.code === code && entry.text.test(text));
  if (catalogued) return replyText(catalogued.reply);
  const enhanced = BY_CODE[code] ?? `${Math.floor(code / 100)}.0.0`;
  return text ? `${enhanced} ${text}` : enhanced;
}

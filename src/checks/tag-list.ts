// The strict reading of an RFC 6376 §3.2 tag-list, the syntax of DKIM-Signature and, by RFC 8617
// §4.1.2 and §4.1.3, of ARC-Message-Signature and ARC-Seal.
// Owns: the grammar (well-formed tag-specs, tag names, duplicate names), nothing more. Problems
// name a tag only once its name is known to be well-formed, so they are safe to put in a header.
// Must not: read what a tag means, or fall back to a lenient reading: a field this rejects is
// reported as malformed by the caller, never repaired.

/** The tags of a well-formed tag-list under their names exactly as written, or why it is not one. */
export type TagListReading = { wellFormed: true; tags: ReadonlyMap<string, string> } | { wellFormed: false; problem: string };

// RFC 6376 §3.2: tag-name = ALPHA *ALNUMPUNC, ALNUMPUNC = ALPHA / DIGIT / "_".
const TAG_NAME = /^[A-Za-z][A-Za-z0-9_]*$/;
// RFC 6376 §3.2: tag-value = [ tval *( 1*(WSP / FWS) tval ) ], tval = 1*VALCHAR,
// VALCHAR = %x21-3A / %x3C-7E (printable US-ASCII except ";"). The edges are trimmed before.
const TAG_VALUE = /^(?:[\x21-\x3a\x3c-\x7e]+(?:[ \t]+[\x21-\x3a\x3c-\x7e]+)*)?$/;
// RFC 5322 §3.2.2 FWS: a fold is CRLF followed by at least one WSP; it reads as the WSP.
const FOLD = /\r\n(?=[ \t])/g;
const EDGE_WHITESPACE = /^[ \t]+|[ \t]+$/g;

/**
 * Reads `value` (a header field's value, after the colon, folds as received) as a tag-list.
 * RFC 6376 §3.2: tag-list = tag-spec *( ";" tag-spec ) [ ";" ], so only the one ";" at the end
 * may have no tag-spec after it; names are case-sensitive ("S=" is not "s="); a name that
 * occurs twice makes the entire tag-list invalid.
 */
export function readTagList(value: string): TagListReading {
  const unfolded = value.replace(FOLD, '');
  if (/[\r\n]/.test(unfolded)) return { wellFormed: false, problem: 'a line break that is not a fold' };
  const specs = unfolded.split(';');
  // RFC 6376 §3.2: the optional trailing ";" leaves one empty piece after it.
  if (specs.length > 1 && (specs.at(-1) as string).replace(EDGE_WHITESPACE, '') === '') specs.pop();
  const tags = new Map<string, string>();
  for (const [index, spec] of specs.entries()) {
    const equals = spec.indexOf('=');
    if (spec.replace(EDGE_WHITESPACE, '') === '') return { wellFormed: false, problem: `empty tag-spec at position ${index + 1}` };
    if (equals === -1) return { wellFormed: false, problem: `tag-spec without "=" at position ${index + 1}` };
    const name = spec.slice(0, equals).replace(EDGE_WHITESPACE, '');
    const tagValue = spec.slice(equals + 1).replace(EDGE_WHITESPACE, '');
    if (!TAG_NAME.test(name)) return { wellFormed: false, problem: `malformed tag name at position ${index + 1}` };
    if (!TAG_VALUE.test(tagValue)) return { wellFormed: false, problem: `malformed value of tag ${name}` };
    if (tags.has(name)) return { wellFormed: false, problem: `duplicate tag ${name}` };
    tags.set(name, tagValue);
  }
  return { wellFormed: true, tags };
}

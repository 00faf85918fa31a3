// Header edits as data: fields to insert at the top, fields to remove by name and index.
// Owns: splitting a block of header lines into fields, finding fields by name and 1-based index
// (the way the milter's change-header action counts them), and applying edits to a message for a
// front end that relays bytes. Must not: decide what is added or removed (pipeline/ does).

/** One header field as received: its name, and its bytes (with the CRLFs of its folded lines). */
export interface HeaderField {
  name: string;
  /** The whole field, ending in CRLF. */
  raw: string;
}

/**
 * The fields of a header section (RFC 5322 §2.2: a field is one line plus the lines that begin
 * with WSP after it). `header` is latin1 text with CRLF line endings, without the empty line.
 */
export function headerFields(header: string): HeaderField[] {
  const text = header.endsWith('\r\n') ? header.slice(0, -2) : header;
  if (text.length === 0) return [];
  const fields: HeaderField[] = [];
  for (const raw of text.split(/\r\n(?![ \t])/)) {
    if (raw.length === 0) continue;
    const colon = raw.indexOf(':');
    fields.push({ name: (colon === -1 ? raw : raw.slice(0, colon)).trim(), raw: `${raw}\r\n` });
  }
  return fields;
}

/** Lines (one or more CRLF-terminated fields, as a signer or formatter writes them) → fields. */
export function splitFieldLines(lines: string): string[] {
  return headerFields(lines).map((field) => field.raw);
}

/** A field to remove: its name and its 1-based index among the fields of that name (case-insensitive). */
export interface FieldReference {
  name: string;
  index: number;
}

/** The fields for which `remove` is true, as references (name, index among the fields of that name). */
export function fieldReferences(fields: readonly HeaderField[], remove: (field: HeaderField) => boolean): FieldReference[] {
  const seen = new Map<string, number>();
  const references: FieldReference[] = [];
  for (const field of fields) {
    const key = field.name.toLowerCase();
    const index = (seen.get(key) ?? 0) + 1;
    seen.set(key, index);
    if (remove(field)) references.push({ name: field.name, index });
  }
  return references;
}

/** `fields` without the referenced ones. */
export function withoutFields(fields: readonly HeaderField[], references: readonly FieldReference[]): HeaderField[] {
  if (references.length === 0) return [...fields];
  const doomed = new Set(references.map((reference) => `${reference.name.toLowerCase()}\u0000${reference.index}`));
  const seen = new Map<string, number>();
  return fields.filter((field) => {
    const key = field.name.toLowerCase();
    const index = (seen.get(key) ?? 0) + 1;
    seen.set(key, index);
    return !doomed.has(`${key}\u0000${index}`);
  });
}

/**
 * The message with the edits applied, as chunks to send in order: the added fields, then the header
 * as received less the removed fields, then the rest. `message` has CRLF line endings and `header`
 * is its header section (a prefix of it). Without removals the message bytes are not copied.
 */
export function applyHeaderEdits(message: Buffer, header: Buffer, edits: { add: readonly string[]; remove: readonly FieldReference[] }): Buffer[] {
  const added = edits.add.length > 0 ? [Buffer.from(edits.add.join(''), 'latin1')] : [];
  if (edits.remove.length === 0) return [...added, message];
  const kept = withoutFields(headerFields(header.toString('latin1')), edits.remove);
  return [...added, Buffer.from(kept.map((field) => field.raw).join(''), 'latin1'), message.subarray(header.length)];
}

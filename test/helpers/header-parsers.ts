// Independent parsers for the header fields sello writes, so tests read them back as other
// software would, not by eye: Received-SPF (RFC 7208 §9.1) and Authentication-Results
// (RFC 8601 §2.2). Values come back decoded (quoted-strings unescaped, comments dropped).
// Must not: import sello code.

class Scanner {
  readonly text: string;
  index = 0;
  constructor(text: string) {
    this.text = text;
  }
  get done(): boolean {
    return this.index >= this.text.length;
  }
  peek(): string {
    return this.text[this.index] ?? '';
  }
  /** Skips white space and (nested) comments; returns the comments' texts. */
  cfws(): string[] {
    const comments: string[] = [];
    for (;;) {
      while (/[ \t]/.test(this.peek())) this.index++;
      if (this.peek() !== '(') return comments;
      let depth = 0;
      let comment = '';
      do {
        const char = this.text[this.index++];
        if (char === undefined) throw new Error(`unterminated comment in ${JSON.stringify(this.text)}`);
        if (char === '\\') comment += this.text[this.index++] ?? '';
        else if (char === '(') depth++ && (comment += char);
        else if (char === ')') --depth && (comment += char);
        else comment += char;
      } while (depth > 0);
      comments.push(comment);
    }
  }
  expect(char: string): void {
    if (this.peek() !== char) throw new Error(`expected ${JSON.stringify(char)} at ${this.index} in ${JSON.stringify(this.text)}`);
    this.index++;
  }
  quotedString(): string {
    this.expect('"');
    let value = '';
    for (;;) {
      const char = this.text[this.index++];
      if (char === undefined) throw new Error(`unterminated quoted-string in ${JSON.stringify(this.text)}`);
      if (char === '"') return value;
      if (char === '\\') value += this.text[this.index++] ?? '';
      else value += char;
    }
  }
  /** A run of characters that are not specials/space (atext plus what the caller allows). */
  run(allowed: RegExp): string {
    const start = this.index;
    while (!this.done && allowed.test(this.peek())) this.index++;
    return this.text.slice(start, this.index);
  }
}

function unfold(field: string, name: string): string {
  const match = new RegExp(`^${name}[ \\t]*:`, 'i').exec(field);
  if (!match) throw new Error(`not a ${name} field: ${JSON.stringify(field.slice(0, 40))}`);
  const value = field.slice(match[0].length).replace(/\r\n$/, '');
  // Every line break must be CRLF followed by white space (a fold); no bare CR or LF.
  if (/\r\n(?![ \t])/.test(value) || /(?<!\r)\n/.test(value) || /\r(?!\n)/.test(value)) throw new Error(`bad folding in ${JSON.stringify(field)}`);
  return value.replace(/\r\n(?=[ \t])/g, '');
}

// RFC 5322 atext plus "." (dot-atom), and the token characters of RFC 2045.
const ATEXT = /[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]/;
const TOKEN = /[^\x00-\x20()<>@,;:\\"/[\]?=\x7f]/;

export interface ReceivedSpf {
  result: string;
  comment: string;
  pairs: Record<string, string>;
}

/** RFC 7208 §9.1: result FWS [comment FWS] [key-value-list]. */
export function parseReceivedSpf(field: string): ReceivedSpf {
  const scanner = new Scanner(unfold(field, 'Received-SPF'));
  scanner.cfws();
  const result = scanner.run(/[A-Za-z]/).toLowerCase();
  if (!['pass', 'fail', 'softfail', 'neutral', 'none', 'temperror', 'permerror'].includes(result)) throw new Error(`bad result ${result}`);
  const comment = scanner.cfws().join(' ');
  const pairs: Record<string, string> = {};
  while (!scanner.done) {
    const key = scanner.run(/[A-Za-z0-9_.-]/);
    if (!key) throw new Error(`expected a key at ${scanner.index} in ${JSON.stringify(scanner.text)}`);
    scanner.cfws();
    scanner.expect('=');
    scanner.cfws();
    const value = scanner.peek() === '"' ? scanner.quotedString() : scanner.run(ATEXT);
    if (key in pairs) throw new Error(`duplicate key ${key}`);
    pairs[key] = value;
    scanner.cfws();
    if (scanner.done) break;
    scanner.expect(';');
    scanner.cfws();
  }
  return { result, comment, pairs };
}

export interface Resinfo {
  method: string;
  result: string;
  properties: Record<string, string>;
}

export interface AuthenticationResults {
  authservId: string;
  resinfos: Resinfo[];
}

/** value / [ [ local-part ] "@" ] domain-name; a quoted local part comes back in quoted form. */
function pvalue(scanner: Scanner): string {
  if (scanner.peek() === '"') {
    const quoted = scanner.quotedString();
    if (scanner.peek() !== '@') return quoted;
    return `"${quoted.replace(/(["\\])/g, '\\$1')}"${scanner.run(/[^\s;()"\\]/)}`;
  }
  return scanner.run(/[^\s;()"\\]/);
}

/** RFC 8601 §2.2: authserv-id [version] ( "; none" / 1*resinfo ). */
export function parseAuthenticationResults(field: string): AuthenticationResults {
  const scanner = new Scanner(unfold(field, 'Authentication-Results'));
  scanner.cfws();
  const authservId = scanner.peek() === '"' ? scanner.quotedString() : scanner.run(TOKEN);
  scanner.cfws();
  if (/\d/.test(scanner.peek())) {
    scanner.run(/\d/);
    scanner.cfws();
  }
  const resinfos: Resinfo[] = [];
  while (!scanner.done) {
    scanner.expect(';');
    scanner.cfws();
    const method = scanner.run(/[A-Za-z0-9_-]/).toLowerCase();
    if (method === 'none' && resinfos.length === 0) {
      scanner.cfws();
      continue;
    }
    if (scanner.peek() === '/') {
      scanner.index++;
      scanner.run(/\d/);
    }
    scanner.cfws();
    scanner.expect('=');
    scanner.cfws();
    const result = scanner.run(/[A-Za-z0-9_-]/).toLowerCase();
    if (!result) throw new Error(`no result for ${method} in ${JSON.stringify(scanner.text)}`);
    const properties: Record<string, string> = {};
    scanner.cfws();
    while (!scanner.done && scanner.peek() !== ';') {
      const ptype = scanner.run(/[A-Za-z0-9_-]/).toLowerCase();
      scanner.cfws();
      if (ptype === 'reason') {
        scanner.expect('=');
        scanner.cfws();
        properties.reason = pvalue(scanner);
        scanner.cfws();
        continue;
      }
      scanner.expect('.');
      const property = scanner.run(/[A-Za-z0-9_-]/).toLowerCase();
      scanner.cfws();
      scanner.expect('=');
      scanner.cfws();
      properties[`${ptype}.${property}`] = pvalue(scanner);
      scanner.cfws();
    }
    resinfos.push({ method, result, properties });
  }
  return { authservId, resinfos };
}

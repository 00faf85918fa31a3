// Tests for src/pipeline/received-spf.ts: exact bytes for ordinary outcomes, and hostile HELO /
// MAIL FROM values that must still give a field that parses back (with an independent parser of
// the RFC 7208 §9.1 grammar below) to the sanitised inputs, on lines of at most 998 octets.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { SpfOutcome } from '../../../src/checks/types.ts';
import { formatReceivedSpf } from '../../../src/pipeline/received-spf.ts';

// ---- an independent parser for RFC 7208 §9.1 (with RFC 5322 §3.2 lexical tokens) ----

interface ParsedReceivedSpf {
  result: string;
  /** The comment with quoted-pairs resolved and nested comments kept as text; undefined if none. */
  comment: string | undefined;
  pairs: [string, string][];
}

const ATEXT = /[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]/;

/** Parses one whole field as it would appear in a message: "Received-SPF:" … CRLF. Throws on any
 *  deviation from the grammar. */
function parseReceivedSpf(field: string): ParsedReceivedSpf {
  assert.ok(field.endsWith('\r\n'), 'the field ends with CRLF');
  const lines = field.slice(0, -2).split('\r\n');
  for (const [index, line] of lines.entries()) {
    assert.ok(!/[\r\n]/.test(line), `line ${index} has a bare CR or LF`);
    assert.ok(Buffer.byteLength(line) <= 998, `line ${index} is ${Buffer.byteLength(line)} octets`);
    assert.ok(/^[\x20-\x7e\t]*$/.test(line), `line ${index} is printable US-ASCII`);
    if (index > 0) assert.ok(/^[ \t]/.test(line), `continuation line ${index} starts with white space`);
  }
  // RFC 5322 §2.2.3: unfolding removes each CRLF that is followed by WSP.
  const text = lines.join('');
  let at = 0;
  const peek = (): string => text.charAt(at);
  const fail = (what: string): never => {
    throw new Error(`${what} at ${at}: ${JSON.stringify(text.slice(at, at + 30))}`);
  };
  const skipWhiteSpace = (): number => {
    const start = at;
    while (peek() === ' ' || peek() === '\t') at++;
    return at - start;
  };
  const readComment = (): string => {
    // comment = "(" *([FWS] ccontent) [FWS] ")"; ccontent = ctext / quoted-pair / comment
    if (peek() !== '(') fail('expected "("');
    at++;
    let out = '';
    for (;;) {
      const character = peek();
      if (character === '') fail('unterminated comment');
      if (character === ')') {
        at++;
        return out;
      }
      if (character === '(') out += `(${readComment()})`;
      else if (character === '\\') {
        const next = text.charAt(at + 1);
        if (!/[\x21-\x7e \t]/.test(next)) fail('bad quoted-pair');
        out += next;
        at += 2;
      } else {
        out += character;
        at++;
      }
    }
  };
  const skipCfws = (): void => {
    for (;;) {
      skipWhiteSpace();
      if (peek() === '(') readComment();
      else return;
    }
  };
  const readQuotedString = (): string => {
    // quoted-string = DQUOTE *([FWS] qcontent) [FWS] DQUOTE; qtext = %d33 / %d35-91 / %d93-126
    at++;
    let out = '';
    for (;;) {
      const character = peek();
      if (character === '') fail('unterminated quoted-string');
      if (character === '"') {
        at++;
        return out;
      }
      if (character === '\\') {
        const next = text.charAt(at + 1);
        if (!/[\x21-\x7e \t]/.test(next)) fail('bad quoted-pair');
        out += next;
        at += 2;
      } else if (/[\x21\x23-\x5b\x5d-\x7e \t]/.test(character)) {
        out += character;
        at++;
      } else fail('bad qtext');
    }
  };
  const readDotAtomText = (): string => {
    const start = at;
    for (;;) {
      const atomStart = at;
      while (ATEXT.test(peek())) at++;
      if (at === atomStart) fail('empty atom');
      if (peek() !== '.') break;
      at++;
    }
    return text.slice(start, at);
  };

  if (!text.startsWith('Received-SPF:')) fail('field name');
  at = 'Received-SPF:'.length;
  skipCfws();
  const resultMatch = /^(pass|fail|softfail|neutral|none|temperror|permerror)/.exec(text.slice(at));
  if (!resultMatch) fail('result');
  const result = resultMatch![1]!;
  at += result.length;
  let comment: string | undefined;
  if (at < text.length) {
    if (skipWhiteSpace() === 0) fail('FWS after result');
    if (peek() === '(') {
      comment = readComment();
      if (at < text.length && skipWhiteSpace() === 0) fail('FWS after comment');
    }
  }
  const pairs: [string, string][] = [];
  while (at < text.length) {
    // key-value-pair = key [CFWS] "=" ( dot-atom / quoted-string ); key = name (RFC 7208 §4.6.1)
    const keyMatch = /^[A-Za-z][A-Za-z0-9\-_.]*/.exec(text.slice(at));
    if (!keyMatch) fail('key');
    const key = keyMatch![0];
    at += key.length;
    skipCfws();
    if (peek() !== '=') fail('"="');
    at++;
    skipCfws();
    const value = peek() === '"' ? readQuotedString() : readDotAtomText();
    skipCfws();
    pairs.push([key, value]);
    if (peek() === ';') {
      at++;
      skipCfws();
    } else if (at < text.length) fail('";" between pairs');
  }
  return { result, comment, pairs };
}

// ---- the tests ----

function outcome(overrides: Partial<SpfOutcome> = {}): SpfOutcome {
  return {
    identity: 'mailfrom',
    result: 'pass',
    domain: 'example.com',
    sender: 'alice@example.com',
    mailFrom: 'alice@example.com',
    clientIp: '192.0.2.1',
    helo: 'mail.example.com',
    comment: 'mx.example.org: domain of alice@example.com designates 192.0.2.1 as permitted sender',
    durationMs: 3,
    ...overrides,
  };
}

/** What the formatter must turn a client value into: printable US-ASCII, the rest "?". */
const sanitised = (value: string, max = 400): string => Array.from(value, (c) => (c >= ' ' && c <= '~' ? c : '?')).slice(0, max).join('');

describe('Received-SPF exact bytes', () => {
  test('a pass, folded at 78 characters, values that are dot-atoms stay bare, others are quoted', () => {
    assert.equal(
      formatReceivedSpf(outcome(), 'mx.example.org'),
      'Received-SPF: pass (mx.example.org: domain of alice@example.com designates\r\n' +
        ' 192.0.2.1 as permitted sender) client-ip=192.0.2.1;\r\n' +
        ' envelope-from="alice@example.com"; helo=mail.example.com;\r\n' +
        ' receiver=mx.example.org; identity=mailfrom;\r\n',
    );
  });

  test('IPv6 client, HELO identity, null sender', () => {
    assert.equal(
      formatReceivedSpf(
        outcome({ identity: 'helo', result: 'none', clientIp: '2001:db8::1', mailFrom: '', sender: 'postmaster@[2001:db8::1]', helo: '[2001:db8::1]', comment: 'mx: HELO is not checkable' }),
        'mx.example.org',
      ),
      'Received-SPF: none (mx: HELO is not checkable) client-ip="2001:db8::1";\r\n' +
        ' envelope-from=""; helo="[2001:db8::1]"; receiver=mx.example.org;\r\n' +
        ' identity=helo;\r\n',
    );
  });

  test('no comment: the key=value list follows the result', () => {
    assert.equal(
      formatReceivedSpf(outcome({ result: 'temperror', comment: '' }), 'r'),
      'Received-SPF: temperror client-ip=192.0.2.1;\r\n' +
        ' envelope-from="alice@example.com"; helo=mail.example.com; receiver=r;\r\n' +
        ' identity=mailfrom;\r\n',
    );
  });
});

describe('Received-SPF with hostile client values parses back to the sanitised values', () => {
  const long = `${'a'.repeat(63)}.`.repeat(4) + 'example';
  const hostile: [string, string][] = [
    ['quotes', '"evil"@example.com'],
    ['quote and backslash', 'a\\"b@example.com'],
    ['semicolon', 'x@example.com; receiver=attacker.example; identity=helo'],
    ['parentheses', 'x)(y@example.com) pass (z'],
    ['unbalanced open parenthesis', '((((x@example.com'],
    ['backslashes', '\\\\\\'],
    ['trailing backslash', 'x@example.com\\'],
    ['CR LF injection', 'x@example.com\r\nX-Injected: yes\r\n'],
    ['bare LF', 'x@example.com\nX-Injected: yes'],
    ['NUL', 'x\0@example.com'],
    ['8-bit bytes', 'j\u00f6rg@b\u00fccher.example'],
    ['invalid UTF-8 decoded', '\ufffd\ufffd@example.com'],
    ['emoji', '\u{1f4e7}@example.com'],
    ['tab', 'x\t@example.com'],
    ['equals signs', 'a=b=c@example.com'],
    ['spaces', '  spaced  out  '],
    ['empty', ''],
    ['255-character name', long],
    ['1000-character name', 'b'.repeat(1000)],
    ['1000 quotes', '"'.repeat(1000)],
    ['DEL and controls', '\x7f\x01\x1b[31m'],
  ];

  for (const [name, value] of hostile) {
    test(name, () => {
      for (const identity of ['mailfrom', 'helo'] as const) {
        const field = formatReceivedSpf(
          outcome({
            identity,
            result: 'fail',
            mailFrom: value,
            sender: value === '' ? `postmaster@${value}` : value,
            helo: value,
            clientIp: value,
            comment: `mx.example.org: domain of ${value} does not designate ${value} as permitted sender (really)`,
          }),
          value,
        );
        const parsed = parseReceivedSpf(field);
        assert.equal(parsed.result, 'fail');
        assert.deepEqual(
          parsed.pairs,
          [
            ['client-ip', sanitised(value)],
            ['envelope-from', sanitised(value)],
            ['helo', sanitised(value)],
            ['receiver', sanitised(value)],
            ['identity', identity],
          ],
          field,
        );
        // The comment keeps the words (white space collapsed, over-long words cut and marked).
        const words = sanitised(value, Infinity)
          .split(' ')
          .filter(Boolean)
          .map((word) => (word.length > 400 ? `${word.slice(0, 400)}...` : word));
        const expectedComment = ['mx.example.org:', 'domain', 'of', ...words, 'does', 'not', 'designate', ...words, 'as', 'permitted', 'sender', '(really)'].join(' ');
        assert.equal(parsed.comment, expectedComment);
        // No second header field: every line after the first is a continuation.
        assert.equal(field.match(/\r\n(?![ \t])/g)?.length, 1);
        for (const line of field.slice(0, -2).split('\r\n')) {
          if (!line.includes('"') && line.length > 78) {
            // only a single unbreakable word may make a line longer than 78
            assert.ok(!line.trim().includes(' '), `a line over 78 characters could have been folded: ${line}`);
          }
        }
      }
    });
  }
});

describe('the test parser itself', () => {
  test('rejects what the grammar does not allow', () => {
    const bad = [
      'Received-SPF: pass\r\nX: y\r\n',
      'Received-SPF: pass (unclosed client-ip=1;\r\n',
      'Received-SPF: pass client-ip=a b;\r\n',
      'Received-SPF: pass client-ip="a"b";\r\n',
      'Received-SPF: pass client-ip=a; helo=;\r\n',
      'Received-SPF: pass client-ip=a helo=b\r\n',
      'Received-SPF: maybe\r\n',
      `Received-SPF: pass (${'x'.repeat(1000)})\r\n`,
      'Received-SPF: pass (\u00e9)\r\n',
    ];
    for (const field of bad) assert.throws(() => parseReceivedSpf(field), Error, JSON.stringify(field));
  });

  test('accepts folding inside comments and around "=", nested comments and quoted-pairs', () => {
    assert.deepEqual(parseReceivedSpf('Received-SPF: pass (a (b) \\) c)\r\n client-ip = (x) "1\\"2" ;helo=h.example\r\n'), {
      result: 'pass',
      comment: 'a (b) ) c',
      pairs: [
        ['client-ip', '1"2'],
        ['helo', 'h.example'],
      ],
    });
  });
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SigningTable } from '../../../src/signing/table.ts';

test('exact entries win over wildcards; *.parent covers subdomains (not the parent) and signs d=parent', () => {
  const table = new SigningTable({ 'example.com': ['a', 'b'], '*.example.com': 'w', 'deep.sub.example.com': 'd' });
  assert.deepEqual(table.lookup('Example.COM.'), { signingDomain: 'example.com', selectors: ['a', 'b'], pattern: 'example.com' });
  assert.deepEqual(table.lookup('mail.example.com'), { signingDomain: 'example.com', selectors: ['w'], pattern: '*.example.com' });
  assert.deepEqual(table.lookup('x.y.example.com')?.pattern, '*.example.com');
  assert.equal(table.lookup('deep.sub.example.com')?.selectors[0], 'd');
  assert.equal(table.lookup('example.org'), undefined);
  assert.equal(table.lookup('badexample.com'), undefined);
  assert.deepEqual([...table.keys()], [
    { domain: 'example.com', selector: 'a' },
    { domain: 'example.com', selector: 'b' },
    { domain: 'deep.sub.example.com', selector: 'd' },
    { domain: 'example.com', selector: 'w' },
  ]);
});

test('the closest wildcard wins', () => {
  const table = new SigningTable({ '*.example.com': 'outer', '*.sub.example.com': 'inner' });
  assert.equal(table.lookup('a.sub.example.com')?.selectors[0], 'inner');
  assert.equal(table.lookup('sub.example.com')?.selectors[0], 'outer');
});

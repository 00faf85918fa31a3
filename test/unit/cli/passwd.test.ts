// sello passwd: the printed line goes into a credentials file that CredentialStore then accepts
// with that password and no other. The terminal prompt is driven through a stand-in TTY stream
// (the seam: node:tty cannot be opened without a terminal), checking raw mode and no echo.

import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { test, type TestContext } from 'node:test';
import { CredentialStore } from '../../../src/auth/credentials.ts';
import { main } from '../../../src/cli/run.ts';
import { runCommand } from '../../helpers/cli.ts';
import { tempDir } from '../../helpers/tools.ts';

async function storeFrom(t: TestContext, line: string): Promise<CredentialStore> {
  const file = path.join(await tempDir(t, 'sello-passwd-'), 'credentials');
  await writeFile(file, line, { mode: 0o600 });
  return CredentialStore.load(file, 'listeners[0].auth.credentials');
}

test('a password on stdin → "user:$scrypt$…" that the credentials file accepts for that password only', async (t) => {
  const run = await runCommand(main, ['passwd', 'alice@example.com'], { stdin: Readable.from([Buffer.from('correct horse\r\nignored second line\n')]) });
  assert.equal(run.code, 0, run.err);
  assert.match(run.out, /^alice@example\.com:\$scrypt\$ln=15,r=8,p=1\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+\n$/);
  assert.equal(run.err, '');
  const store = await storeFrom(t, run.out);
  assert.equal(await store.verify('alice@example.com', 'correct horse'), true);
  assert.equal(await store.verify('alice@example.com', 'correct horse\r'), false);
  assert.equal(await store.verify('alice@example.com', 'ignored second line'), false);
});

test('a password without a final newline is taken whole; an empty one prints nothing', async (t) => {
  const run = await runCommand(main, ['passwd', 'bob'], { stdin: Readable.from([Buffer.from('bat'), Buffer.from('tery')]) });
  assert.equal(run.code, 0, run.err);
  assert.equal(await (await storeFrom(t, run.out)).verify('bob', 'battery'), true);
  for (const input of ['', '\n']) {
    const empty = await runCommand(main, ['passwd', 'bob'], { stdin: Readable.from([Buffer.from(input)]) });
    assert.deepEqual(empty, { code: 1, out: '', err: 'sello passwd: empty password; nothing printed\n' });
  }
});

test('bad usage: no user, two users, a user name the file could not hold', async () => {
  const cases: [string[], string][] = [
    [['passwd'], 'sello passwd: expected exactly one user name (see sello passwd --help)\n'],
    [['passwd', 'a', 'b'], 'sello passwd: expected exactly one user name (see sello passwd --help)\n'],
    [['passwd', 'al:ice'], 'sello passwd: the user name must be 1–255 bytes, without ":", white space or control characters\n'],
    [['passwd', 'al ice'], 'sello passwd: the user name must be 1–255 bytes, without ":", white space or control characters\n'],
    [['passwd', 'é'.repeat(128)], 'sello passwd: the user name must be 1–255 bytes, without ":", white space or control characters\n'],
  ];
  for (const [args, err] of cases) assert.deepEqual(await runCommand(main, args, { stdin: Readable.from([Buffer.from('pw\n')]) }), { code: 2, out: '', err });
});

/** A stand-in for a terminal's stdin: isTTY, and raw mode recorded. */
function fakeTerminal(): PassThrough & { isTTY: true; rawModes: boolean[]; setRawMode(mode: boolean): void } {
  const stream = new PassThrough() as PassThrough & { isTTY: true; rawModes: boolean[]; setRawMode(mode: boolean): void };
  stream.isTTY = true;
  stream.rawModes = [];
  stream.setRawMode = (mode: boolean) => void stream.rawModes.push(mode);
  return stream;
}

test('on a terminal: asked twice in raw mode, never echoed, backspace honoured; different answers print nothing', async (t) => {
  const terminal = fakeTerminal();
  const running = runCommand(main, ['passwd', 'carol'], { stdin: terminal });
  setImmediate(() => {
    terminal.write('s3cretX\u007f\r');
    setImmediate(() => terminal.write('s3cret\r'));
  });
  const run = await running;
  assert.equal(run.code, 0, run.err);
  assert.equal(run.err, 'Password: \nAgain: \n');
  assert.deepEqual(terminal.rawModes, [true, false, true, false]);
  assert.equal(await (await storeFrom(t, run.out)).verify('carol', 's3cret'), true);

  const mismatch = fakeTerminal();
  const differing = runCommand(main, ['passwd', 'carol'], { stdin: mismatch });
  setImmediate(() => {
    mismatch.write('one\r');
    setImmediate(() => mismatch.write('two\r'));
  });
  assert.deepEqual(await differing, { code: 1, out: '', err: 'Password: \nAgain: \nsello passwd: the passwords differ; nothing printed\n' });
});

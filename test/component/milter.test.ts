// The milter listener inside the whole server (startSello): the listen forms of the config, a
// unix socket (mode, stale file), a reload that re-binds the same path and changes what new
// connections get, the engine's decision record for a milter transaction, and shutdown.
// Real sockets on loopback or in a temp dir; no MTA (the interop tests bring Postfix, Sendmail
// and miltertest).

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { describe, test } from 'node:test';
import { parseConfig } from '../../src/config/load.ts';
import { captureLog } from '../helpers/log.ts';
import { mta, MilterTestClient } from '../helpers/milter-client.ts';
import { startTestSello } from '../helpers/sello.ts';
import { tempDir } from '../helpers/tools.ts';

const listener = (listen: string) => parseConfig({ listeners: [{ name: 'm', role: 'milter', listen }] }).listeners[0]!.listen;

describe('milter listener in the server', () => {
  test('listen forms: inet:host:port, inet:port@host (OpenDKIM), unix:/path, local:/path, host:port', () => {
    assert.deepEqual(listener('inet:127.0.0.1:8891'), { host: '127.0.0.1', port: 8891 });
    assert.deepEqual(listener('inet:8891@127.0.0.1'), { host: '127.0.0.1', port: 8891 });
    assert.deepEqual(listener('inet:8891@[::1]'), { host: '::1', port: 8891 });
    assert.deepEqual(listener('unix:/run/sello/milter.sock'), { host: '', port: 0, path: '/run/sello/milter.sock' });
    assert.deepEqual(listener('local:/run/sello/milter.sock'), { host: '', port: 0, path: '/run/sello/milter.sock' });
    assert.deepEqual(listener('127.0.0.1:8891'), { host: '127.0.0.1', port: 8891 });
  });

  test('a unix socket: a stale file is replaced, mode 0660; a signed message gets a decision record; a reload re-binds the same path; shutdown closes it', async (t) => {
    const dir = await tempDir({ after: t.after.bind(t) });
    const socketPath = path.join(dir, 'milter.sock');
    // A socket file nobody listens on, as a crashed run leaves it.
    const stale = net.createServer().listen(socketPath);
    await new Promise((resolve) => stale.once('listening', resolve));
    await new Promise((resolve) => stale.close(resolve));
    await writeFile(path.join(dir, 'unrelated'), '');
    const log = captureLog('info');
    const sello = await startTestSello(t, {
      keys: [{ domain: 'example.org', selector: 'comp', algorithm: 'ed25519' }],
      config: { listeners: [{ name: 'milter', role: 'milter', listen: `unix:${socketPath}`, verify: false }], dns: { servers: ['127.0.0.1:9'], timeout: '1s' } },
      logger: log.logger,
    });
    assert.equal((await stat(socketPath)).mode & 0o777, 0o660);

    const client = await MilterTestClient.connect(socketPath);
    await client.exchange(mta.negotiate());
    client.send(mta.connect('client.example', '198.51.100.3', 2525), mta.macros('M', { '{auth_authen}': 'alice', i: 'Q1' }));
    assert.deepEqual((await client.read(1)).map((response) => response.letter), ['c']); // connect answered
    assert.equal((await client.exchange(mta.mail('<alice@example.org>')))[0]!.letter, 'c');
    assert.equal((await client.exchange(mta.rcpt('<bob@example.net>')))[0]!.letter, 'c');
    client.send(mta.header('From', ' alice@example.org'), mta.header('Subject', ' hi'), mta.endOfHeaders(), mta.body('Hello\r\n'));
    const end = await client.exchange(mta.endOfMessage(), 2);
    assert.deepEqual(end.map((response) => response.letter), ['i', 'c']);
    assert.match(end[0]!.data.subarray(4).toString('latin1'), /^DKIM-Signature\0 v=1; a=ed25519-sha256;.* d=example\.org;/s);
    const record = log.records().find((entry) => entry['listener'] === 'milter' && entry['outcome'] !== undefined);
    assert.ok(record, `a decision record in ${log.text()}`);
    assert.equal(record['user'], 'alice');
    assert.deepEqual(record['relay'], { code: 250, queueId: 'Q1' });

    // verify: false → true: a new listener takes the same path; a connection opened after the reload checks
    // an unauthenticated client instead of accepting it untouched at MAIL.
    const before = await MilterTestClient.connect(socketPath);
    await before.exchange(mta.negotiate());
    before.send(mta.connect('stranger.example', '203.0.113.9', 1234));
    assert.deepEqual((await before.read(1)).map((response) => response.letter), ['c']); // connect answered
    assert.equal((await before.exchange(mta.mail('<x@stranger.example>')))[0]!.letter, 'a');
    const reloaded = await sello.running.reload(async () =>
      parseConfig({
        hostname: 'sello.test',
        listeners: [{ name: 'milter', role: 'milter', listen: `unix:${socketPath}`, verify: true }],
        signing: { keysDir: sello.keysDir, domains: { 'example.org': 'comp' } },
        dns: { servers: ['127.0.0.1:9'], timeout: '1s' },
      }),
    );
    assert.equal(reloaded, true, log.text());
    const after = await MilterTestClient.connect(socketPath);
    await after.exchange(mta.negotiate());
    after.send(mta.connect('stranger.example', '203.0.113.9', 1234));
    assert.deepEqual((await after.read(1)).map((response) => response.letter), ['c']); // connect answered
    assert.equal((await after.exchange(mta.mail('<x@stranger.example>')))[0]!.letter, 'c');

    await sello.running.close();
    await Promise.all([client.waitClosed(), before.waitClosed(), after.waitClosed()]);
    await assert.rejects(MilterTestClient.connect(socketPath));
  });

  test('a message past data.spillThreshold streams into a spill file as the MTA sends it, is signed over exactly its body, and leaves no file', async (t) => {
    const spillDirectory = await tempDir({ after: t.after.bind(t) });
    const dir = await tempDir({ after: t.after.bind(t) });
    const socketPath = path.join(dir, 'milter.sock');
    const sello = await startTestSello(t, {
      keys: [{ domain: 'example.org', selector: 'comp', algorithm: 'ed25519' }],
      config: {
        listeners: [{ name: 'milter', role: 'milter', listen: `unix:${socketPath}`, verify: false }],
        data: { spillThreshold: '1KiB', spillDirectory },
        dns: { servers: ['127.0.0.1:9'], timeout: '1s' },
      },
    });
    void sello;
    const client = await MilterTestClient.connect(socketPath);
    t.after(() => client.close());
    await client.exchange(mta.negotiate());
    client.send(mta.connect('client.example', '198.51.100.3', 2525), mta.macros('M', { '{auth_authen}': 'alice' }));
    assert.deepEqual((await client.read(1)).map((response) => response.letter), ['c']);
    assert.equal((await client.exchange(mta.mail('<alice@example.org>')))[0]!.letter, 'c');
    assert.equal((await client.exchange(mta.rcpt('<bob@example.net>')))[0]!.letter, 'c');
    // 64 KiB of plain lines: the relaxed body hash (RFC 6376 §3.4.4) is then SHA-256 of the bytes.
    const body = Buffer.from(`${'x'.repeat(62)}\r\n`.repeat(1024));
    client.send(mta.header('From', ' alice@example.org'), mta.header('Subject', ' big'), mta.endOfHeaders());
    for (let offset = 0; offset < body.length; offset += 8192) client.send(mta.body(body.subarray(offset, offset + 8192).toString('latin1')));
    const spilled = async () => (await readdir(spillDirectory)).some((name) => name.startsWith('spill-'));
    const deadline = Date.now() + 5000;
    while (!(await spilled()) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.ok(await spilled(), 'the body went to a spill file before the end of the message');
    const end = await client.exchange(mta.endOfMessage(), 2);
    assert.deepEqual(end.map((response) => response.letter), ['i', 'c']);
    const signature = end[0]!.data.subarray(4).toString('latin1');
    assert.equal(/bh=([^;]+);/.exec(signature.replace(/\s+/g, ''))?.[1], createHash('sha256').update(body).digest('base64'));
    assert.deepEqual((await readdir(spillDirectory)).filter((name) => name.startsWith('spill-')), [], 'the spill file is gone');
  });
});

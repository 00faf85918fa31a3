// SmtpClient against a scripted raw peer: exact bytes after DATA, failures, timeouts, LMTP.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RelayError, SmtpReplyError } from '../../../src/errors.ts';
import { SmtpClient } from '../../../src/relay/smtp-client.ts';
import { clientOptions, greetAndHello, startFakeMta, unusedPort, type ScriptedPeer } from './fake-mta.ts';

const mailFromTo = async (client: SmtpClient, ...recipients: string[]) => {
  assert.equal((await client.mailFrom('sender@example.com', {})).code, 250);
  for (const recipient of recipients) await client.rcptTo(recipient, {});
};

/** Answers MAIL and RCPT with 250, DATA with 354, captures the data and answers `finalReply`. */
async function acceptOneMessage(peer: ScriptedPeer, finalReply: string): Promise<Buffer | undefined> {
  for (;;) {
    const line = await peer.readLine();
    if (line === undefined) return undefined;
    if (line.startsWith('QUIT')) {
      peer.send('221 bye\r\n');
      peer.close();
      return undefined;
    }
    if (line === 'DATA') {
      peer.send('354 go ahead\r\n');
      const data = await peer.readData();
      peer.send(finalReply);
      return data;
    }
    peer.send('250 2.1.0 OK\r\n');
  }
}

function expectRelayError(kind: RelayError['kind'], messagePart?: string) {
  return (error: unknown) => {
    assert.ok(error instanceof RelayError, `expected RelayError, got ${String(error)}`);
    assert.equal(error.kind, kind, error.message);
    if (messagePart) assert.match(error.message, new RegExp(messagePart));
    return true;
  };
}

test('DATA: exact bytes on the wire, dot-stuffed across chunk boundaries, ended by CRLF.CRLF', async () => {
  let data: Buffer | undefined;
  const mta = await startFakeMta(async (peer) => {
    await greetAndHello(peer, ['8BITMIME']);
    data = await acceptOneMessage(peer, '250 2.0.0 Ok: queued as 4Xb2Kq1z0Mz9\r\n');
    await acceptOneMessage(peer, '');
  });
  try {
    const client = await SmtpClient.open(clientOptions(mta.port));
    await mailFromTo(client, 'rcpt@example.com');
    const chunks = ['Subject: dots\r\n\r\n.line one\r\n', '.starts a chunk\r', '\n.after split CRLF\r\nend\r\n.', '\r\n'].map((part) =>
      Buffer.from(part),
    );
    const answer = await client.data(chunks);
    assert.deepEqual(answer, { code: 250, enhanced: '2.0.0', text: 'Ok: queued as 4Xb2Kq1z0Mz9', queueId: '4Xb2Kq1z0Mz9' });
    assert.equal(
      data?.toString(),
      'Subject: dots\r\n\r\n..line one\r\n..starts a chunk\r\n..after split CRLF\r\nend\r\n..\r\n.\r\n',
    );
    await client.close();
    await mta.scriptsDone();
  } finally {
    await mta.close();
  }
});

test('DATA: a message without final CRLF gets one before the dot', async () => {
  let data: Buffer | undefined;
  const mta = await startFakeMta(async (peer) => {
    await greetAndHello(peer);
    data = await acceptOneMessage(peer, '250 OK id=1tXyz-000abc-Q1\r\n');
    await acceptOneMessage(peer, '');
  });
  try {
    const client = await SmtpClient.open(clientOptions(mta.port));
    await mailFromTo(client, 'rcpt@example.com');
    const answer = await client.data([Buffer.from('Subject: x\r\n\r\nno final line end')]);
    assert.equal(answer.queueId, '1tXyz-000abc-Q1');
    assert.equal(data?.toString(), 'Subject: x\r\n\r\nno final line end\r\n.\r\n');
    await client.close();
  } finally {
    await mta.close();
  }
});

test('DATA: bare LF or bare CR is refused before anything is sent (SMTP smuggling guard)', async () => {
  const mta = await startFakeMta(async (peer) => {
    await greetAndHello(peer);
    await acceptOneMessage(peer, '250 OK\r\n');
  });
  try {
    const client = await SmtpClient.open(clientOptions(mta.port));
    await mailFromTo(client, 'rcpt@example.com');
    for (const smuggling of ['a\r\n\n.\nMAIL FROM:<evil@x>\r\n', 'a\r\n\r.\rb\r\n', 'a\r\n.\n']) {
      await assert.rejects(client.data([Buffer.from(smuggling)]), (error: unknown) => {
        assert.ok(error instanceof SmtpReplyError);
        assert.equal(error.reply.code, 550);
        assert.equal(error.reply.enhanced, '5.6.0');
        return true;
      });
    }
    assert.equal(client.closed, false, 'the session stays usable');
    await client.reset();
    await client.close();
    await mta.scriptsDone();
    const wire = mta.peers[0]?.received.toString() ?? '';
    assert.doesNotMatch(wire, /DATA/);
    assert.doesNotMatch(wire, /evil/);
    assert.match(wire, /RSET\r\nQUIT\r\n$/);
  } finally {
    await mta.close();
  }
});

test('DATA: backpressure on a large message keeps every byte in order', async () => {
  let data: Buffer | undefined;
  const mta = await startFakeMta(async (peer) => {
    await greetAndHello(peer);
    peer.socket.pause();
    setTimeout(() => peer.socket.resume(), 300);
    data = await acceptOneMessage(peer, '250 OK\r\n');
    await acceptOneMessage(peer, '');
  });
  try {
    const client = await SmtpClient.open(clientOptions(mta.port));
    await mailFromTo(client, 'rcpt@example.com');
    const line = '.dotted line that needs stuffing ' + 'x'.repeat(60) + '\r\n';
    const chunks = Array.from({ length: 48 }, () => Buffer.from(line.repeat(1500)));
    const answer = await client.data(chunks);
    assert.equal(answer.code, 250);
    // Reference stuffing, line by line (the message ends with CRLF, so no CRLF is added).
    const message = Buffer.concat(chunks).toString();
    const stuffedLines = message.split('\r\n').map((text) => (text.startsWith('.') ? `.${text}` : text));
    const expected = `${stuffedLines.join('\r\n')}.\r\n`;
    assert.equal(data?.length, Buffer.byteLength(expected));
    assert.ok(data?.toString() === expected, 'stuffed bytes differ from the reference');
    await client.close();
  } finally {
    await mta.close();
  }
});

test('DATA: a server that stops reading → timeout while waiting for drain, connection cut', async () => {
  const mta = await startFakeMta(async (peer) => {
    await greetAndHello(peer);
    for (;;) {
      const line = await peer.readLine();
      if (line === undefined) return;
      peer.send(line === 'DATA' ? '354 go ahead\r\n' : '250 OK\r\n');
      if (line === 'DATA') break;
    }
    peer.socket.pause(); // never reads the message (nor, then, the connection's end)
  });
  try {
    const client = await SmtpClient.open(clientOptions(mta.port, { timeouts: { connectMs: 1000, commandMs: 400, dataMs: 5000 } }));
    await mailFromTo(client, 'rcpt@example.com');
    const chunk = Buffer.from(`${'y'.repeat(1022)}\r\n`.repeat(1024)); // 1 MiB
    await assert.rejects(client.data(Array.from({ length: 64 }, () => chunk)), expectRelayError('timeout', 'stopped reading'));
    assert.equal(client.closed, true);
  } finally {
    await mta.close();
  }
});

test('unreachable: nothing listening → RelayError unreachable', async () => {
  const port = await unusedPort();
  await assert.rejects(SmtpClient.open(clientOptions(port)), expectRelayError('unreachable', 'ECONNREFUSED'));
});

test('timeout: a server that never greets → RelayError timeout within the configured time', async () => {
  const mta = await startFakeMta(async (peer) => {
    await peer.closedByClient();
  });
  try {
    const started = Date.now();
    await assert.rejects(
      SmtpClient.open(clientOptions(mta.port, { timeouts: { connectMs: 1000, commandMs: 300, dataMs: 1000 } })),
      expectRelayError('timeout', 'greeting'),
    );
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 280 && elapsed < 1500, `took ${elapsed} ms`);
    await mta.scriptsDone();
  } finally {
    await mta.close();
  }
});

test('timeout: a server that stops answering mid-session → timeout, connection cut, session closed', async () => {
  const mta = await startFakeMta(async (peer) => {
    await greetAndHello(peer);
    await peer.readLine(); // MAIL FROM, never answered
    await peer.closedByClient();
  });
  try {
    const client = await SmtpClient.open(clientOptions(mta.port, { timeouts: { connectMs: 1000, commandMs: 300, dataMs: 1000 } }));
    await assert.rejects(client.mailFrom('a@example.com', {}), expectRelayError('timeout', 'MAIL FROM'));
    assert.equal(client.closed, true);
    await mta.scriptsDone(); // the peer saw the connection close
    await assert.rejects(client.rcptTo('b@example.com', {}), RelayError);
    await client.close(); // never rejects
  } finally {
    await mta.close();
  }
});

test('timeout: the reply to the final dot waits dataMs, not commandMs', async () => {
  const mta = await startFakeMta(async (peer) => {
    await greetAndHello(peer);
    await acceptOneMessage(peer, '');
    await new Promise((resolve) => setTimeout(resolve, 400));
    peer.send('250 OK late but in time\r\n');
    await peer.closedByClient();
  });
  try {
    const client = await SmtpClient.open(clientOptions(mta.port, { timeouts: { connectMs: 1000, commandMs: 200, dataMs: 1500 } }));
    await mailFromTo(client, 'rcpt@example.com');
    assert.equal((await client.data([Buffer.from('x\r\n')])).text, 'OK late but in time');
    await client.close();
  } finally {
    await mta.close();
  }
});

test('a 554 greeting → unreachable, the MTA text kept in the message', async () => {
  const mta = await startFakeMta(async (peer) => {
    peer.send('554 5.3.2 mx.test is not accepting mail now\r\n');
    const line = await peer.readLine();
    assert.equal(line, 'QUIT');
    peer.send('221 bye\r\n');
    peer.close();
  });
  try {
    await assert.rejects(SmtpClient.open(clientOptions(mta.port)), expectRelayError('unreachable', 'not accepting mail now'));
    await mta.scriptsDone();
  } finally {
    await mta.close();
  }
});

test('connection dropped before the greeting → unreachable; after it, mid-command → protocol', async () => {
  const dropAtOnce = await startFakeMta(async (peer) => peer.close());
  try {
    await assert.rejects(SmtpClient.open(clientOptions(dropAtOnce.port)), expectRelayError('unreachable'));
  } finally {
    await dropAtOnce.close();
  }
  const dropMidCommand = await startFakeMta(async (peer) => {
    await greetAndHello(peer);
    await peer.readLine();
    peer.close();
  });
  try {
    const client = await SmtpClient.open(clientOptions(dropMidCommand.port));
    await assert.rejects(client.mailFrom('a@example.com', {}), expectRelayError('protocol', 'closed'));
    assert.equal(client.closed, true);
  } finally {
    await dropMidCommand.close();
  }
});

test('a malformed reply line → protocol', async () => {
  const mta = await startFakeMta(async (peer) => {
    peer.send('220 ok\r\n');
    await peer.readLine();
    peer.send('hello there\r\n');
    await peer.closedByClient();
  });
  try {
    await assert.rejects(SmtpClient.open(clientOptions(mta.port)), expectRelayError('protocol', 'malformed'));
  } finally {
    await mta.close();
  }
});

test('EHLO refused with 5xx → HELO; no extensions then, so BODY=8BITMIME is refused locally', async () => {
  const lines: string[] = [];
  const mta = await startFakeMta(async (peer) => {
    peer.send('220 old.test SMTP\r\n');
    for (;;) {
      const line = await peer.readLine();
      if (line === undefined) return;
      lines.push(line);
      if (line.startsWith('EHLO')) peer.send('502 command not recognized\r\n');
      else if (line.startsWith('QUIT')) {
        peer.send('221 bye\r\n');
        peer.close();
      } else peer.send('250 old.test\r\n');
    }
  });
  try {
    const client = await SmtpClient.open(clientOptions(mta.port));
    assert.deepEqual(await client.mailFrom('a@example.com', { body: '8BITMIME' }), {
      code: 554,
      enhanced: '5.6.3',
      text: 'Message needs 8BITMIME, which the next hop does not support',
    });
    assert.equal((await client.mailFrom('a@example.com', { body: '7BIT', size: 100, ret: 'FULL' })).code, 250);
    await client.close();
    await mta.scriptsDone();
    assert.deepEqual(lines, ['EHLO sello.test', 'HELO sello.test', 'MAIL FROM:<a@example.com>', 'QUIT']);
  } finally {
    await mta.close();
  }
});

test('per-RCPT multiline reply is returned in step with its enhanced code', async () => {
  const mta = await startFakeMta(async (peer) => {
    await greetAndHello(peer, ['ENHANCEDSTATUSCODES']);
    await peer.readLine();
    peer.send('250 2.1.0 OK\r\n');
    await peer.readLine();
    peer.send('550-5.1.1 <nobody@example.com>: Recipient address rejected:\r\n550 5.1.1 User unknown in local recipient table\r\n');
    await acceptOneMessage(peer, '');
  });
  try {
    const client = await SmtpClient.open(clientOptions(mta.port));
    await client.mailFrom('a@example.com', {});
    assert.deepEqual(await client.rcptTo('nobody@example.com', {}), {
      code: 550,
      enhanced: '5.1.1',
      text: '<nobody@example.com>: Recipient address rejected: User unknown in local recipient table',
    });
    // No recipient accepted: DATA is answered locally, never sent.
    assert.deepEqual(await client.data([Buffer.from('x\r\n')]), { code: 554, enhanced: '5.5.1', text: 'No valid recipients' });
    await client.close();
    assert.doesNotMatch(mta.peers[0]?.received.toString() ?? '', /DATA/);
  } finally {
    await mta.close();
  }
});

test('AUTH: a connection lost mid-AUTH never shows the password in the error', async () => {
  const mta = await startFakeMta(async (peer) => {
    await greetAndHello(peer, ['AUTH PLAIN LOGIN']);
    await peer.readLine();
    peer.close();
  });
  try {
    const client = await SmtpClient.open(clientOptions(mta.port));
    const password = 'pässword-Secret-42';
    await assert.rejects(client.authenticate({ mechanism: 'PLAIN', username: 'user', password }), (error: unknown) => {
      assert.ok(error instanceof RelayError);
      const encoded = Buffer.from(`\0user\0${password}`).toString('base64');
      for (const secret of [password, encoded, encoded.slice(0, 12)]) assert.ok(!error.message.includes(secret));
      assert.ok(!String(error.stack).includes(password));
      return true;
    });
  } finally {
    await mta.close();
  }
});

test('STARTTLS: data sent after the 220 (response injection) → tls error', async () => {
  const mta = await startFakeMta(async (peer) => {
    await greetAndHello(peer, ['STARTTLS']);
    await peer.readLine();
    peer.send('220 go ahead\r\n250 injected\r\n');
    await peer.closedByClient();
  });
  try {
    await assert.rejects(
      SmtpClient.open(clientOptions(mta.port, { starttls: 'opportunistic' })),
      expectRelayError('tls', 'after its STARTTLS reply'),
    );
  } finally {
    await mta.close();
  }
});

/** An LMTP peer: LHLO, MAIL, RCPT (refusing refused@), DATA, then `finalReplies` in one go. */
async function lmtpScript(peer: ScriptedPeer, finalReplies: readonly string[]): Promise<void> {
  peer.send('220 lmtp.test LMTP\r\n');
  for (;;) {
    const line = await peer.readLine();
    if (line === undefined) return;
    if (line.startsWith('LHLO')) peer.send('250-lmtp.test\r\n250-ENHANCEDSTATUSCODES\r\n250 PIPELINING\r\n');
    else if (line.startsWith('RCPT TO:<refused@')) peer.send('550 5.1.1 <refused@example.com> User doesn\'t exist\r\n');
    else if (line === 'DATA') {
      peer.send('354 OK\r\n');
      await peer.readData();
      peer.send(finalReplies.join(''));
    } else if (line === 'QUIT') {
      peer.send('221 bye\r\n');
      peer.close();
    } else peer.send('250 2.1.0 OK\r\n');
  }
}

const lmtpCases: { name: string; replies: string[]; expected: [number, string, string] }[] = [
  {
    name: 'all 2xx → the first 2xx',
    replies: ['250 2.0.0 <a@example.com> Qk1 Saved\r\n', '250 2.0.0 <b@example.com> Qk2 Saved\r\n'],
    expected: [250, '2.0.0', '<a@example.com> Qk1 Saved'],
  },
  {
    name: 'a 4xx among them → 451 with the 4xx text',
    replies: ['250 2.0.0 <a@example.com> Qk1 Saved\r\n', '452 4.2.2 <b@example.com> Mailbox is full\r\n'],
    expected: [451, '4.2.2', '<b@example.com> Mailbox is full'],
  },
  {
    name: 'all 5xx → the first 5xx',
    replies: ['552 5.2.2 <a@example.com> Quota exceeded\r\n', '550 5.1.1 <b@example.com> Gone\r\n'],
    expected: [552, '5.2.2', '<a@example.com> Quota exceeded'],
  },
  {
    name: '2xx and 5xx → 451 4.3.0',
    replies: ['250 2.0.0 <a@example.com> Qk1 Saved\r\n', '552 5.2.2 <b@example.com> Quota exceeded\r\n'],
    expected: [451, '4.3.0', 'Message not delivered to all recipients, try again later'],
  },
];

for (const { name, replies, expected } of lmtpCases) {
  test(`LMTP: one reply per accepted recipient after the dot; ${name}`, async () => {
    const mta = await startFakeMta((peer) => lmtpScript(peer, replies));
    try {
      const client = await SmtpClient.open(clientOptions(mta.port, { protocol: 'lmtp' }));
      await client.mailFrom('s@example.com', {});
      assert.equal((await client.rcptTo('a@example.com', {})).code, 250);
      assert.equal((await client.rcptTo('refused@example.com', {})).code, 550);
      assert.equal((await client.rcptTo('b@example.com', {})).code, 250);
      const answer = await client.data([Buffer.from('Subject: lmtp\r\n\r\nhi\r\n')]);
      assert.deepEqual([answer.code, answer.enhanced, answer.text], expected);
      assert.deepEqual(
        answer.recipientReplies?.map(({ recipient, reply }) => [recipient, reply.code]),
        [
          ['a@example.com', Number(replies[0]?.slice(0, 3))],
          ['b@example.com', Number(replies[1]?.slice(0, 3))],
        ],
      );
      // In step: the session is still usable (no stray reply left unread).
      await client.reset();
      await client.close();
      await mta.scriptsDone();
      assert.match(mta.peers[0]?.received.toString() ?? '', /^LHLO sello\.test\r\n/);
    } finally {
      await mta.close();
    }
  });
}

test('LMTP: fewer replies than accepted recipients → timeout after dataMs', async () => {
  const mta = await startFakeMta((peer) => lmtpScript(peer, ['250 2.0.0 <a@example.com> Saved\r\n']));
  try {
    const client = await SmtpClient.open(
      clientOptions(mta.port, { protocol: 'lmtp', timeouts: { connectMs: 1000, commandMs: 1000, dataMs: 300 } }),
    );
    await client.mailFrom('s@example.com', {});
    await client.rcptTo('a@example.com', {});
    await client.rcptTo('b@example.com', {});
    await assert.rejects(client.data([Buffer.from('x\r\n')]), expectRelayError('timeout', 'b@example.com'));
  } finally {
    await mta.close();
  }
});

test('values that would break the command line are refused with a reply, never sent', async () => {
  const mta = await startFakeMta(async (peer) => {
    await greetAndHello(peer, ['DSN']);
    await acceptOneMessage(peer, '');
  });
  try {
    const client = await SmtpClient.open(clientOptions(mta.port));
    assert.deepEqual(await client.mailFrom('a@example.com> SIZE=1', {}), { code: 501, enhanced: '5.1.7', text: 'Bad sender address syntax' });
    assert.equal((await client.mailFrom('a@example.com', { envid: 'has space' })).code, 501);
    assert.equal((await client.mailFrom('"john doe"@example.com', { envid: 'QQ+2Bx' })).code, 250);
    assert.deepEqual(await client.rcptTo('b@example.com>\r\nRSET', {}), { code: 501, enhanced: '5.1.3', text: 'Bad recipient address syntax' });
    assert.equal((await client.rcptTo('b@example.com', { orcpt: 'rfc822;b@example.com\r\nDATA' })).code, 501);
    assert.equal((await client.rcptTo('b@example.com', { orcpt: 'utf-8;ü@example.com' })).code, 250);
    await client.close();
    await mta.scriptsDone();
    assert.equal(
      mta.peers[0]?.received.toString(),
      'EHLO sello.test\r\nMAIL FROM:<"john doe"@example.com> ENVID=QQ+2Bx\r\nRCPT TO:<b@example.com> ORCPT=utf-8;ü@example.com\r\nQUIT\r\n',
    );
  } finally {
    await mta.close();
  }
});

async function* streamed(parts: readonly string[]): AsyncGenerator<Buffer> {
  for (const part of parts) {
    await new Promise((resolve) => setImmediate(resolve));
    yield Buffer.from(part, 'latin1');
  }
}

test('DATA from streamed chunks (a spilled body): the same bytes on the wire as from an array', async () => {
  const received: (Buffer | undefined)[] = [];
  const mta = await startFakeMta(async (peer) => {
    await greetAndHello(peer);
    received.push(await acceptOneMessage(peer, '250 OK\r\n'));
    received.push(await acceptOneMessage(peer, '250 OK\r\n'));
    await acceptOneMessage(peer, '');
  });
  try {
    const client = await SmtpClient.open(clientOptions(mta.port));
    const parts = ['Subject: dots\r\n\r\n.line one\r\n', '.starts a chunk\r', '\n.after split CRLF\r\nend\r\n.', '\r\n', 'no final line end'];
    await mailFromTo(client, 'rcpt@example.com');
    assert.equal((await client.data(parts.map((part) => Buffer.from(part)))).code, 250);
    await mailFromTo(client, 'rcpt@example.com');
    assert.equal((await client.data(streamed(parts))).code, 250);
    assert.equal(received[1]?.toString(), received[0]?.toString());
    assert.match(received[1]?.toString() ?? '', /\r\n\.\.starts a chunk\r\n\.\.after split CRLF\r\nend\r\n\.\.\r\nno final line end\r\n\.\r\n$/);
    await client.close();
    await mta.scriptsDone();
  } finally {
    await mta.close();
  }
});

test('DATA from streamed chunks: a bare LF, CR or a CR left at the end cuts the connection; no end of data ever follows it', async () => {
  for (const parts of [['a\r\n', 'b\n.\nMAIL FROM:<evil@x>\r\n'], ['a\r', '.\rMAIL FROM:<evil@x>\r\n'], ['a\r\n', 'b\r']]) {
    const mta = await startFakeMta(async (peer) => {
      await greetAndHello(peer);
      await acceptOneMessage(peer, '250 OK\r\n');
    });
    try {
      const client = await SmtpClient.open(clientOptions(mta.port));
      await mailFromTo(client, 'rcpt@example.com');
      await assert.rejects(client.data(streamed(parts)), (error: unknown) => {
        assert.ok(error instanceof SmtpReplyError, String(error));
        assert.equal(error.reply.code, 550);
        assert.equal(error.reply.enhanced, '5.6.0');
        return true;
      });
      assert.equal(client.closed, true, 'the downstream transaction is cut, not ended');
      await mta.scriptsDone();
      const wire = mta.peers[0]?.received.toString('latin1') ?? '';
      assert.match(wire, /DATA\r\n/);
      assert.doesNotMatch(wire, /evil/, `nothing after the bare line ending of ${JSON.stringify(parts)} was sent`);
      assert.doesNotMatch(wire.slice(wire.indexOf('DATA\r\n') + 6), /\r\n\.\r\n/, 'no end of data');
    } finally {
      await mta.close();
    }
  }
});

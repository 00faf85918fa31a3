// SMTP smuggling through sello (issue 10, defect 3): each of 13 end-of-data lookalikes, followed
// by a second transaction, sent by a client through sello to a downstream that drops NULs and
// takes bare CR and bare LF as line ends. Whatever sello's policies, that downstream must never
// see a second message: either sello refuses the message, or it arrives whole.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startLenientMta } from '../helpers/lenient-mta.ts';
import { startTestSello } from '../helpers/sello.ts';
import { SmtpDialog } from '../helpers/smtp-dialog.ts';

/** End-of-data lookalikes (SEC Consult's SMTP smuggling variants, NUL forms included). */
const VARIANTS = ['\n.\n', '\n.\r\n', '\r.\r', '\r.\r\n', '\r\n.\r', '\r\n.\n', '\n.\r', '\r.\n', '\r\n\x00.\r\n', '\r\n.\x00\r\n', '\n\x00.\n', '\r\x00.\r', '\r\r\n.\r\r\n'];

const smuggled = (variant: string) =>
  `From: alice@example.com\r\nTo: bob@example.net\r\nSubject: smuggling\r\n\r\nfirst part${variant}MAIL FROM:<mallory@example.com>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\nFrom: ceo@example.com\r\n\r\nsmuggled\r\n`;

const POLICIES = [
  { data: {} },
  { data: { nul: 'strip' } },
  { data: { nul: 'strip', bareLineEndings: 'reject' } },
  { data: { nul: 'reject', bareLineEndings: 'reject' } },
];

for (const policy of POLICIES) {
  test(`no split at a lenient MTA with data ${JSON.stringify(policy.data)}: all 13 variants`, async (t) => {
    const mta = await startLenientMta();
    t.after(() => mta.close());
    const sello = await startTestSello(t, {
      keys: [{ domain: 'example.com', selector: 'rsa1', algorithm: 'rsa' }],
      config: {
        listeners: [{ name: 'submission', role: 'submission', listen: '127.0.0.1:0', trustedNetworks: ['127.0.0.0/8'] }],
        relay: { target: mta.url, starttls: 'never' },
        ...policy,
      },
    });
    const outcomes: string[] = [];
    for (const variant of VARIANTS) {
      const dialog = await SmtpDialog.connect(sello.port('submission'));
      await dialog.command('EHLO client.test');
      assert.equal(await dialog.command('MAIL FROM:<alice@example.com>'), '250 Accepted');
      assert.equal(await dialog.command('RCPT TO:<bob@example.net>'), '250 Accepted');
      assert.match(await dialog.command('DATA'), /^354 /);
      // The client ends the data properly; the lookalike sits inside it, unstuffed.
      dialog.write(Buffer.from(`${smuggled(variant)}\r\n.\r\n`, 'latin1'));
      outcomes.push(await dialog.readReply());
      await dialog.close();
    }
    const accepted = outcomes.filter((reply) => reply.startsWith('250 ')).length;
    assert.equal(mta.messages.length, accepted, `one message downstream per message accepted: ${JSON.stringify(outcomes)}`);
    for (const delivered of mta.messages) {
      assert.equal(delivered.mailFrom, 'alice@example.com');
      assert.match(delivered.data, /first part[^]*MAIL FROM:<mallory@example.com>[^]*\r\nsmuggled\r\n/, 'the lookalike and what follows stayed inside the message');
    }
    for (const reply of outcomes.filter((reply) => !reply.startsWith('250 '))) {
      assert.match(reply, /^550 5\.6\.0 Message refused: (bare CR or LF|it contains NUL)/);
    }
    if (JSON.stringify(policy.data) === '{}') {
      // Defaults: NUL refused, bare line ends normalised.
      assert.deepEqual(
        outcomes.map((reply) => reply.slice(0, 3)),
        VARIANTS.map((variant) => (variant.includes('\0') ? '550' : '250')),
      );
    }
  });
}

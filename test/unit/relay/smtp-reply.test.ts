// Reply parsing, capabilities, queue ids and LMTP folding (src/relay/smtp-reply.ts).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { extractQueueId, foldLmtpReplies, parseCapabilities, toSmtpReply } from '../../../src/relay/smtp-reply.ts';

test('enhanced status code is split off the text', () => {
  assert.deepEqual(toSmtpReply({ code: 550, lines: ['5.1.1 <x@example.com>: Recipient unknown'] }), {
    code: 550,
    enhanced: '5.1.1',
    text: '<x@example.com>: Recipient unknown',
  });
});

test('multiline reply: enhanced code stripped from every line, lines joined with a space', () => {
  const parsed = toSmtpReply({ code: 451, lines: ['4.7.1 Greylisted,', '4.7.1 come back', '4.7.1 later'] });
  assert.deepEqual(parsed, { code: 451, enhanced: '4.7.1', text: 'Greylisted, come back later' });
});

test('no enhanced code, or one whose class does not match the reply code, stays text', () => {
  assert.deepEqual(toSmtpReply({ code: 250, lines: ['OK id=1tXyz-000abc-Q1'] }), {
    code: 250,
    enhanced: '',
    text: 'OK id=1tXyz-000abc-Q1',
  });
  assert.deepEqual(toSmtpReply({ code: 250, lines: ['5.1.1 odd'] }), { code: 250, enhanced: '', text: '5.1.1 odd' });
  assert.deepEqual(toSmtpReply({ code: 221, lines: [''] }), { code: 221, enhanced: '', text: '' });
});

test('EHLO capabilities', () => {
  const capabilities = parseCapabilities({
    code: 250,
    lines: ['mx.example.com Hello', 'SIZE 52428800', '8BITMIME', 'PIPELINING', 'AUTH PLAIN LOGIN', 'AUTH=CRAM-MD5', 'DSN', 'SMTPUTF8', 'STARTTLS', 'ENHANCEDSTATUSCODES', 'XCLIENT NAME ADDR'],
  });
  assert.equal(capabilities.size, 52428800);
  assert.equal(capabilities.eightBitMime, true);
  assert.equal(capabilities.pipelining, true);
  assert.equal(capabilities.dsn, true);
  assert.equal(capabilities.smtpUtf8, true);
  assert.equal(capabilities.startTls, true);
  assert.equal(capabilities.enhancedStatusCodes, true);
  assert.deepEqual([...capabilities.authMechanisms].sort(), ['CRAM-MD5', 'LOGIN', 'PLAIN']);
  assert.equal(capabilities.keywords.get('XCLIENT'), 'NAME ADDR');

  const bare = parseCapabilities({ code: 250, lines: ['mx.example.com', 'SIZE'] });
  assert.equal(bare.size, 0);
  assert.equal(bare.eightBitMime, false);
  assert.equal(bare.authMechanisms.size, 0);
  assert.equal(parseCapabilities({ code: 250, lines: ['only the name'] }).size, undefined);
});

test('queue ids of Exim, Postfix and Dovecot LMTP', () => {
  assert.equal(extractQueueId('OK id=1tXyz-000abc-Q1'), '1tXyz-000abc-Q1');
  assert.equal(extractQueueId('OK id=1uAbCd-00000000Ab1-9xYz'), '1uAbCd-00000000Ab1-9xYz');
  assert.equal(extractQueueId('Ok: queued as 4Xb2Kq1z0Mz9'), '4Xb2Kq1z0Mz9');
  assert.equal(extractQueueId('<user@example.com> 6nbtGK09Y2ZDRgAA0J78UA Saved'), '6nbtGK09Y2ZDRgAA0J78UA');
  assert.equal(extractQueueId('x8ABC123456789 Message accepted for delivery'), 'x8ABC123456789');
  assert.equal(extractQueueId('OK'), undefined);
  assert.equal(extractQueueId('Ok'), undefined);
});

const ok = (recipient: string, text = 'Saved') => ({ recipient, reply: { code: 250, enhanced: '2.0.0', text } });
const temp = (recipient: string) => ({ recipient, reply: { code: 452, enhanced: '4.2.2', text: 'Mailbox full' } });
const perm = (recipient: string) => ({ recipient, reply: { code: 550, enhanced: '5.1.1', text: 'No such user' } });

test('LMTP fold: all 2xx → the first 2xx, with its queue id and every recipient reply', () => {
  const replies = [ok('a@x', '<a@x> AbC123 Saved'), ok('b@x', '<b@x> DeF456 Saved')];
  const folded = foldLmtpReplies(replies);
  assert.equal(folded.code, 250);
  assert.equal(folded.text, '<a@x> AbC123 Saved');
  assert.equal(folded.queueId, 'AbC123');
  assert.deepEqual(folded.recipientReplies, replies);
});

test('LMTP fold: any 4xx → 451 with the first 4xx enhanced code and text', () => {
  const folded = foldLmtpReplies([ok('a@x'), perm('b@x'), temp('c@x')]);
  assert.deepEqual([folded.code, folded.enhanced, folded.text], [451, '4.2.2', 'Mailbox full']);
  assert.equal(folded.queueId, undefined);
});

test('LMTP fold: all 5xx → the first 5xx', () => {
  const folded = foldLmtpReplies([perm('a@x'), { recipient: 'b@x', reply: { code: 552, enhanced: '5.2.2', text: 'Over quota' } }]);
  assert.deepEqual([folded.code, folded.enhanced, folded.text], [550, '5.1.1', 'No such user']);
});

test('LMTP fold: 2xx mixed with 5xx → 451 4.3.0 (no partial failure over SMTP)', () => {
  const folded = foldLmtpReplies([ok('a@x'), perm('b@x')]);
  assert.deepEqual([folded.code, folded.enhanced], [451, '4.3.0']);
  assert.equal(folded.recipientReplies?.length, 2);
});

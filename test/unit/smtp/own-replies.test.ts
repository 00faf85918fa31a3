import assert from 'node:assert/strict';
import { test } from 'node:test';
import { replyText, withEnhancedCode } from '../../../src/smtp/own-replies.ts';
import { Replies } from '../../../src/errors.ts';

test("smtp-server's own refusals get the catalogue's reply or an RFC 3463 code by class; 2xx/3xx and coded texts stay", () => {
  assert.equal(withEnhancedCode(421, 'sello.test Too many connected clients, try again in a moment'), replyText(Replies.tooManyConnections));
  assert.equal(withEnhancedCode(421, 'Timeout - closing connection'), '4.4.2 Timeout, closing connection');
  assert.equal(withEnhancedCode(421, 'Error: Command line too long'), '4.5.2 Command line too long');
  assert.equal(withEnhancedCode(552, 'Error: message exceeds fixed maximum message size 1024'), '5.3.4 Message size exceeds fixed maximum message size');
  assert.equal(withEnhancedCode(500, 'Error: command not recognized'), '5.5.2 Error: command not recognized');
  assert.equal(withEnhancedCode(503, 'Error: need MAIL command'), '5.5.1 Error: need MAIL command');
  assert.equal(withEnhancedCode(555, 'odd'), '5.0.0 odd');
  assert.equal(withEnhancedCode(550, '5.7.1 Relaying denied'), '5.7.1 Relaying denied');
  assert.equal(withEnhancedCode(250, 'Accepted'), 'Accepted');
  assert.equal(withEnhancedCode(354, 'End data with <CR><LF>.<CR><LF>'), 'End data with <CR><LF>.<CR><LF>');
});

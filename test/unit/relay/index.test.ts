// createRelayTarget: scheme → target, and the config error for anything else (src/relay/index.ts).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError } from '../../../src/errors.ts';
import { DirTarget, SmtpTarget, createRelayTarget, type SmtpRelayConfig } from '../../../src/relay/index.ts';

const config = (url: string): SmtpRelayConfig => ({
  url,
  starttls: 'opportunistic',
  tlsRejectUnauthorized: false,
  helo: 'sello.test',
  timeouts: { connectMs: 1000, commandMs: 1000, dataMs: 1000 },
});

test('the URL scheme picks the target', () => {
  assert.ok(createRelayTarget(config('smtp://127.0.0.1:2525')) instanceof SmtpTarget);
  assert.ok(createRelayTarget(config('LMTP://127.0.0.1')) instanceof SmtpTarget);
  assert.ok(createRelayTarget(config('dir:/var/spool/sello')) instanceof DirTarget);
  assert.equal(createRelayTarget(config('dir:/var/spool/sello')).description, 'dir:/var/spool/sello');
});

test('anything else is a ConfigError at the given config path', () => {
  for (const url of ['http://127.0.0.1', '127.0.0.1:25', '', 'dir:', 'smtps://host']) {
    assert.throws(() => createRelayTarget(config(url)), (error: unknown) => error instanceof ConfigError && error.path === 'relay.target', url);
  }
  assert.throws(
    () => createRelayTarget(config('ftp://x'), 'listeners[2].relay.target'),
    (error: unknown) => error instanceof ConfigError && error.message.startsWith('listeners[2].relay.target: '),
  );
});

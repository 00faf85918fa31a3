// Tests for `sello spf` (src/cli/spf.ts), in-process against the real test DNS server on
// loopback (test/helpers/dns-server.ts): output, identities, DNS failure, usage errors.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { spfCommand, spfUsage } from '../../../src/cli/spf.ts';
import { UsageError } from '../../../src/errors.ts';
import { startDnsServer, type DnsServer } from '../../helpers/dns-server.ts';
import { type CommandRun, runCommand } from '../../helpers/cli.ts';

let dns: DnsServer;
before(async () => {
  dns = await startDnsServer({
    'example.com': { TXT: ['v=spf1 ip4:192.0.2.0/24 -all exp=why.example.com'] },
    'why.example.com': { TXT: ['%{i} is not one of our servers'] },
    'mail.example.net': { TXT: ['v=spf1 a -all'], A: ['198.51.100.7'] },
    'v6.example.org': { TXT: ['v=spf1 ip6:2001:db8::/32 ~all'] },
    'broken.example.com': { TXT: ['v=spf1 include:down.example.com -all'] },
    'down.example.com': { fault: 'servfail' },
    'slow.example.com': { fault: 'drop' },
  });
});
after(async () => {
  await dns.close();
});

function spf(args: string[]): Promise<CommandRun> {
  return runCommand(spfCommand, args);
}

const base = (): string[] => ['--dns', dns.address, '--receiver', 'mx.example.org'];

describe('sello spf', () => {
  test('pass: the result word, then the Received-SPF field with LF line endings', async () => {
    const run = await spf([...base(), '--ip', '192.0.2.1', '--sender', 'alice@example.com', '--helo', 'mail.example.net']);
    assert.equal(run.code, 0);
    assert.equal(
      run.out,
      'pass\n' +
        'Received-SPF: pass (mx.example.org: domain of alice@example.com designates\n' +
        ' 192.0.2.1 as permitted sender) client-ip=192.0.2.1;\n' +
        ' envelope-from="alice@example.com"; helo=mail.example.net;\n' +
        ' receiver=mx.example.org; identity=mailfrom;\n',
    );
    assert.equal(run.err, '');
  });

  test('fail exits 0 too; the explanation goes to stderr', async () => {
    const run = await spf([...base(), '--ip', '203.0.113.9', '--sender', '<bob@example.com>', '--helo', 'mail.example.net']);
    assert.equal(run.code, 0);
    assert.equal(
      run.out,
      'fail\n' +
        'Received-SPF: fail (mx.example.org: domain of bob@example.com does not\n' +
        ' designate 203.0.113.9 as permitted sender) client-ip=203.0.113.9;\n' +
        ' envelope-from="bob@example.com"; helo=mail.example.net;\n' +
        ' receiver=mx.example.org; identity=mailfrom;\n',
    );
    assert.equal(run.err, 'explanation: 203.0.113.9 is not one of our servers\n');
  });

  test('IPv6 client: softfail, client-ip quoted', async () => {
    const run = await spf([...base(), '--ip', '2001:db9::1', '--sender', 'x@v6.example.org', '--helo', 'mail.example.net']);
    assert.equal(run.out.split('\n')[0], 'softfail');
    assert.match(run.out, /client-ip="2001:db9::1";/);
  });

  test("null sender ('<>'): the identity is postmaster@<helo>, envelope-from is empty", async () => {
    const run = await spf([...base(), '--ip', '198.51.100.7', '--sender', '<>', '--helo', 'mail.example.net']);
    assert.equal(
      run.out,
      'pass\n' +
        'Received-SPF: pass (mx.example.org: domain of postmaster@mail.example.net\n' +
        ' designates 198.51.100.7 as permitted sender) client-ip=198.51.100.7;\n' +
        ' envelope-from=""; helo=mail.example.net; receiver=mx.example.org;\n' +
        ' identity=mailfrom;\n',
    );
  });

  test('--identity helo checks the HELO name; an address literal gives none without asking DNS', async () => {
    const helo = await spf([...base(), '--identity', 'helo', '--ip', '192.0.2.200', '--helo', 'mail.example.net']);
    assert.equal(helo.out.split('\n')[0], 'fail');
    assert.match(helo.out, /identity=helo;/);
    const before = dns.queries.length;
    const literal = await spf([...base(), '--identity', 'helo', '--ip', '192.0.2.200', '--sender', 'a@example.com', '--helo', '[192.0.2.200]']);
    assert.equal(literal.out.split('\n')[0], 'none');
    assert.match(literal.out, /helo="\[192\.0\.2\.200\]";/);
    assert.equal(dns.queries.length, before);
  });

  test('a DNS server failure is temperror; a silent server is temperror within --timeout', async () => {
    const failed = await spf([...base(), '--ip', '192.0.2.1', '--sender', 'a@broken.example.com', '--helo', 'mail.example.net']);
    assert.equal(failed.code, 0);
    assert.equal(failed.out.split('\n')[0], 'temperror');
    const started = Date.now();
    const slow = await spf([...base(), '--timeout', '300ms', '--ip', '192.0.2.1', '--sender', 'a@slow.example.com', '--helo', 'mail.example.net']);
    assert.equal(slow.out.split('\n')[0], 'temperror');
    assert.ok(Date.now() - started < 3000, 'the time budget ended the evaluation');
  });

  test('--help prints the usage and the exit codes', async () => {
    const run = await spf(['--help']);
    assert.equal(run.code, 0);
    assert.equal(run.out, spfUsage);
    assert.match(run.out, /exit status:/);
  });

  const usageErrors: [string, string[], RegExp][] = [
    ['no --ip', ['--sender', 'a@b.example', '--helo', 'h.example'], /--ip is required/],
    ['bad --ip', ['--ip', '1.2.3', '--sender', 'a@b.example', '--helo', 'h.example'], /--ip must be/],
    ['no --helo', ['--ip', '192.0.2.1', '--sender', 'a@b.example'], /--helo is required/],
    ['no --sender for mailfrom', ['--ip', '192.0.2.1', '--helo', 'h.example'], /--sender is required/],
    ['bad --identity', ['--identity', 'pra', '--ip', '192.0.2.1', '--sender', '', '--helo', 'h.example'], /--identity must be/],
    ['bad --timeout', ['--timeout', 'soon', '--ip', '192.0.2.1', '--sender', '', '--helo', 'h.example'], /--timeout must be/],
    ['zero --timeout', ['--timeout', '0s', '--ip', '192.0.2.1', '--sender', '', '--helo', 'h.example'], /--timeout must be/],
    ['bad --dns', ['--dns', 'resolver', '--ip', '192.0.2.1', '--sender', '', '--helo', 'h.example'], /--dns must be/],
    ['unknown option', ['--ipaddr', '192.0.2.1'], /Unknown option/],
    ['positional', ['192.0.2.1'], /positional/],
  ];
  for (const [name, args, message] of usageErrors) {
    test(`usage error: ${name}`, async () => {
      await assert.rejects(spf(args), (error: unknown) => error instanceof UsageError && error.exitCode === 2 && message.test(error.message));
    });
  }
});

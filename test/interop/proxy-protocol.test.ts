// relay.forward: proxy-v1 / proxy-v2 against a real Exim with `hosts_proxy` (Debian
// exim4-daemon-heavy is built with PROXY support): the client reaches sello from 127.0.0.2,
// sello reaches Exim from 127.0.0.1, and Exim must record 127.0.0.2 as the sending host, in the
// delivered message's envelope and in its mainlog. Also: the readiness probe's header of an
// unproxied connection (v1 UNKNOWN, v2 LOCAL) is accepted at once.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startSello, type RunningSello } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { SmtpTarget } from '../../src/relay/smtp-target.ts';
import { startExim, type Exim } from '../helpers/exim.ts';
import { sendMail } from '../helpers/smtp-dialog.ts';
import { checkExim, freePort, suiteOptions } from '../helpers/tools.ts';

const message = (mode: string) =>
  `From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: via ${mode}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <${mode}@example.com>\r\n\r\nHello.\r\n`;

describe('PROXY protocol towards Exim hosts_proxy', suiteOptions(checkExim()), () => {
  let exim: Exim;
  let proxiedPort: number;

  before(async () => {
    // Exim expects the header only on the second port, so the harness can still see its banner on the first.
    proxiedPort = await freePort();
    exim = await startExim({
      localDomains: ['example.net'],
      extraPorts: [proxiedPort],
      mainConfig: [`hosts_proxy = <; \${if eq{$received_port}{${proxiedPort}}{127.0.0.1}{}}`],
    });
  });
  after(async () => {
    await exim?.close();
  });

  for (const mode of ['proxy-v1', 'proxy-v2'] as const) {
    test(`${mode}: Exim records the client's address (127.0.0.2), not sello's`, async () => {
      await exim.clearMessages();
      let sello: RunningSello | undefined;
      try {
        sello = await startSello(
          parseConfig({
            hostname: 'sello.test',
            listeners: [{ name: 'submission', role: 'submission', listen: '127.0.0.1:0', trustedNetworks: ['127.0.0.0/8'] }],
            relay: { target: `smtp://127.0.0.1:${proxiedPort}`, starttls: 'never', forward: mode },
          }),
          silentLogger(),
        );
        const sent = await sendMail(sello.addresses.get('submission')!.port, { from: 'alice@example.com', to: ['bob@example.net'], data: message(mode) }, { localAddress: '127.0.0.2' });
        assert.match(sent.data ?? '', /^250 2\.0\.0 OK: queued as \S+/, JSON.stringify(sent));
        await exim.waitForMessages(1);
        const [delivery] = await exim.deliveries();
        assert.equal(delivery?.clientAddress, '127.0.0.2');
        const arrival = (await exim.mainlog()).split('\n').find((line) => line.includes(' <= alice@example.com ') && line.includes(delivery!.eximId));
        assert.match(arrival ?? '', / H=\(sello\.test\) \[127\.0\.0\.2\]/, await exim.mainlog());
      } finally {
        await sello?.close();
      }
    });

    test(`${mode}: the readiness probe's unproxied header (${mode === 'proxy-v1' ? 'UNKNOWN' : 'LOCAL'}) is taken at once`, async () => {
      const config = { url: `smtp://127.0.0.1:${proxiedPort}`, starttls: 'never', tlsRejectUnauthorized: false, helo: 'sello.test', timeouts: { connectMs: 2000, commandMs: 8000, dataMs: 5000 } } as const;
      let started = performance.now();
      await new SmtpTarget({ ...config, forward: mode }).probe();
      const withHeader = performance.now() - started;
      // Without a header Exim waits for one (proxy_protocol_timeout, 3 s) before it greets.
      started = performance.now();
      await new SmtpTarget(config).probe();
      const withoutHeader = performance.now() - started;
      assert.ok(withHeader < 2000 && withoutHeader >= 2900, `probe ${withHeader.toFixed(0)} ms with the header, ${withoutHeader.toFixed(0)} ms without`);
    });
  }
});

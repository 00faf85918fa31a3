// Debian's miltertest (OpenDKIM's milter test client, an MTA side written independently of
// Postfix and Sendmail) drives sello's milter listener through the Lua scripts in
// test/interop/miltertest/: signing for an authenticated sender, an SPF fail refused at RCPT, and
// inbound checks with a forged Authentication-Results deleted. Each script errors (exit status
// non-zero) on any unexpected reply or edit; the test also checks what the script echoed.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startSello, type RunningSello } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { makeKeys } from '../helpers/sello.ts';
import { removeTempDir, suiteOptions, type ToolCheck } from '../helpers/tools.ts';

const MILTERTEST = '/usr/bin/miltertest';
const SCRIPTS = path.join(import.meta.dirname, 'miltertest');

function checkMiltertest(): ToolCheck {
  return { name: 'miltertest', missing: existsSync(MILTERTEST) ? undefined : `no ${MILTERTEST}`, install: 'Debian package miltertest' };
}

describe('miltertest drives sello\'s milter listener', suiteOptions(checkMiltertest()), () => {
  let dns: DnsServer;
  let sello: RunningSello;
  let keysDir: string;
  let port: number;

  before(async () => {
    const keys = await makeKeys([{ domain: 'example.org', selector: 'mt', algorithm: 'ed25519' }]);
    keysDir = keys.keysDir;
    dns = await startDnsServer({
      ...Object.fromEntries([...keys.records].map(([name, value]) => [name, { TXT: [value] }])),
      'pass.example': { TXT: ['v=spf1 ip4:192.0.2.25 -all'] },
      'fail.example': { TXT: ['v=spf1 ip4:192.0.2.1 -all'] },
    });
    sello = await startSello(
      parseConfig({
        hostname: 'sello.test',
        listeners: [{ name: 'milter', role: 'milter', listen: 'inet:127.0.0.1:0' }],
        signing: { keysDir, domains: { 'example.org': 'mt' } },
        dns: { servers: [dns.address], timeout: '2s' },
      }),
      silentLogger(),
    );
    port = sello.addresses.get('milter')!.port;
  });
  after(async () => {
    await sello?.close();
    await dns?.close();
    if (keysDir) await removeTempDir(keysDir);
  });

  /** Runs one script (asynchronously: sello answers in this process). */
  const run = async (script: string): Promise<string> => {
    const result = await new Promise<{ status: number | null; signal: string | null; stdout: string; stderr: string }>((resolve, reject) => {
      const child = spawn(MILTERTEST, ['-D', `port=${port}`, '-s', path.join(SCRIPTS, script)], { timeout: 30_000 });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      child.on('error', reject);
      child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr }));
    });
    assert.equal(result.status, 0, `miltertest ${script} (${result.status ?? result.signal}):\n${result.stdout}\n${result.stderr}`);
    return result.stdout;
  };

  test('sign-authenticated.lua: one DKIM-Signature inserted, d=example.org s=mt, nothing changed', async () => {
    assert.match(await run('sign-authenticated.lua'), /signed: .*a=ed25519-sha256;.*d=example\.org;/s);
  });

  test('spf-fail-at-rcpt.lua: SMFIR_REPLYCODE at RCPT, postmaster exempt', async () => {
    assert.match(await run('spf-fail-at-rcpt.lua'), /spf fail refused at RCPT/);
  });

  test('inbound-forged-ar.lua: Received-SPF and A-R inserted, the forged A-R deleted', async () => {
    assert.match(await run('inbound-forged-ar.lua'), /inbound checked: .*sello\.test;.*spf=pass/s);
  });
});

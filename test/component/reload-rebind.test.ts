// A reload that replaces a listener on the same address (issue 10, defect 10): the listening
// socket passes from the old listener to the new one, so a client connecting at that moment is
// greeted (by one or the other), never refused or reset.

import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { startSello } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import { captureLog } from '../helpers/log.ts';
import { SmtpDialog } from '../helpers/smtp-dialog.ts';
import { startSink } from '../helpers/smtp-sink.ts';
import { freePort } from '../helpers/tools.ts';

/** Connects and reads the first line: the greeting, or the error the connection ended with. */
function greeting(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    let text = '';
    socket.setEncoding('latin1');
    socket.on('data', (data: string) => {
      text += data;
      if (text.includes('\r\n')) {
        socket.destroy();
        resolve(text.split('\r\n')[0] as string);
      }
    });
    socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
    socket.on('close', () => resolve(text || 'closed without a greeting'));
  });
}

test('a listener rebound by a reload keeps accepting: every client connecting meanwhile is greeted', async (t) => {
  const sink = await startSink();
  t.after(() => sink.close());
  const port = await freePort();
  const config = (tls: 'none' | 'starttls') =>
    parseConfig({
      hostname: 'sello.test',
      listeners: [{ name: 'changed', role: 'submission', listen: `127.0.0.1:${port}`, trustedNetworks: ['127.0.0.1/32'], tls: { mode: tls } }],
      relay: { target: sink.url, starttls: 'never' },
      shutdown: { deadline: '1s' },
    });
  const log = captureLog();
  const running = await startSello(config('none'), log.logger);
  t.after(() => running.close());

  const results: string[] = [];
  let reloading = true;
  const hammer = async () => {
    while (reloading) results.push(await greeting(port));
  };
  const hammers = Array.from({ length: 8 }, hammer);
  for (let round = 0; round < 6; round++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(await running.reload(async () => config(round % 2 === 0 ? 'starttls' : 'none')), true);
  }
  await new Promise((resolve) => setTimeout(resolve, 50));
  reloading = false;
  await Promise.all(hammers);
  const refused = results.filter((line) => !line.startsWith('220 '));
  assert.ok(results.length > 50, `${results.length} connections tried`);
  assert.deepEqual(refused, [], `${refused.length} of ${results.length} connections were not greeted`);
  // The new listener serves: STARTTLS is offered after the last reload (starttls on even rounds, last round 5 → none).
  const dialog = await SmtpDialog.connect(port);
  assert.doesNotMatch(await dialog.command('EHLO client.test'), /STARTTLS/);
  await dialog.close();
});

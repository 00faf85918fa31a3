// The Debian package end to end (issue 13, part 1), on this machine, which must be disposable
// (CI): `npm run package:deb` builds it, lintian finds no error or warning, `apt-get install`
// installs it, `sello --version`, `sello keygen` and `sello check-config` run from it, the unit's
// exact ExecStart line runs as the sello user with the unit's capability and signs a message sent
// by swaks (verified by dkimpy), and remove then purge leave nothing but what Debian keeps.
// Needs root, dpkg-dev, lintian, swaks and dkimpy (.ci/run installs them); skips loudly
// elsewhere and fails under CI. Cleans up (purge, processes, files) even when a step fails.

import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { checkDebianPackaging, packageStatus, readUnit, run, serviceValue, startUnit, type Unit } from '../helpers/debian-package.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { verifyWithDkimpy } from '../helpers/dkimpy.ts';
import { checkDkimpy, checkSwaks, freePort, removeTempDir, suiteOptions, tempDir } from '../helpers/tools.ts';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const UNIT_FILE = '/lib/systemd/system/sello.service';
const CONFFILE = '/etc/sello/sello.yaml';
const noninteractive = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };

type Manifest = { version: string; devDependencies: Record<string, string> };

describe('Debian package: build, lintian, install, run as the unit, sign, remove, purge', suiteOptions(checkDebianPackaging(), checkSwaks(), checkDkimpy()), () => {
  let manifest: Manifest;
  let work: string;
  let deb: string;
  let installedFiles: string[] = [];
  let sello: ChildProcess | undefined;
  let dns: DnsServer | undefined;

  before(async () => {
    manifest = JSON.parse(await readFile(path.join(repoRoot, 'package.json'), 'utf8')) as Manifest;
    work = await tempDir(undefined, 'sello-deb-test-');
  });

  after(async () => {
    if (sello && sello.exitCode === null && sello.signalCode === null) sello.kill('SIGKILL');
    await dns?.close();
    if (packageStatus('sello') !== '') await run('apt-get', ['-o', 'DPkg::Lock::Timeout=120', 'purge', '-y', '-q', 'sello'], { env: noninteractive, timeoutMs: 300_000 });
    await removeTempDir(work);
  });

  test('npm run package:deb builds sello_<version>_amd64.deb', { timeout: 900_000 }, async () => {
    // gzip instead of xz: the same package in a fraction of the time (build-deb.sh).
    const build = await run('npm', ['run', '--silent', 'package:deb', '--', work], { cwd: repoRoot, env: { ...process.env, SELLO_DEB_COMPRESSION: 'gzip' }, timeoutMs: 880_000 });
    assert.equal(build.code, 0, build.stderr);
    deb = path.join(work, `sello_${manifest.version}_amd64.deb`);
    assert.equal(build.stdout.trim(), deb);
    const fields = await run('dpkg-deb', ['-f', deb, 'Package', 'Version', 'Architecture', 'Depends']);
    assert.match(fields.stdout, new RegExp(`^Package: sello\nVersion: ${manifest.version.replaceAll('.', '\\.')}\nArchitecture: amd64\nDepends: adduser, libc6 `));
    assert.doesNotMatch(fields.stdout, /nodejs/, 'the package must not depend on Debian\'s nodejs');
  });

  test('lintian: no errors and no warnings (overrides carry their reasons)', { timeout: 600_000 }, async () => {
    const lintian = await run('lintian', ['--fail-on', 'error,warning', deb], { timeoutMs: 580_000 });
    const tags = lintian.stdout.split('\n').filter((line) => /^[EW]: /.test(line));
    assert.deepEqual(tags, []);
    assert.equal(lintian.code, 0, lintian.stderr);
  });

  test('apt-get install: user sello, /var/lib/sello/keys 0700, the conffile, the pinned Node, no dev dependencies', { timeout: 300_000 }, async () => {
    const install = await run('apt-get', ['-o', 'DPkg::Lock::Timeout=120', 'install', '-y', '-q', `./${path.basename(deb)}`], { cwd: work, env: noninteractive, timeoutMs: 280_000 });
    assert.equal(install.code, 0, install.stdout + install.stderr);
    assert.equal(packageStatus('sello'), 'install ok installed');
    installedFiles = (await run('dpkg', ['-L', 'sello'])).stdout.trim().split('\n');

    const version = await run('sello', ['--version'], { cwd: '/' });
    assert.deepEqual(version, { code: 0, stdout: `sello ${manifest.version} (Node.js v${manifest.devDependencies['node']})\n`, stderr: '' });
    assert.deepEqual(await run('sello', ['version'], { cwd: '/' }), version);
    for (const devDependency of Object.keys(manifest.devDependencies)) {
      assert.equal(existsSync(path.join('/usr/lib/sello/node_modules', devDependency)), false, `dev dependency ${devDependency} shipped`);
    }
    assert.ok(existsSync('/usr/lib/sello/node_modules/mailauth'));

    const user = (await run('getent', ['passwd', 'sello'])).stdout.split(':');
    assert.ok(Number(user[2]) < 1000, `sello is a system user: ${user.join(':')}`);
    assert.equal(user[6]?.trim(), '/usr/sbin/nologin');
    const keys = await stat('/var/lib/sello/keys');
    assert.equal(keys.mode & 0o777, 0o700);
    assert.equal(keys.uid, Number(user[2]));
    assert.equal(keys.gid, Number(user[3]));
    assert.match((await run('dpkg-query', ['-W', '-f=${Conffiles}', 'sello'])).stdout, /^ \/etc\/sello\/sello\.yaml [0-9a-f]{32}$/m);

    // The man pages render without a groff warning; completion offers the commands.
    for (const page of ['sello', 'sello.yaml']) {
      const man = await run('man', ['--warnings', '-E', 'UTF-8', page], { env: { ...process.env, MANWIDTH: '80', MANPAGER: 'cat', PAGER: 'cat' } });
      assert.equal(man.code, 0, man.stderr);
      assert.equal(man.stderr, '', `man ${page}`);
    }
    assert.match((await run('man', ['5', 'sello.yaml'], { env: { ...process.env, MANPAGER: 'cat' } })).stdout, /signing\.keysDir/);
    const completion = await run('bash', ['-c', 'source /usr/share/bash-completion/bash_completion; source /usr/share/bash-completion/completions/sello; COMP_WORDS=(sello keyg); COMP_CWORD=1; COMP_LINE="sello keyg"; COMP_POINT=10; _sello; echo "${COMPREPLY[*]}"; COMP_WORDS=(sello keygen --sel); COMP_CWORD=2; COMP_LINE="sello keygen --sel"; COMP_POINT=18; _sello; echo "${COMPREPLY[*]}"']);
    assert.equal(completion.stdout, 'keygen\n--selector\n', completion.stderr);
  });

  test('the shipped conffile passes check-config (found without --config) and listens on loopback only', async () => {
    const environment = { ...process.env };
    delete environment['SELLO_CONFIG'];
    const check = await run('sello', ['check-config'], { cwd: '/', env: environment });
    assert.deepEqual(check, { code: 0, stdout: `${CONFFILE}: OK (1 listener(s), 0 signing key(s))\n`, stderr: '' });
    const shipped = parse(await readFile(CONFFILE, 'utf8')) as { listeners: { listen: string }[]; metrics: { listen: string } };
    for (const address of [...shipped.listeners.map((listener) => listener.listen), shipped.metrics.listen]) {
      assert.match(address, /^(127\.\d+\.\d+\.\d+|\[::1\]):\d+$/);
    }
  });

  test('keygen as sello, then the unit\'s ExecStart as sello with its capability: port 587, signed (dkimpy verifies), ExecReload reloads', { timeout: 180_000 }, async () => {
    const selector = `pkg${randomInt(1_000_000)}`;
    // No --keys-dir: keygen takes signing.keysDir of the conffile it finds (src/cli/keys-dir.ts).
    const keygen = await run('runuser', ['-u', 'sello', '--', 'sello', 'keygen', 'example.com', '--selector', selector, '--format', 'value'], { cwd: '/' });
    assert.equal(keygen.code, 0, keygen.stderr);
    assert.match(keygen.stderr, /^keys directory: \/var\/lib\/sello\/keys \(signing\.keysDir of \/etc\/sello\/sello\.yaml\)$/m);
    const key = await stat(`/var/lib/sello/keys/example.com/${selector}.pem`);
    assert.equal(key.mode & 0o777, 0o600);
    dns = await startDnsServer({ [`${selector}._domainkey.example.com`]: { TXT: [keygen.stdout.trim()] } });

    // The admin's edit of the one file: a submission listener on the privileged port 587 (of a
    // random loopback address, so nothing else on the machine holds it) and the dir: target.
    const host = `127.${randomInt(100, 250)}.${randomInt(1, 250)}.${randomInt(1, 250)}`;
    const config = [
      'hostname: sello-package.test',
      'listeners:',
      '  - { name: submission, role: submission, listen: "' + host + ':587", tls: { mode: none }, trustedNetworks: [127.0.0.0/8] }',
      'relay: { target: "dir:/var/lib/sello/mail" }',
      `signing: { keysDir: /var/lib/sello/keys, domains: { example.com: "${selector}" } }`,
      `metrics: { listen: "127.0.0.1:${await freePort()}" }`,
      'shutdown: { deadline: 5s }',
    ].join('\n');
    await writeFile(CONFFILE, `${config}\n`);
    const asSello = await run('runuser', ['-u', 'sello', '--', 'sello', 'check-config'], { cwd: '/' });
    assert.equal(asSello.stdout, `${CONFFILE}: OK (1 listener(s), 1 signing key(s))\n`, asSello.stderr);

    const unit: Unit = await readUnit(UNIT_FILE);
    // systemd's own check of the installed unit (its ExecStart and ExecReload programs exist).
    const verify = await run('systemd-analyze', ['verify', UNIT_FILE]);
    assert.deepEqual([verify.code, verify.stderr], [0, ''], verify.stdout);
    assert.equal(serviceValue(unit, 'ExecStart'), '/usr/bin/sello serve --config /etc/sello/sello.yaml');
    assert.equal(serviceValue(unit, 'User'), 'sello');
    const started = startUnit(unit);
    sello = started.child;
    let stderr = '';
    let stdout = '';
    sello.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    const listening = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`sello did not listen within 60 s:\n${stderr}\n${stdout}`)), 60_000);
      sello?.stderr?.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
        if (stderr.includes(`submission listening on ${host}:587`)) {
          clearTimeout(timer);
          resolve();
        }
      });
      sello?.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`sello exited ${code}:\n${stderr}\n${stdout}`));
      });
    });
    await listening;
    const status = await readFile(`/proc/${sello.pid}/status`, 'utf8');
    assert.match(status, new RegExp(`^Uid:\\s+${(await run('id', ['-u', 'sello'])).stdout.trim()}\\s`, 'm'), 'runs as sello');

    const swaks = await run('swaks', ['--server', `${host}:587`, '--from', 'alice@example.com', '--to', 'bob@example.net', '--header', 'Subject: from the Debian package', '--body', 'signed by the packaged sello'], { timeoutMs: 60_000 });
    assert.equal(swaks.code, 0, swaks.stdout + swaks.stderr);
    assert.match(swaks.stdout, /^<- {2}250 2\.0\.0 OK: queued as \S+\.eml$/m);

    const files = (await readdir('/var/lib/sello/mail')).filter((name) => name.endsWith('.eml'));
    assert.equal(files.length, 1, files.join(' '));
    const message = await readFile(path.join('/var/lib/sello/mail', files[0] as string));
    assert.match(message.toString('latin1'), new RegExp(`^DKIM-Signature: [^]*?d=example\\.com;[^]*?s=${selector};`, 'm'));
    const verification = await verifyWithDkimpy(message, dns);
    assert.deepEqual(
      verification.signatures.map((signature) => [signature.domain, signature.selector, signature.ok, signature.error]),
      [['example.com', selector, true, undefined]],
    );
    assert.match(stdout, /"msg":"transaction"/);

    // systemctl reload: the unit's ExecReload with $MAINPID (sello's own process: the wrapper and
    // setpriv exec) makes sello reload its config file.
    const reload = serviceValue(unit, 'ExecReload').replace('$MAINPID', String(sello.pid)).split(' ');
    assert.equal((await run(reload[0] as string, reload.slice(1))).code, 0);
    const reloadDeadline = Date.now() + 30_000;
    while (!stdout.includes('"msg":"config reloaded"') && Date.now() < reloadDeadline) await new Promise((resolve) => setTimeout(resolve, 100));
    assert.match(stdout, /"msg":"config reloaded"/, stderr);

    // systemctl stop: SIGTERM, exit 0 within the unit's TimeoutStopSec.
    const exited = new Promise<number | null>((resolve) => sello?.once('exit', (code) => resolve(code)));
    sello.kill('SIGTERM');
    const stopSeconds = Number(serviceValue(unit, 'TimeoutStopSec'));
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([exited, new Promise<string>((resolve) => (timer = setTimeout(() => resolve('timeout'), stopSeconds * 1000)))]);
    clearTimeout(timer);
    assert.equal(code, 0, stderr);
  });

  test('remove keeps the conffile, the keys and the user; purge leaves nothing', { timeout: 600_000 }, async () => {
    // systemd's prerm stop, for a sello a failed step above left running.
    if (sello && sello.exitCode === null && sello.signalCode === null) {
      const exited = new Promise((resolve) => sello?.once('exit', resolve));
      sello.kill('SIGKILL');
      await exited;
    }
    const remove = await run('apt-get', ['-o', 'DPkg::Lock::Timeout=120', 'remove', '-y', '-q', 'sello'], { env: noninteractive, timeoutMs: 280_000 });
    assert.equal(remove.code, 0, remove.stdout + remove.stderr);
    assert.equal(packageStatus('sello'), 'deinstall ok config-files');
    for (const gone of ['/usr/bin/sello', '/usr/lib/sello', UNIT_FILE]) assert.equal(existsSync(gone), false, gone);
    assert.ok(existsSync(CONFFILE), 'a changed conffile stays until purge');
    assert.equal((await readdir('/var/lib/sello/keys/example.com')).length, 1, 'keys stay until purge');
    assert.equal((await run('getent', ['passwd', 'sello'])).code, 0, 'the user stays until purge');

    const purge = await run('apt-get', ['-o', 'DPkg::Lock::Timeout=120', 'purge', '-y', '-q', 'sello'], { env: noninteractive, timeoutMs: 280_000 });
    assert.equal(purge.code, 0, purge.stdout + purge.stderr);
    assert.equal(packageStatus('sello'), '');
    for (const gone of ['/etc/sello', '/var/lib/sello', '/usr/lib/sello', '/usr/share/doc/sello']) assert.equal(existsSync(gone), false, gone);
    for (const file of installedFiles) {
      // Shared directories (/usr/bin, /usr/share/man/man8 …) stay; everything of sello's is gone.
      if (existsSync(file) && !(await stat(file)).isDirectory()) assert.fail(`${file} is left after purge`);
    }
    assert.notEqual((await run('getent', ['passwd', 'sello'])).code, 0, 'user sello is removed on purge');
    assert.notEqual((await run('getent', ['group', 'sello'])).code, 0, 'group sello is removed on purge');
    const systemdState = await run('sh', ['-c', 'find /etc/systemd /var/lib/systemd -name "*sello*" 2>/dev/null']);
    assert.equal(systemdState.stdout, '', 'no systemd state of the unit');
  });
});

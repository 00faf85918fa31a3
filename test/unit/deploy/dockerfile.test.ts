// The Docker image, as far as it can be checked without a Docker engine: the Dockerfile's shape
// (multi-stage Node 24 slim, non-root, volumes, ports, the container config as the image's
// config), that `npm ci --omit=dev` leaves every module sello imports, that the HEALTHCHECK
// command tells a healthy /healthz from a sick or absent one, and that the image's own
// ENTRYPOINT + CMD start sello with config/examples/docker.yaml until the HEALTHCHECK passes.

import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { access, cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import { keysForSigningTable, makeKeys } from '../../helpers/sello.ts';
import { freePort } from '../../helpers/tools.ts';

const root = path.join(import.meta.dirname, '../../..');
const execFileAsync = promisify(execFile);

type Instruction = { keyword: string; args: string };

/** Dockerfile instructions: comments dropped, backslash continuations joined. */
function instructions(text: string): Instruction[] {
  const logical = text
    .split('\n')
    .filter((line) => !line.trimStart().startsWith('#'))
    .join('\n')
    .replace(/\\\n/g, ' ');
  return logical
    .split('\n')
    .map((line) => line.trim())
    .filter(Boolean)
    .map((line) => {
      const [keyword = '', ...rest] = line.split(/\s+/);
      return { keyword: keyword.toUpperCase(), args: rest.join(' ') };
    });
}

const dockerfile = instructions(await readFile(path.join(root, 'Dockerfile'), 'utf8'));
const stages: Instruction[][] = [];
for (const instruction of dockerfile) {
  if (instruction.keyword === 'FROM') stages.push([]);
  stages.at(-1)?.push(instruction);
}
const finalStage = stages.at(-1) ?? [];
const all = (keyword: string, stage = finalStage) => stage.filter((instruction) => instruction.keyword === keyword);
const exec = (keyword: string): string[] => {
  const [instruction] = all(keyword);
  assert.ok(instruction, keyword);
  return JSON.parse(instruction.args) as string[];
};

type DockerYaml = { listeners: { listen: string }[]; signing: { keysDir: string; domains: Record<string, string | string[]> }; metrics: { listen: string } };
const dockerYamlText = await readFile(path.join(root, 'config/examples/docker.yaml'), 'utf8');
const dockerYaml = parse(dockerYamlText) as DockerYaml;
const portOf = (listen: string) => Number(/:(\d+)$/.exec(listen)?.[1]);

/** The HEALTHCHECK's command (exec form) and its options. */
function healthcheck(): { options: Record<string, string>; command: string[] } {
  const [instruction] = all('HEALTHCHECK');
  assert.ok(instruction, 'HEALTHCHECK');
  const match = /^((?:--[a-z-]+=\S+\s+)*)CMD\s+(\[.*\])$/.exec(instruction.args);
  assert.ok(match, `HEALTHCHECK in exec form: ${instruction.args}`);
  const options = Object.fromEntries([...(match[1] ?? '').matchAll(/--([a-z-]+)=(\S+)/g)].map((option) => [option[1] as string, option[2] as string]));
  return { options, command: JSON.parse(match[2] as string) as string[] };
}

/** Runs the HEALTHCHECK command as Docker would (argv as given), against `port`. */
async function runHealthcheck(port: number): Promise<number> {
  const [program, ...args] = healthcheck().command;
  assert.equal(program, 'node');
  try {
    await execFileAsync(process.execPath, args, { env: { ...process.env, SELLO_HEALTH_PORT: String(port) }, timeout: 10_000 });
    return 0;
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    assert.equal(typeof code, 'number', String(error));
    return code as number;
  }
}

test('multi-stage build on Node 24 slim: production dependencies only, a non-root user', () => {
  assert.ok(stages.length >= 2, 'multi-stage');
  for (const stage of stages) assert.match(stage[0]?.args ?? '', /^node:24-[a-z]+-slim\b/);
  const install = all('RUN', stages[0]).map((instruction) => instruction.args);
  assert.ok(install.some((command) => /^npm ci\b.*--omit=dev/.test(command)), install.join('; '));
  assert.ok(all('COPY').some((instruction) => /^--from=\S+ \/app\/node_modules /.test(instruction.args)));
  const users = all('USER').map((instruction) => instruction.args);
  assert.ok(users.length > 0 && !['root', '0'].includes(users.at(-1) ?? ''), `USER ${users.join(', ')}`);
  assert.deepEqual(exec('ENTRYPOINT'), ['node', 'bin/sello.js']);
  assert.equal(all('WORKDIR').at(-1)?.args, '/app');
});

test('every COPY source exists and is not excluded by .dockerignore', async () => {
  const ignored = (await readFile(path.join(root, '.dockerignore'), 'utf8'))
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
  for (const stage of stages) {
    for (const instruction of all('COPY', stage)) {
      if (instruction.args.startsWith('--from=')) continue;
      const sources = instruction.args.split(/\s+/).slice(0, -1);
      for (const source of sources) {
        await access(path.join(root, source));
        assert.ok(!ignored.includes(source.split('/')[0] ?? ''), `${source} is in .dockerignore`);
      }
    }
  }
  // Private keys never reach the build context.
  assert.ok(ignored.includes('keys'));
});

test("the image's config is config/examples/docker.yaml: listeners and metrics on 0.0.0.0, exposed, keys on a volume", () => {
  const copied = all('COPY').find((instruction) => instruction.args.startsWith('config/examples/docker.yaml '));
  assert.equal(copied?.args, 'config/examples/docker.yaml ./config/sello.yaml');
  const command = exec('CMD');
  assert.deepEqual(command, ['serve', '--config', '/app/config/sello.yaml']);
  for (const listen of [...dockerYaml.listeners.map((listener) => listener.listen), dockerYaml.metrics.listen]) {
    assert.match(listen, /^0\.0\.0\.0:\d+$/, 'a container listens on all its addresses');
  }
  const exposed = all('EXPOSE').flatMap((instruction) => instruction.args.split(/\s+/).map(Number));
  assert.deepEqual(exposed.sort(), [...dockerYaml.listeners.map((listener) => portOf(listener.listen)), portOf(dockerYaml.metrics.listen)].sort());
  const volumes = all('VOLUME').flatMap((instruction) => JSON.parse(instruction.args) as string[]);
  assert.ok(volumes.includes(dockerYaml.signing.keysDir), `${dockerYaml.signing.keysDir} in ${volumes.join(', ')}`);
});

test("the HEALTHCHECK asks /healthz on the config's metrics port with node's fetch", async (t) => {
  const { options, command } = healthcheck();
  assert.equal(command[0], 'node');
  assert.match(command.join(' '), /fetch\('http:\/\/127\.0\.0\.1:'\+\(process\.env\.SELLO_HEALTH_PORT\|\|(\d+)\)\+'\/healthz'/);
  assert.equal(/\|\|(\d+)\)/.exec(command.join(' '))?.[1], String(portOf(dockerYaml.metrics.listen)));
  assert.ok(options.interval && options.timeout && options['start-period']);

  let status = 200;
  const paths: string[] = [];
  const server = http.createServer((request, response) => {
    paths.push(request.url ?? '');
    response.writeHead(status).end(status === 200 ? 'ok\n' : 'not ok\n');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  const { port } = server.address() as net.AddressInfo;

  assert.equal(await runHealthcheck(port), 0);
  assert.deepEqual(paths, ['/healthz']);
  status = 503;
  assert.equal(await runHealthcheck(port), 1);
  assert.equal(await runHealthcheck(await freePort()), 1, 'nothing listening');
});

test('npm ci --omit=dev keeps every package sello imports at run time', async () => {
  const packageJson = JSON.parse(await readFile(path.join(root, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
  const files: string[] = [];
  const walk = async (directory: string): Promise<void> => {
    for (const entry of await readdir(directory, { withFileTypes: true })) {
      const full = path.join(directory, entry.name);
      if (entry.isDirectory()) await walk(full);
      else if (/\.(ts|js)$/.test(entry.name) && !entry.name.endsWith('.d.ts')) files.push(full);
    }
  };
  await walk(path.join(root, 'src'));
  await walk(path.join(root, 'bin'));
  const needed = new Map<string, string>();
  for (const file of files) {
    const text = await readFile(file, 'utf8');
    // `import type` is erased by type stripping; everything else is loaded.
    const specifiers = [
      ...[...text.matchAll(/^\s*(?:import|export)\s+(?!type\s)[^'"]*?from\s+['"]([^'"]+)['"]/gm)].map((match) => match[1] as string),
      ...[...text.matchAll(/^\s*import\s+['"]([^'"]+)['"]/gm)].map((match) => match[1] as string),
      ...[...text.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g)].map((match) => match[1] as string),
    ];
    for (const specifier of specifiers) {
      if (specifier.startsWith('.') || specifier.startsWith('node:') || specifier.startsWith('/')) continue;
      const name = specifier.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : (specifier.split('/')[0] as string);
      needed.set(name, path.relative(root, file));
    }
  }
  assert.ok(needed.has('smtp-server') && needed.has('prom-client'), [...needed.keys()].join(', '));
  for (const [name, file] of needed) assert.ok(packageJson.dependencies[name], `${file} imports ${name}, which is not a production dependency`);
});

/**
 * Builds the image's file tree without Docker: each stage's WORKDIR is a directory under
 * `scratch`, COPY copies from the checkout (or, with --from, from that stage's tree), and the
 * dependency stage's `RUN npm ci …` runs for real — the production install, with no dev
 * dependencies. Other RUN lines (mkdir/chown for the node user) need root and a user that only
 * the image has; they change no file sello reads. Returns the final stage's /app.
 */
async function stageImage(scratch: string): Promise<string> {
  const stageRoots = new Map<string, string>();
  let appDir = '';
  for (const [index, stage] of stages.entries()) {
    const from = stage[0]?.args ?? '';
    const name = /\bAS\s+(\S+)$/i.exec(from)?.[1] ?? String(index);
    const rootDir = path.join(scratch, `stage-${name}`);
    stageRoots.set(name, rootDir);
    let workdir = rootDir;
    for (const { keyword, args } of stage) {
      if (keyword === 'WORKDIR') {
        workdir = path.join(rootDir, args);
        await mkdir(workdir, { recursive: true });
      } else if (keyword === 'COPY') {
        const words = args.split(/\s+/);
        const fromStage = words[0]?.startsWith('--from=') ? (words.shift() as string).slice('--from='.length) : undefined;
        const destination = words.pop() as string;
        for (const source of words) {
          const sourcePath = fromStage ? path.join(stageRoots.get(fromStage) as string, source) : path.join(root, source);
          const target = path.resolve(workdir, destination);
          const intoDirectory = destination.endsWith('/') || destination === '.' || words.length > 1;
          await cp(sourcePath, intoDirectory ? path.join(target, path.basename(source)) : target, { recursive: true });
        }
      } else if (keyword === 'RUN' && /^npm ci\b/.test(args)) {
        await execFileAsync('npm', args.split(/\s+/).slice(1), { cwd: workdir, timeout: 300_000 });
      }
    }
    appDir = workdir;
  }
  return appDir;
}

test("the production install (npm ci --omit=dev) starts with the image's ENTRYPOINT and CMD until the HEALTHCHECK passes", async (t) => {
  // The image's /app is built as the Dockerfile builds it (stageImage); its
  // /app/config/sello.yaml is docker.yaml with free ports (the same 0.0.0.0 addresses) and its
  // /app/keys a temp dir (SELLO_KEYS_DIR) with the keys the signing table names.
  const scratch = await mkdtemp(path.join(tmpdir(), 'sello-image-'));
  t.after(() => rm(scratch, { recursive: true, force: true }));
  const app = await stageImage(scratch);
  await assert.rejects(access(path.join(app, 'node_modules/typescript')), 'no dev dependencies in the image');
  await access(path.join(app, 'node_modules/mailauth'));
  const ports = new Map<number, number>();
  for (const listen of [...dockerYaml.listeners.map((listener) => listener.listen), dockerYaml.metrics.listen]) ports.set(portOf(listen), await freePort());
  const config = dockerYamlText.replace(/^(\s*(?:- )?listen: 0\.0\.0\.0:)(\d+)$/gm, (_, prefix: string, port: string) => `${prefix}${String(ports.get(Number(port)))}`);
  const configFile = path.join(app, 'config/sello.yaml');
  await writeFile(configFile, config);
  const keys = keysForSigningTable(dockerYaml.signing.domains);
  const { keysDir } = await makeKeys(keys, path.join(scratch, 'keys'));

  const [entry, script] = exec('ENTRYPOINT');
  assert.equal(entry, 'node');
  const args = exec('CMD').map((arg) => (arg.startsWith('/app/') ? path.join(app, arg.slice('/app/'.length)) : arg));
  const child = spawn(process.execPath, [script as string, ...args], {
    cwd: app,
    env: { ...process.env, NODE_ENV: 'production', SELLO_KEYS_DIR: keysDir, SELLO_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });

  const metricsPort = ports.get(portOf(dockerYaml.metrics.listen)) as number;
  const deadline = Date.now() + 20_000;
  let healthy = false;
  while (!healthy && Date.now() < deadline && child.exitCode === null) {
    healthy = (await runHealthcheck(metricsPort)) === 0;
    if (!healthy) await new Promise((resolve) => setTimeout(resolve, 250));
  }
  assert.ok(healthy, `the HEALTHCHECK never passed; sello said:\n${output}`);

  // Every SMTP listener greets on its port.
  for (const listener of dockerYaml.listeners) {
    const port = ports.get(portOf(listener.listen)) as number;
    if (/implicit/.test(JSON.stringify(listener))) continue; // TLS from the first byte
    const socket = net.connect(port, '127.0.0.1');
    const [greeting] = (await once(socket, 'data')) as [Buffer];
    socket.destroy();
    assert.match(greeting.toString(), /^220 /, `${listener.listen}`);
  }

  child.kill('SIGTERM');
  const [code, signal] = await exited;
  assert.equal(signal, null, output);
  assert.equal(code, 0, output);
});

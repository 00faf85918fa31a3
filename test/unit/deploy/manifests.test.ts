// The deployment templates in deploy/ hold together: the Kubernetes manifests (probes on the
// metrics port's /healthz and /readyz, non-root, several replicas, keys from a read-only Secret
// at the config's keysDir — with each domain's rotation.yaml and every key it names, pending ones
// included (docs/rotation.md "Kubernetes") —, Services pointing at named container ports), the ConfigMap's
// sello.yaml passes `sello check-config`, the Prometheus scrape job finds the pods, and the
// systemd unit has the keys its hardening and signal handling depend on.

import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { parse, parseAllDocuments } from 'yaml';
import { main } from '../../../src/cli/run.ts';
import { parseConfig } from '../../../src/config/load.ts';
import { READINESS_CHECK_TIMEOUT_MS } from '../../../src/observability/http.ts';
import { parseRotation, type RotationState } from '../../../src/signing/rotation.ts';
import { keysForSigningTable, makeKeys } from '../../helpers/sello.ts';
import { runCommand } from '../../helpers/cli.ts';

const root = path.join(import.meta.dirname, '../../..');
const kubernetesDir = path.join(root, 'deploy/kubernetes');

type Manifest = { apiVersion: string; kind: string; metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> }; [key: string]: unknown };
type Port = { name?: string; containerPort?: number; port?: number; targetPort?: number | string; protocol?: string };
type Probe = { httpGet?: { path?: string; port?: number | string }; timeoutSeconds?: number };
type Container = {
  name: string;
  args?: string[];
  ports?: Port[];
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  lifecycle?: { preStop?: { exec?: { command?: string[] } } };
  securityContext?: { allowPrivilegeEscalation?: boolean; readOnlyRootFilesystem?: boolean; runAsUser?: number; capabilities?: { drop?: string[] } };
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
};
type Volume = {
  name: string;
  configMap?: { name: string };
  secret?: { secretName: string; defaultMode?: number; items?: { key: string; path: string; mode?: number }[] };
};
type Deployment = Manifest & {
  spec: {
    replicas: number;
    selector: { matchLabels: Record<string, string> };
    template: {
      metadata: { labels: Record<string, string>; annotations?: Record<string, string> };
      spec: {
        terminationGracePeriodSeconds?: number;
        securityContext?: { runAsNonRoot?: boolean; runAsUser?: number; fsGroup?: number };
        containers: Container[];
        volumes: Volume[];
      };
    };
  };
};
type Service = Manifest & { spec: { type?: string; externalTrafficPolicy?: string; selector: Record<string, string>; ports: Port[] } };
type SelloYaml = {
  listeners: { name: string; listen: string }[];
  signing: { keysDir: string; domains: Record<string, string | string[]> };
  metrics?: { listen?: string };
};

// Kubernetes reads manifests as YAML 1.1 (sigs.k8s.io/yaml): `defaultMode: 0400` is octal there.
const manifests: { file: string; manifest: Manifest }[] = [];
for (const file of (await readdir(kubernetesDir)).filter((name) => /\.ya?ml$/.test(name)).sort()) {
  for (const document of parseAllDocuments(await readFile(path.join(kubernetesDir, file), 'utf8'), { version: '1.1' })) {
    assert.deepEqual(document.errors, [], file);
    const manifest = document.toJS() as Manifest | null;
    if (manifest !== null) manifests.push({ file, manifest });
  }
}

function only<T extends Manifest>(kind: string, predicate: (manifest: T) => boolean = () => true): T {
  const found = manifests.map(({ manifest }) => manifest as T).filter((manifest) => manifest.kind === kind && predicate(manifest));
  assert.equal(found.length, 1, `expected one ${kind}, found ${found.length}`);
  return found[0] as T;
}

const deployment = only<Deployment>('Deployment');
const pod = deployment.spec.template;
const container = pod.spec.containers.find((candidate) => candidate.name === 'sello') as Container;
const configMap = only<Manifest & { data: Record<string, string> }>('ConfigMap');
const secret = only<Manifest & { stringData?: Record<string, string>; data?: Record<string, string> }>('Secret');
const selloYaml = parse(configMap.data['sello.yaml'] ?? '') as SelloYaml;
const secretEntries: Record<string, string> = { ...secret.data, ...secret.stringData };
/** The Secret's <domain>.rotation.yaml entries, parsed as sello parses rotation.yaml. */
const rotations: { domain: string; key: string; text: string; state: RotationState }[] = Object.entries(secretEntries)
  .filter(([key]) => key.endsWith('.rotation.yaml'))
  .map(([key, text]) => {
    const domain = key.slice(0, -'.rotation.yaml'.length);
    return { domain, key, text, state: parseRotation(text, `Secret ${key}`, domain) };
  });

function portOf(listen: string | undefined): number {
  const port = Number(/:(\d+)$/.exec(listen ?? '')?.[1]);
  assert.ok(Number.isInteger(port) && port > 0, `no port in ${String(listen)}`);
  return port;
}

function containerPort(reference: number | string | undefined): number | undefined {
  if (typeof reference === 'number') return reference;
  return container.ports?.find((port) => port.name === reference)?.containerPort;
}

test('every manifest is a named Kubernetes object', () => {
  assert.ok(manifests.length >= 5, manifests.map(({ file, manifest }) => `${file}: ${manifest.kind}`).join(', '));
  for (const { file, manifest } of manifests) {
    assert.match(manifest.apiVersion, /^(v1|apps\/v1|policy\/v1)$/, file);
    assert.ok(manifest.kind, file);
    assert.match(manifest.metadata.name, /^[a-z0-9-]+$/, file);
  }
});

test('Deployment: several replicas, non-root, no privilege escalation, a read-only root file system', () => {
  assert.ok(deployment.spec.replicas >= 2, `replicas: ${deployment.spec.replicas}`);
  for (const [label, value] of Object.entries(deployment.spec.selector.matchLabels)) assert.equal(pod.metadata.labels[label], value);
  assert.ok(container, 'a container named sello');
  const security = pod.spec.securityContext ?? {};
  assert.equal(security.runAsNonRoot, true);
  assert.ok((security.runAsUser ?? container.securityContext?.runAsUser ?? 0) > 0, 'a non-zero uid');
  assert.equal(container.securityContext?.allowPrivilegeEscalation, false);
  assert.equal(container.securityContext?.readOnlyRootFilesystem, true);
  assert.deepEqual(container.securityContext?.capabilities?.drop, ['ALL']);
  // The listeners need no privileged port inside the pod (the Service maps 25/587/465).
  for (const listener of selloYaml.listeners) assert.ok(portOf(listener.listen) > 1024, `${listener.name} listens on a privileged port`);
});

test('probes: liveness on /healthz, readiness on /readyz, both on the configured metrics port', () => {
  const metricsPort = portOf(selloYaml.metrics?.listen);
  assert.match(selloYaml.metrics?.listen ?? '', /^0\.0\.0\.0:/, 'the kubelet probes the pod IP, not loopback');
  assert.equal(container.livenessProbe?.httpGet?.path, '/healthz');
  assert.equal(container.readinessProbe?.httpGet?.path, '/readyz');
  assert.equal(containerPort(container.livenessProbe?.httpGet?.port), metricsPort);
  assert.equal(containerPort(container.readinessProbe?.httpGet?.port), metricsPort);
  // /readyz waits up to READINESS_CHECK_TIMEOUT_MS for a check: the probe must wait longer.
  assert.ok((container.readinessProbe?.timeoutSeconds ?? 1) * 1000 > READINESS_CHECK_TIMEOUT_MS, 'readinessProbe.timeoutSeconds');
  assert.equal(pod.metadata.annotations?.['prometheus.io/scrape'], 'true');
  assert.equal(pod.metadata.annotations?.['prometheus.io/port'], String(metricsPort));
  assert.equal(pod.metadata.annotations?.['prometheus.io/path'], '/metrics');
});

test('every listener and the metrics port is a container port', () => {
  const declared = new Set(container.ports?.map((port) => port.containerPort));
  for (const listen of [...selloYaml.listeners.map((listener) => listener.listen), selloYaml.metrics?.listen]) {
    assert.ok(declared.has(portOf(listen)), `${String(listen)} is not a container port`);
  }
});

test('config from the ConfigMap at the path the container is started with', () => {
  const volume = pod.spec.volumes.find((candidate) => candidate.configMap?.name === configMap.metadata.name);
  assert.ok(volume, 'a volume from the ConfigMap');
  const mount = container.volumeMounts?.find((candidate) => candidate.name === volume.name);
  assert.ok(mount);
  assert.equal(mount.readOnly, true);
  const args = container.args ?? [];
  assert.equal(args[0], 'serve');
  assert.equal(args[args.indexOf('--config') + 1], path.posix.join(mount.mountPath, 'sello.yaml'));
});

test("keys from the Secret, read-only, mode 0400 with fsGroup, at the config's keysDir as <domain>/<selector>.pem", () => {
  const volume = pod.spec.volumes.find((candidate) => candidate.secret?.secretName === secret.metadata.name);
  assert.ok(volume?.secret, 'a volume from the Secret');
  assert.equal(volume.secret.defaultMode, 0o400);
  for (const item of volume.secret.items ?? []) assert.ok(item.mode === undefined || (item.mode & 0o077) === 0, item.key);
  // Secret files are root-owned: without fsGroup the non-root user could not read a 0400 key.
  assert.ok((pod.spec.securityContext?.fsGroup ?? 0) > 0, 'fsGroup');
  // …which makes the files 0440: sello refuses group-readable keys unless told (signing.allowUnsafeKeys).
  assert.equal((selloYaml.signing as { allowUnsafeKeys?: boolean }).allowUnsafeKeys, true, 'allowUnsafeKeys for the 0440 Secret files');
  const mount = container.volumeMounts?.find((candidate) => candidate.name === volume.name);
  assert.equal(mount?.mountPath, selloYaml.signing.keysDir);
  assert.equal(mount?.readOnly, true);

  // The signing table's keys, and for a rotated domain its rotation.yaml and every key it names
  // (pending and retiring too): a Secret file without an item is not in the pod.
  const needed = [
    ...Object.entries(selloYaml.signing.domains).flatMap(([pattern, selectors]) => [selectors].flat().map((selector) => `${pattern.replace(/^\*\./, '')}/${selector}.pem`)),
    ...rotations.flatMap(({ domain, state }) => [`${domain}/rotation.yaml`, ...state.keys.map((key) => `${domain}/${key.selector}.pem`)]),
  ];
  const items = volume.secret.items ?? [];
  assert.deepEqual(items.map((item) => item.path).sort(), [...new Set(needed)].sort());
  for (const item of items) {
    assert.ok(item.key in secretEntries, `the Secret has no ${item.key}`);
    // "<domain>.<file>" → "<domain>/<file>", the one mapping docs/rotation.md tells the admin to write.
    const domain = item.path.slice(0, item.path.indexOf('/'));
    assert.equal(item.key, `${domain}.${item.path.slice(domain.length + 1)}`, item.key);
  }
});

test('Services: SMTP ports with the client address kept, metrics inside the cluster only', () => {
  const services = manifests.filter(({ manifest }) => manifest.kind === 'Service').map(({ manifest }) => manifest as Service);
  for (const service of services) {
    for (const [label, value] of Object.entries(service.spec.selector)) assert.equal(pod.metadata.labels[label], value, service.metadata.name);
    for (const port of service.spec.ports) assert.ok(containerPort(port.targetPort), `${service.metadata.name}: targetPort ${String(port.targetPort)} is not a container port`);
  }
  const smtp = services.find((service) => service.spec.ports.some((port) => port.port === 25));
  assert.ok(smtp, 'a Service with port 25');
  assert.deepEqual(smtp.spec.ports.map((port) => port.port).sort((a, b) => (a ?? 0) - (b ?? 0)), [25, 465, 587]);
  // SPF judges the client's address: the load balancer must not replace it with a node's.
  assert.equal(smtp.spec.externalTrafficPolicy, 'Local');
  assert.ok(!smtp.spec.ports.some((port) => containerPort(port.targetPort) === portOf(selloYaml.metrics?.listen)), 'metrics on the public Service');
  const metrics = services.find((service) => service.spec.ports.some((port) => containerPort(port.targetPort) === portOf(selloYaml.metrics?.listen)));
  assert.equal(metrics?.spec.type ?? 'ClusterIP', 'ClusterIP');
  // Mapping by role: the public ports reach the listeners meant for them.
  const listenerPort = (name: string) => portOf(selloYaml.listeners.find((listener) => listener.name === name)?.listen);
  const target = (port: number) => containerPort(smtp.spec.ports.find((candidate) => candidate.port === port)?.targetPort);
  assert.equal(target(25), listenerPort('mx'));
  assert.equal(target(587), listenerPort('submission'));
  assert.equal(target(465), listenerPort('submissions'));
});

test('the pods get longer to stop than the preStop pause plus shutdown.deadline', () => {
  const deadlineMs = parseConfig(selloYaml).shutdown.deadline;
  const preStop = container.lifecycle?.preStop?.exec?.command ?? [];
  const pauseMs = preStop[0] === 'sleep' ? Number(preStop[1]) * 1000 : 0;
  assert.ok(Number.isFinite(pauseMs), preStop.join(' '));
  const graceMs = (pod.spec.terminationGracePeriodSeconds ?? 30) * 1000;
  assert.ok(graceMs > pauseMs + deadlineMs, `terminationGracePeriodSeconds ${graceMs / 1000} <= ${pauseMs / 1000} + ${deadlineMs / 1000}`);
});

test("the ConfigMap's sello.yaml passes sello check-config", async (t) => {
  const scratch = await mkdtemp(path.join(tmpdir(), 'sello-manifests-'));
  t.after(() => rm(scratch, { recursive: true, force: true }));
  const file = path.join(scratch, 'sello.yaml');
  await writeFile(file, configMap.data['sello.yaml'] ?? '');
  const keys = keysForSigningTable(selloYaml.signing.domains);
  const { keysDir } = await makeKeys(keys, path.join(scratch, 'keys'));
  const { code, out, err } = await runCommand(main, ['check-config', '--config', file], { env: { SELLO_KEYS_DIR: keysDir } });
  assert.equal(code, 0, err);
  assert.match(out, /: OK \(3 listener\(s\), 2 signing key\(s\)\)/);

  // With the Secret's rotation.yaml and the pending keys it names, as the pods see /app/keys.
  assert.ok(rotations.length > 0, 'the Secret carries a rotation.yaml');
  for (const { domain, text, state } of rotations) {
    const known = new Set(keys.map((key) => `${key.domain}/${key.selector}`));
    await makeKeys(state.keys.filter((key) => !known.has(`${domain}/${key.selector}`)).map((key) => ({ domain, selector: key.selector, algorithm: key.algorithm ?? 'rsa' })), keysDir);
    await writeFile(path.join(keysDir, domain, 'rotation.yaml'), text);
    assert.ok(state.keys.some((key) => key.state === 'pending'), 'shown mid-rotation: new keys pending');
  }
  const rotating = await runCommand(main, ['check-config', '--config', file], { env: { SELLO_KEYS_DIR: keysDir } });
  assert.equal(rotating.code, 0, rotating.err);
});

test('the Prometheus scrape job keeps the annotated sello pods', async () => {
  type Relabel = { source_labels?: string[]; regex?: string; action?: string; target_label?: string };
  type ScrapeConfig = { job_name: string; kubernetes_sd_configs?: { role: string }[]; relabel_configs?: Relabel[]; static_configs?: { targets: string[] }[] };
  const config = parse(await readFile(path.join(root, 'deploy/prometheus/scrape-config.yaml'), 'utf8')) as { scrape_configs: ScrapeConfig[] };
  const job = config.scrape_configs.find((candidate) => candidate.kubernetes_sd_configs?.some((sd) => sd.role === 'pod'));
  assert.ok(job, 'a kubernetes_sd job with role pod');
  const keeps = (job.relabel_configs ?? []).filter((relabel) => relabel.action === 'keep');
  const [labelName, labelValue] = Object.entries(pod.metadata.labels)[0] as [string, string];
  const sdLabel = `__meta_kubernetes_pod_label_${labelName.replace(/[^a-zA-Z0-9_]/g, '_')}`;
  assert.ok(keeps.some((relabel) => relabel.source_labels?.[0] === sdLabel && new RegExp(`^(?:${relabel.regex ?? ''})$`).test(labelValue)), `keeps pods labelled ${labelName}=${labelValue}`);
  assert.ok(keeps.some((relabel) => relabel.source_labels?.[0] === '__meta_kubernetes_pod_annotation_prometheus_io_scrape'));
  const address = (job.relabel_configs ?? []).find((relabel) => relabel.target_label === '__address__');
  assert.deepEqual(address?.source_labels, ['__address__', '__meta_kubernetes_pod_annotation_prometheus_io_port']);
  // The address rewrite: pod IP (with or without the container port) + the annotated port.
  const match = new RegExp(`^(?:${address?.regex ?? ''})$`).exec(`10.1.2.3:2525;${pod.metadata.annotations?.['prometheus.io/port'] ?? ''}`);
  assert.equal(`${match?.[1] ?? ''}:${match?.[2] ?? ''}`, `10.1.2.3:${portOf(selloYaml.metrics?.listen)}`);
});

/** A unit file's [Section] Key=Value lines (no continuation lines in ours). */
async function readUnit(file: string): Promise<Map<string, Map<string, string[]>>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  for (const raw of (await readFile(file, 'utf8')).split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const section = /^\[(\w+)\]$/.exec(line);
    if (section) {
      current = new Map();
      sections.set(section[1] as string, current);
      continue;
    }
    const entry = /^([A-Za-z]+)=(.*)$/.exec(line);
    assert.ok(entry && current, `not a unit file line: ${line}`);
    current.set(entry[1] as string, [...(current.get(entry[1] as string) ?? []), entry[2] as string]);
  }
  return sections;
}

test('systemd unit: non-root with only CAP_NET_BIND_SERVICE, reload by SIGHUP, stop by SIGTERM with time to finish, hardened', async () => {
  const unit = await readUnit(path.join(root, 'deploy/systemd/sello.service'));
  const service = unit.get('Service');
  assert.ok(service, '[Service]');
  const one = (key: string): string => {
    const values = service.get(key);
    assert.equal(values?.length, 1, `${key} once`);
    return values?.[0] as string;
  };
  assert.ok(unit.get('Unit')?.get('Description'));
  assert.equal(unit.get('Install')?.get('WantedBy')?.[0], 'multi-user.target');
  assert.equal(one('User'), 'sello');
  // The Debian package's /usr/bin/sello (its own Node 24), never Debian's /usr/bin/node.
  assert.equal(one('ExecStart'), '/usr/bin/sello serve --config /etc/sello/sello.yaml');
  assert.equal(one('ExecReload'), '/bin/kill -HUP $MAINPID');
  assert.equal(one('KillSignal'), 'SIGTERM');
  // Above sello's default shutdown.deadline for in-flight transactions, with room to close.
  const defaultDeadlineMs = parseConfig({ listeners: [{ name: 'x', role: 'submission', listen: '127.0.0.1:0' }] }).shutdown.deadline;
  const stopMs = Number(one('TimeoutStopSec')) * 1000;
  assert.ok(stopMs >= defaultDeadlineMs + 10_000, `TimeoutStopSec=${one('TimeoutStopSec')}, shutdown.deadline ${defaultDeadlineMs / 1000}s`);
  assert.equal(one('AmbientCapabilities'), 'CAP_NET_BIND_SERVICE');
  assert.equal(one('CapabilityBoundingSet'), 'CAP_NET_BIND_SERVICE');
  assert.equal(one('NoNewPrivileges'), 'yes');
  assert.equal(one('ProtectSystem'), 'strict');
  assert.equal(one('ProtectHome'), 'yes');
  assert.equal(one('PrivateTmp'), 'yes');
  assert.equal(service.has('MemoryDenyWriteExecute'), false, "V8's JIT needs writable executable memory");
  // ProtectSystem=strict leaves only ReadWritePaths writable: it must hold the keys directory
  // the shipped configs use (and mail/ for a dir: target next to it).
  const writable = one('ReadWritePaths').split(/\s+/);
  for (const example of ['in-front-of-mta.yaml', 'content-filter.yaml']) {
    const config = parse(await readFile(path.join(root, 'config/examples', example), 'utf8')) as SelloYaml;
    assert.ok(writable.some((directory) => config.signing.keysDir.startsWith(`${directory}/`)), `${example}: ${config.signing.keysDir} is not under ${writable.join(' ')}`);
  }
});

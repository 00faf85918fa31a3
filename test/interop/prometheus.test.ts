// sello's /metrics as a real Prometheus (Debian prometheus) sees it: a scripted traffic mix
// through an in-process sello (loopback DNS server, SMTP sink), a Prometheus child scraping it
// every second, and PromQL over the HTTP API returning the expected totals. promtool checks the
// exposition text (`check metrics`), the generated prometheus.yml and deploy/prometheus/
// scrape-config.yaml (`check config`); the Grafana dashboard's queries must evaluate in the real
// Prometheus, and the deploy file's Kubernetes relabeling must turn a (simulated) sello pod into a
// scraped target.
// Gated: without prometheus/promtool this skips loudly on a workstation and fails under CI.

import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { parse, stringify } from 'yaml';
import { startDnsServer } from '../helpers/dns-server.ts';
import { checkMetricsText, promtool, startPrometheus } from '../helpers/prometheus.ts';
import { startTestSello } from '../helpers/sello.ts';
import { sendMail } from '../helpers/smtp-dialog.ts';
import { startSink } from '../helpers/smtp-sink.ts';
import { checkPrometheus, checkPromtool, requireTool, tempDir } from '../helpers/tools.ts';

const root = path.join(import.meta.dirname, '../..');

const ZONE = {
  'pass.example': { TXT: ['v=spf1 ip4:127.0.0.2 -all'] },
  'fail.example': { TXT: ['v=spf1 ip4:127.0.0.99 -all'] },
};

const message = (from: string, subject: string) =>
  `From: ${from}\r\nTo: bob@example.net\r\nSubject: ${subject}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <${subject}@x>\r\n\r\nHello.\r\n`;


async function eventually(condition: () => Promise<boolean>, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** "labels → value" of a vector, labels rendered without __name__/job/instance, sorted, for deepEqual. */
function byLabels(samples: { metric: Record<string, string>; value: number }[], ...keys: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const sample of samples) out[keys.map((key) => `${key}=${sample.metric[key] ?? ''}`).join(',')] = sample.value;
  return out;
}

test('a real Prometheus scrapes sello: PromQL returns the totals of a scripted traffic mix; promtool accepts /metrics', async (t) => {
  if (!requireTool(t, checkPrometheus(), checkPromtool())) return;
  const dns = await startDnsServer(ZONE as never);
  t.after(() => dns.close());
  const sink = await startSink();
  t.after(() => sink.close());
  const sello = await startTestSello(t, {
    keys: [{ domain: 'example.com', selector: 'rsa1', algorithm: 'rsa' }],
    config: {
      listeners: [
        { name: 'submission', role: 'submission', listen: '127.0.0.1:0', trustedNetworks: ['127.0.0.1/32'] },
        { name: 'mx', role: 'mx', listen: '127.0.0.1:0', greetingDelay: 0 },
      ],
      relay: { target: sink.url, starttls: 'never' },
      inbound: { localDomains: ['example.net'] },
      dns: { servers: [dns.address], timeout: '500ms' },
      metrics: { listen: '127.0.0.1:0' },
    },
    options: { operationsEndpoint: true, readinessCacheMs: 0 },
  });
  const metricsAddress = `127.0.0.1:${sello.running.operationsAddress!.port}`;
  // Started before the traffic: its startup overlaps with it.
  const prometheus = await startPrometheus(t, { job: 'sello', targets: [metricsAddress], scrapeInterval: '1s' });

  // submission: two signed (example.com has a key), one unsigned (no key for elsewhere.example).
  for (const subject of ['signed-1', 'signed-2']) {
    const sent = await sendMail(sello.port('submission'), { from: 'alice@example.com', to: ['bob@example.net'], data: message('alice@example.com', subject) });
    assert.match(sent.data ?? '', /^250 /);
  }
  let sent = await sendMail(sello.port('submission'), { from: 'carol@elsewhere.example', to: ['bob@example.net'], data: message('carol@elsewhere.example', 'unsigned') });
  assert.match(sent.data ?? '', /^250 /);
  // mx: SPF fail (refused at RCPT, not a transaction) and SPF pass (relayed).
  sent = await sendMail(sello.port('mx'), { from: 'alice@fail.example', to: ['bob@example.net'], data: message('alice@fail.example', 'spf-fail') }, { localAddress: '127.0.0.2' });
  assert.match(sent.rcpt[0] ?? '', /^550 5\.7\.23 /);
  sent = await sendMail(sello.port('mx'), { from: 'alice@pass.example', to: ['bob@example.net'], data: message('alice@pass.example', 'spf-pass') }, { localAddress: '127.0.0.2' });
  assert.match(sent.data ?? '', /^250 /);
  assert.equal(sink.messages.length, 4);

  const scrape = async () => (await fetch(`http://${metricsAddress}/metrics`)).text();
  await eventually(async () => !/^sello_active_connections\{[^}]*\} [1-9]/m.test(await scrape()), 'sessions to close');
  const trafficDone = Date.now();
  const text = await scrape();

  // promtool check metrics on exactly what Prometheus scrapes.
  const lint = checkMetricsText(text);
  assert.deepEqual(lint.problems, [], `promtool check metrics found problems:\n${lint.stdout}${lint.stderr}`);
  assert.equal(lint.status, 0, `promtool check metrics exit ${lint.status}:\n${lint.stdout}${lint.stderr}`);

  // promtool check config on the generated prometheus.yml.
  const config = promtool(['check', 'config', prometheus.configFile]);
  assert.equal(config.status, 0, `${config.stdout}${config.stderr}`);
  assert.match(config.stdout, /SUCCESS/);

  // A scrape that started after the traffic finished has every count.
  await prometheus.waitForScrape({ job: 'sello', after: trafficDone });
  const job = '{job="sello"}';
  assert.equal(await prometheus.value(`up${job}`), 1);
  assert.equal(await prometheus.value(`sum(sello_transactions_total{job="sello",outcome="relayed"})`), 4);
  assert.deepEqual(byLabels(await prometheus.query(`sum by (listener, outcome) (sello_transactions_total${job})`), 'listener', 'outcome'), {
    'listener=submission,outcome=relayed': 3,
    'listener=mx,outcome=relayed': 1,
  });
  assert.equal(await prometheus.value(`sello_dkim_signatures_total{job="sello",domain="example.com",result="signed"}`), 2);
  assert.deepEqual(byLabels(await prometheus.query(`sello_dkim_signatures_total${job}`), 'domain', 'selector', 'algorithm', 'result'), {
    'domain=example.com,selector=rsa1,algorithm=rsa-sha256,result=signed': 2,
  });
  assert.deepEqual(byLabels(await prometheus.query(`sum by (listener, reason) (sello_unsigned_messages_total${job})`), 'listener', 'reason'), {
    'listener=submission,reason=domain-not-configured': 1,
    'listener=mx,reason=listener-does-not-sign': 1,
  });
  assert.deepEqual(byLabels(await prometheus.query(`sum by (result) (sello_spf_results_total${job})`), 'result'), { 'result=fail': 1, 'result=pass': 1 });
  assert.equal(await prometheus.value(`sum(sello_smtp_replies_total{job="sello",listener="mx",stage="rcpt",code="550"})`), 1);
  const build = await prometheus.query(`sello_build_info${job}`);
  assert.equal(build.length, 1);
  const version = (JSON.parse(await readFile(path.join(root, 'package.json'), 'utf8')) as { version: string }).version;
  assert.equal(build[0]!.metric['version'], version);
  assert.equal(build[0]!.metric['node_version'], process.version);
  assert.equal(build[0]!.value, 1);
  assert.equal(build[0]!.metric['instance'], metricsAddress);

  // Histograms: bucket series are real histograms to PromQL (le label, cumulative, +Inf = count).
  const median = await prometheus.value(`histogram_quantile(0.5, sum by (le) (sello_transaction_duration_seconds_bucket${job}))`);
  assert.ok(Number.isFinite(median) && median > 0, `median transaction duration ${median}`);
  const perListener = byLabels(await prometheus.query(`histogram_quantile(0.9, sum by (listener, le) (sello_transaction_duration_seconds_bucket${job}))`), 'listener');
  assert.deepEqual(Object.keys(perListener).sort(), ['listener=mx', 'listener=submission']);
  for (const [listener, quantile] of Object.entries(perListener)) assert.ok(Number.isFinite(quantile) && quantile > 0, `${listener}: ${quantile}`);
  assert.equal(await prometheus.value(`sum(sello_transaction_duration_seconds_count${job})`), 4);
  assert.equal(await prometheus.value(`sum(sello_transaction_duration_seconds_bucket{job="sello",le="+Inf"})`), 4);

  // Every query of the Grafana dashboard parses and evaluates in the real Prometheus (variables
  // substituted as Grafana would for one selected job, all instances and all milter listeners).
  type Dashboard = { panels: { title: string; targets?: { expr?: string }[] }[] };
  const dashboard = JSON.parse(await readFile(path.join(root, 'deploy/grafana/sello-dashboard.json'), 'utf8')) as Dashboard;
  const expressions = dashboard.panels.flatMap((panel) => (panel.targets ?? []).flatMap((target) => (target.expr ? [{ panel: panel.title, expr: target.expr }] : [])));
  assert.ok(expressions.length > 10);
  for (const { panel, expr } of expressions) {
    const promql = expr.replaceAll('$__rate_interval', '1m').replaceAll('$__range', '5m').replaceAll('$job', 'sello').replaceAll('$instance', '.*').replaceAll('$milter', '.*');
    assert.doesNotMatch(promql, /\$/, `panel "${panel}": unsubstituted variable in ${expr}`);
    await prometheus.query(promql).catch((error: unknown) => assert.fail(`panel "${panel}": ${String(error)}`));
  }
});

test('deploy/prometheus/scrape-config.yaml: promtool accepts it; its Kubernetes relabeling makes a sello pod a scraped target', async (t) => {
  if (!requireTool(t, checkPrometheus(), checkPromtool())) return;
  const file = path.join(root, 'deploy/prometheus/scrape-config.yaml');
  const deploy = parse(await readFile(file, 'utf8')) as { scrape_configs: Record<string, unknown>[] };
  assert.ok(Array.isArray(deploy.scrape_configs), 'a prometheus.yml with scrape_configs');

  // Debian builds Prometheus without Kubernetes service discovery (its NEWS.Debian: "Kubernetes
  // support has been completely removed"), so its promtool refuses kubernetes_sd_configs. The file
  // as it is must pass, or fail for exactly that reason and nothing else.
  const asIs = promtool(['check', 'config', file]);
  const withoutKubernetesSd = asIs.status !== 0;
  if (withoutKubernetesSd) {
    const errors = `${asIs.stdout}${asIs.stderr}`.split('\n').filter((line) => /FAILED|line \d+:/.test(line));
    assert.deepEqual(
      errors.filter((line) => !/FAILED: parsing YAML file|field kubernetes_sd_configs not found in type config\.ScrapeConfig/.test(line)),
      [],
      `promtool check config ${file}:\n${asIs.stdout}${asIs.stderr}`,
    );
    t.diagnostic('this promtool has no Kubernetes SD (Debian build): kubernetes_sd_configs replaced by a simulated pod for the check');
  }

  // The same file with each kubernetes_sd_configs replaced by static targets carrying the labels
  // Kubernetes pod discovery would give: one annotated sello pod (its metrics port = sello's),
  // and two that the relabeling must drop (not annotated; another app).
  const dir = await tempDir(t, 'sello-scrape-config-');
  const sello = await startTestSello(t, {
    config: {
      listeners: [{ name: 'submission', role: 'submission', listen: '127.0.0.1:0', trustedNetworks: ['127.0.0.1/32'] }],
      relay: { target: 'smtp://127.0.0.1:9', starttls: 'never' },
      metrics: { listen: '127.0.0.1:0' },
    },
    options: { operationsEndpoint: true },
  });
  const metricsPort = sello.running.operationsAddress!.port;
  const pod = (name: string, app: string, scrape: string) => ({
    targets: ['127.0.0.1:2525'],
    labels: {
      __meta_kubernetes_namespace: 'mail',
      __meta_kubernetes_pod_name: name,
      __meta_kubernetes_pod_label_app_kubernetes_io_name: app,
      __meta_kubernetes_pod_annotation_prometheus_io_scrape: scrape,
      __meta_kubernetes_pod_annotation_prometheus_io_port: String(metricsPort),
      __meta_kubernetes_pod_annotation_prometheus_io_path: '/metrics',
    },
  });
  const simulated = deploy.scrape_configs.map((job) => {
    if (!('kubernetes_sd_configs' in job)) return job;
    const { kubernetes_sd_configs: _discovery, ...rest } = job;
    return { ...rest, static_configs: [pod('sello-0', 'sello', 'true'), pod('sello-1', 'sello', 'false'), pod('other-0', 'other', 'true')] };
  });
  assert.ok(simulated.some((job) => 'static_configs' in job && job['job_name'] === 'sello'), 'the deploy file has a Kubernetes job "sello"');
  const adapted = path.join(dir, 'scrape-config.yaml');
  await writeFile(adapted, stringify({ ...deploy, scrape_configs: simulated }));
  const checked = promtool(['check', 'config', withoutKubernetesSd ? adapted : file]);
  assert.equal(checked.status, 0, `${checked.stdout}${checked.stderr}`);
  assert.match(checked.stdout, /SUCCESS/);

  // Run the Kubernetes job (only: the hosts job names hosts that are not here) every second.
  const kubernetesJob = simulated.find((job) => job['job_name'] === 'sello')!;
  const prometheus = await startPrometheus(t, { job: 'sello', scrapeConfigs: [{ ...kubernetesJob, scrape_interval: '1s', scrape_timeout: '1s' }] });
  await prometheus.waitForScrape({ job: 'sello' });
  const targets = await prometheus.targets();
  assert.deepEqual(
    targets.map((target) => ({ url: target.scrapeUrl, health: target.health, namespace: target.labels['namespace'], pod: target.labels['pod'] })),
    [{ url: `http://127.0.0.1:${metricsPort}/metrics`, health: 'up', namespace: 'mail', pod: 'sello-0' }],
  );
  const build = await prometheus.query('sello_build_info{job="sello"}');
  assert.deepEqual(
    build.map((sample) => [sample.metric['namespace'], sample.metric['pod'], sample.metric['instance']]),
    [['mail', 'sello-0', `127.0.0.1:${metricsPort}`]],
  );
});

// The Grafana dashboard (deploy/grafana/sello-dashboard.json) may only ask for what sello
// exports: every sello_* metric in its queries must be in docs/metrics.md's table with the labels
// the query uses, and in the real /metrics output of src/observability/metrics.ts, with the type
// the docs give. A renamed metric or label then fails here instead of as an empty panel.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { createMetrics } from '../../../src/observability/metrics.ts';

const root = path.join(import.meta.dirname, '../../..');

type Target = { expr?: string; legendFormat?: string; datasource?: { type?: string; uid?: string } };
type Panel = { type: string; title: string; gridPos: { x: number; y: number; w: number; h: number }; datasource?: { uid?: string }; targets?: Target[] };
type Variable = { type: string; name: string; query: unknown; definition?: string; datasource?: { uid?: string } };
type Dashboard = { schemaVersion: number; uid: string; panels: Panel[]; templating: { list: Variable[] } };

const dashboard = JSON.parse(await readFile(path.join(root, 'deploy/grafana/sello-dashboard.json'), 'utf8')) as Dashboard;
const panels = dashboard.panels.filter((panel) => panel.type !== 'row');
const targets = panels.flatMap((panel) => (panel.targets ?? []).map((target) => ({ panel: panel.title, ...target })));

/** docs/metrics.md's table: name (or `prefix_*` pattern) → type and label names. */
type Documented = { type: string; labels: Set<string> };
const documented = new Map<string, Documented>();
for (const line of (await readFile(path.join(root, 'docs/metrics.md'), 'utf8')).split('\n')) {
  const cells = line.split('|').map((cell) => cell.trim());
  const names = [...(cells[1] ?? '').matchAll(/`(sello_[a-z0-9_*]+)`/g)].map((match) => match[1] as string);
  if (names.length === 0) continue;
  const type = (cells[2] ?? '').replace(/\s*\(.*$/, '');
  // "listener, outcome (`relayed`, …)" → listener, outcome; "—" → none.
  const labels = new Set(
    (cells[3] ?? '')
      .replace(/\([^)]*\)/g, '')
      .split(',')
      .map((label) => label.trim())
      .filter((label) => /^[a-z_]+$/.test(label)),
  );
  for (const name of names) documented.set(name, { type, labels });
}

function documentation(name: string): Documented | undefined {
  return documented.get(name) ?? [...documented].find(([pattern]) => pattern.endsWith('*') && name.startsWith(pattern.slice(0, -1)))?.[1];
}

/** sello_x_bucket/_sum/_count of a documented histogram → sello_x; anything else as it is. */
function baseName(name: string): string {
  const match = /^(.*)_(bucket|sum|count)$/.exec(name);
  return match && documentation(match[1] as string)?.type === 'histogram' ? (match[1] as string) : name;
}

function metricNames(expr: string): string[] {
  return [...new Set([...expr.matchAll(/\bsello_[a-zA-Z0-9_]+/g)].map((match) => match[0]))];
}

const variableQueries = dashboard.templating.list
  .filter((variable) => variable.type === 'query')
  .map((variable) => ({ name: variable.name, expr: typeof variable.query === 'string' ? variable.query : String((variable.query as { query?: string }).query) }));
const expressions = [...targets.map((target) => ({ where: `panel "${target.panel}"`, expr: target.expr ?? '' })), ...variableQueries.map((query) => ({ where: `variable $${query.name}`, expr: query.expr }))];
const used = new Set(expressions.flatMap(({ expr }) => metricNames(expr).map(baseName)));

test('docs/metrics.md has a table to check against', () => {
  assert.ok(documented.size >= 20, [...documented.keys()].join(', '));
  assert.deepEqual(documentation('sello_transactions_total'), { type: 'counter', labels: new Set(['listener', 'outcome']) });
  assert.deepEqual(documentation('sello_spf_duration_seconds'), { type: 'histogram', labels: new Set() });
});

test('Grafana dashboard shape: schema 39, a Prometheus ${datasource} variable used by every panel and query', () => {
  assert.equal(dashboard.schemaVersion, 39);
  assert.equal(dashboard.uid, 'sello-overview');
  const datasource = dashboard.templating.list.find((variable) => variable.name === 'datasource');
  assert.equal(datasource?.type, 'datasource');
  assert.equal(datasource?.query, 'prometheus');
  assert.ok(targets.length > 0);
  for (const panel of panels) {
    assert.equal(panel.datasource?.uid, '${datasource}', panel.title);
    assert.ok((panel.targets ?? []).length > 0, `panel "${panel.title}" has no query`);
  }
  for (const target of targets) {
    assert.equal(target.datasource?.uid, '${datasource}', target.panel);
    assert.ok(target.expr, `panel "${target.panel}" has an empty expr`);
  }
  for (const variable of dashboard.templating.list.filter((variable) => variable.type === 'query')) {
    assert.equal(variable.datasource?.uid, '${datasource}', variable.name);
  }
});

test('panels sit on the 24-column grid without overlapping', () => {
  const cells = new Map<string, string>();
  for (const panel of dashboard.panels) {
    const { x, y, w, h } = panel.gridPos;
    assert.ok(x >= 0 && w > 0 && x + w <= 24, `${panel.title}: x=${x} w=${w}`);
    for (let row = y; row < y + h; row++) {
      for (let column = x; column < x + w; column++) {
        const other = cells.get(`${row},${column}`);
        assert.equal(other, undefined, `"${panel.title}" overlaps "${other ?? ''}"`);
        cells.set(`${row},${column}`, panel.title);
      }
    }
  }
});

test('the dashboard covers the operations view: throughput, outcomes, refusals, SPF, signatures, latency, relay errors, connections, key age', () => {
  for (const name of [
    'sello_transactions_total',
    'sello_smtp_replies_total',
    'sello_spf_results_total',
    'sello_dkim_signatures_total',
    'sello_transaction_duration_seconds',
    'sello_relay_duration_seconds',
    'sello_spf_duration_seconds',
    'sello_relay_errors_total',
    'sello_active_connections',
    'sello_key_age_seconds',
  ]) {
    assert.ok(used.has(name), `no panel uses ${name}`);
  }
  const latency = targets.filter((target) => target.expr?.includes('histogram_quantile'));
  assert.ok(latency.length >= 3);
  for (const target of latency) assert.match(target.expr ?? '', /histogram_quantile\(0\.\d+, sum by \(le\b[^)]*\) \(rate\(sello_[a-z_]+_seconds_bucket\{/, target.panel);
  const refusals = targets.find((target) => target.expr?.includes('sello_smtp_replies_total'));
  assert.match(refusals?.expr ?? '', /code=~"\[45\]\.\."/);
});

test('every metric a query names is in docs/metrics.md, histogram series only of histograms', () => {
  for (const { where, expr } of expressions) {
    for (const series of metricNames(expr)) {
      const name = baseName(series);
      const docs = documentation(name);
      assert.ok(docs, `${where}: ${series} is not in docs/metrics.md`);
      if (/_(bucket|sum|count)$/.test(series) && name === series) {
        assert.notEqual(docs.type, 'histogram', `${where}: ${series}`);
      }
      if (series.endsWith('_bucket')) assert.equal(docs.type, 'histogram', `${where}: ${series} is not a histogram's series`);
    }
  }
});

test('every label a query or legend uses is one docs/metrics.md gives its metrics', () => {
  const scrapeLabels = ['job', 'instance'];
  for (const { where, expr } of expressions) {
    const names = metricNames(expr).map(baseName);
    const allowed = new Set([...scrapeLabels, ...names.flatMap((name) => [...(documentation(name)?.labels ?? [])])]);
    if (names.some((name) => documentation(name)?.type === 'histogram')) allowed.add('le');
    const grouped = [...expr.matchAll(/\b(?:by|on|group_left|group_right|without)\s*\(([^)]*)\)/g)].flatMap((match) => (match[1] ?? '').split(','));
    const matched = [...expr.matchAll(/\{([^}]*)\}/g)].flatMap((match) => [...(match[1] ?? '').matchAll(/([a-z_]+)\s*[=!]~?/g)].map((label) => label[1] ?? ''));
    const legend = targets.find((target) => target.expr === expr)?.legendFormat ?? '';
    const shown = [...legend.matchAll(/\{\{\s*([a-z_]+)\s*\}\}/g)].map((match) => match[1] ?? '');
    for (const label of [...grouped, ...matched, ...shown].map((label) => label.trim()).filter(Boolean)) {
      assert.ok(allowed.has(label), `${where}: label "${label}" is not one of ${[...allowed].join(', ')} (${expr})`);
    }
  }
});

test("every metric the dashboard uses is in sello's real /metrics output, with the documented type", async () => {
  const metrics = createMetrics();
  const exposition = await metrics.registry.metrics();
  const types = new Map([...exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((match) => [match[1] as string, match[2] as string]));
  assert.ok(types.size > 0);
  for (const name of used) {
    assert.ok(types.has(name), `${name} is not exported by src/observability/metrics.ts`);
    const docs = documentation(name);
    // docs "gauge (1)" is a gauge; prom-client's default metrics are documented as a pattern.
    if (docs && docs.type !== '—') assert.equal(types.get(name), docs.type, name);
  }
});

test('key rotation and the milter: panels for sello_dkim_key_state and promotions, and milter panels on the $milter listeners', () => {
  assert.ok(used.has('sello_dkim_key_state'), 'no panel uses sello_dkim_key_state');
  assert.ok(used.has('sello_dkim_key_promotions_total'), 'no panel uses sello_dkim_key_promotions_total');
  const states = targets.find((target) => target.expr?.includes('sello_dkim_key_state'));
  assert.match(states?.expr ?? '', /^sum by \(domain, selector, state\) \(sello_dkim_key_state\{/, 'processes per key and state: a fleet switch shows as counts moving');
  const promotions = targets.find((target) => target.expr?.includes('sello_dkim_key_promotions_total'));
  assert.match(promotions?.expr ?? '', /increase\(sello_dkim_key_promotions_total\{[^}]*\}\[\$__range\]\)/, 'a counter is shown as its increase');

  // No metric is milter-only (docs/metrics.md): the milter's are the listener-labelled ones,
  // chosen by a variable over the listener names, "milter" (docs/milter.md's name) by default.
  const milter = dashboard.templating.list.find((variable) => variable.name === 'milter') as Variable & { current?: { value?: string[] } };
  assert.equal(milter?.type, 'query');
  assert.match(milter.definition ?? '', /^label_values\(sello_active_connections\{job=~"\$job"\}, listener\)$/);
  assert.deepEqual(milter.current?.value, ['milter']);
  const onMilter = targets.filter((target) => target.expr?.includes('listener=~"$milter"'));
  const milterMetrics = new Set(onMilter.flatMap((target) => metricNames(target.expr ?? '')));
  assert.deepEqual([...milterMetrics].sort(), ['sello_active_connections', 'sello_smtp_replies_total', 'sello_transactions_total']);
  for (const target of onMilter) assert.match(target.panel, /^Milter: /);
});

import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ALERTS, alertNamed, alertRulesYaml, grafanaDashboard } from './index.js';

const repo = (path: string) => readFileSync(new URL(`../../../${path}`, import.meta.url), 'utf8');

/** Metric names the services register with prom-client, histograms with their series. */
function registeredMetrics(): Set<string> {
  const sources = [
    'services/relay/src/metrics.ts',
    'services/projector/src/metrics.ts',
    'services/shop-api/src/app.ts',
  ].map(repo);
  const names = new Set<string>();
  for (const source of sources) {
    for (const [, kind, name = ''] of source.matchAll(/new (\w+)\(\{\s*name: '(\w+)'/g)) {
      names.add(name);
      if (kind === 'Histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(name + s);
    }
    // The relay's gauges made by a helper: gauge('name', 'help').
    for (const [, name = ''] of source.matchAll(/\bgauge\(\s*'(\w+)'/g)) names.add(name);
  }
  return names;
}

const KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset']);

/** The metric names a PromQL expression selects (not its functions, labels or keywords). */
function metricsIn(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, '')
    .replace(/\[[^\]]*\]/g, '')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '');
  return [...bare.matchAll(/\b[a-zA-Z_:][\w:]*\b(?!\s*\()/g)]
    .map(([name]) => name)
    .filter((name) => !KEYWORDS.has(name));
}

interface DashboardPanel {
  type: string;
  description?: string;
  targets?: { expr: string }[];
  fieldConfig?: { defaults: { thresholds: { steps: { value: number | null }[] } } };
}
const panels = (grafanaDashboard() as { panels: DashboardPanel[] }).panels;

describe('alert definitions', () => {
  it('have unique names, and every field an alert rule needs', () => {
    expect(new Set(ALERTS.map((a) => a.name)).size).toBe(ALERTS.length);
    for (const alert of ALERTS) {
      expect(alert.name).toMatch(/^Sluice[A-Za-z]+$/);
      expect(alert.for).toMatch(/^\d+[smh]$/);
      expect(alert.summary.length).toBeGreaterThan(10);
      expect(alert.description.length).toBeGreaterThan(60);
    }
    expect(alertNamed('SluiceSlotLagHigh').thresholds).toEqual({ lagBytes: 1024 ** 3 });
    expect(() => alertNamed('SluiceNoSuchAlert')).toThrow(/SluiceNoSuchAlert/);
  });

  it('are what the committed rule file holds (run `pnpm alerts:generate` after a change)', () => {
    expect(repo('infra/prometheus/sluice-alerts.yml')).toBe(alertRulesYaml());
  });

  it('are what the committed dashboard holds (run `pnpm alerts:generate` after a change)', () => {
    expect(JSON.parse(repo('infra/grafana/sluice-dashboard.json'))).toEqual(grafanaDashboard());
  });
});

describe('PromQL of the alerts and the dashboard', () => {
  const registered = registeredMetrics();
  const dashboardExprs = panels.flatMap((panel) => panel.targets?.map((t) => t.expr) ?? []);

  it('finds the names the services register', () => {
    expect(registered).toContain('sluice_relay_paused');
    expect(registered).toContain('sluice_projector_apply_latency_seconds_bucket');
    expect(metricsIn('sum by (job) (rate(x_total{a="b"}[5m])) > 2 and on (job) y')).toEqual([
      'x_total',
      'y',
    ]);
  });

  it.each([
    ['alert rules', ALERTS.map((alert) => alert.expr)],
    ['dashboard', dashboardExprs],
  ])('of the %s select only metrics the services register', (_, exprs) => {
    expect(exprs.length).toBeGreaterThan(10);
    for (const expr of exprs) {
      const unknown = metricsIn(expr).filter((name) => !registered.has(name));
      expect(unknown, expr).toEqual([]);
      expect(metricsIn(expr).length, expr).toBeGreaterThan(0);
    }
  });
});

describe('the dashboard', () => {
  it('draws every alert threshold on a panel that names the alert', () => {
    for (const alert of ALERTS) {
      const values = Object.values(alert.thresholds);
      if (values.length === 0) continue;
      const panel = panels.find((p) => p.description?.includes(alert.name));
      const steps = panel?.fieldConfig?.defaults.thresholds.steps.map((s) => s.value);
      expect(steps, alert.name).toEqual(expect.arrayContaining(values));
    }
  });
});

// The alert rules as Prometheus reads them: promtool checks the rule file and the example
// configuration, and runs the unit tests that make every alert fire and stay silent.
import { ALERTS } from '@sluice/alerts';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

const dir = fileURLToPath(new URL('../../infra/prometheus/', import.meta.url));

/** Runs promtool in infra/prometheus; its exit status and everything it printed. */
function promtool(...args: string[]): Promise<{ status: number; output: string }> {
  return new Promise((resolve, reject) => {
    execFile('promtool', args, { cwd: dir }, (error, stdout, stderr) => {
      if (error !== null && typeof error.code !== 'number') {
        reject(
          new Error(`promtool did not run (${error.message}); infra/bootstrap.sh installs it`),
        );
        return;
      }
      resolve({ status: error === null ? 0 : Number(error.code), output: stdout + stderr });
    });
  });
}

interface RuleTest {
  alertname: string;
  exp_alerts?: { exp_labels: Record<string, string> }[];
}
interface TestFile {
  rule_files: string[];
  tests: { alert_rule_test?: RuleTest[] }[];
}

describe('promtool', () => {
  it('accepts the rule file with every alert, and the example configuration', async () => {
    const rules = await promtool('check', 'rules', 'sluice-alerts.yml');
    expect(rules.output).toContain(`SUCCESS: ${ALERTS.length} rules found`);
    expect(rules.status, rules.output).toBe(0);
    const config = await promtool('check', 'config', 'prometheus.yml');
    expect(config.status, config.output).toBe(0);
  });

  it('passes the rule unit tests', async () => {
    const { status, output } = await promtool('test', 'rules', 'sluice-alerts.test.yml');
    expect(status, output).toBe(0);
    expect(output).toContain('SUCCESS');
  });

  it('is given, for every alert, a case where it fires and one where it stays silent', () => {
    const file = parse(readFileSync(`${dir}/sluice-alerts.test.yml`, 'utf8')) as TestFile;
    expect(file.rule_files).toEqual(['sluice-alerts.yml']);
    const cases = file.tests.flatMap((test) => test.alert_rule_test ?? []);
    const names = new Set(ALERTS.map((alert) => alert.name));
    for (const { alertname } of cases)
      expect(names, 'an alert the rules lack').toContain(alertname);
    for (const alert of ALERTS) {
      const own = cases.filter((c) => c.alertname === alert.name);
      const firing = own.flatMap((c) => c.exp_alerts ?? []);
      expect(firing.length, `${alert.name} fires`).toBeGreaterThan(0);
      for (const { exp_labels } of firing) expect(exp_labels.severity).toBe(alert.severity);
      const silent = own.filter((c) => (c.exp_alerts ?? []).length === 0);
      expect(silent.length, `${alert.name} stays silent`).toBeGreaterThan(0);
    }
  });
});

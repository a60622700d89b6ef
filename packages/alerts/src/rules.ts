import { Document } from 'yaml';
import { ALERTS, type AlertStage } from './alerts.js';

const STAGES: readonly AlertStage[] = ['outbox', 'slot', 'relay', 'kafka', 'projection'];

/**
 * The Prometheus rule file of {@link ALERTS}: one group per stage, each alert labelled with its
 * `severity` and `stage`. `pnpm alerts:generate` writes it to `infra/prometheus/sluice-alerts.yml`.
 *
 * @example
 * writeFileSync('sluice-alerts.yml', alertRulesYaml());
 */
export function alertRulesYaml(): string {
  const groups = STAGES.map((stage) => ({
    name: `sluice-${stage}`,
    rules: ALERTS.filter((alert) => alert.stage === stage).map((alert) => ({
      alert: alert.name,
      expr: alert.expr,
      for: alert.for,
      labels: { severity: alert.severity, stage: alert.stage },
      annotations: { summary: alert.summary, description: alert.description },
    })),
  }));
  const document = new Document({ groups });
  document.commentBefore =
    ' Sluice alerts. Generated from packages/alerts by `pnpm alerts:generate`: edit them there.';
  return document.toString({ lineWidth: 0, singleQuote: true });
}

// `pnpm alerts:generate`: writes the rule file and the dashboard from the definitions here.
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { format, resolveConfig } from 'prettier';
import { grafanaDashboardJson } from './dashboard.js';
import { alertRulesYaml } from './rules.js';

const root = (path: string) => fileURLToPath(new URL(`../../../${path}`, import.meta.url));

writeFileSync(root('infra/prometheus/sluice-alerts.yml'), alertRulesYaml());
// Formatted as the repository's Prettier check wants it; the test compares the parsed JSON.
const dashboard = root('infra/grafana/sluice-dashboard.json');
const options = { ...(await resolveConfig(dashboard)), filepath: dashboard };
writeFileSync(dashboard, await format(grafanaDashboardJson(), options));

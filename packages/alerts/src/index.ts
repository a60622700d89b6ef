export {
  ALERTS,
  alertNamed,
  type AlertDefinition,
  type AlertSeverity,
  type AlertStage,
} from './alerts.js';
export { grafanaDashboard, grafanaDashboardJson } from './dashboard.js';
export { alertRulesYaml } from './rules.js';

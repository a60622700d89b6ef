// Alerts: every rule with its thresholds, and the ones firing now.
import { useEffect, useState } from 'preact/hooks';
import { api, type Alerts } from '../api.js';
import { measure } from '../format.js';
import { Badge } from '../ui.js';
import { AlertList } from './overview.js';

const REFRESH_MS = 5000;

export function AlertsPage() {
  const [alerts, setAlerts] = useState<Alerts | undefined>(undefined);
  useEffect(() => {
    const load = (): void => void api<Alerts>('/alerts').then(setAlerts, () => undefined);
    load();
    const timer = setInterval(load, REFRESH_MS);
    return () => clearInterval(timer);
  }, []);
  if (alerts === undefined) return <p class="loading">Loading…</p>;
  return (
    <>
      <section>
        <h2>Active</h2>
        <AlertList alerts={alerts.active} testId="alerts-active" />
      </section>
      <section>
        <h2>Rules</h2>
        <table data-testid="alert-rules">
          <thead>
            <tr>
              <th>rule</th>
              <th>severity</th>
              <th>stage</th>
              <th>summary</th>
              <th>thresholds</th>
            </tr>
          </thead>
          <tbody>
            {alerts.rules.map((rule) => (
              <tr key={rule.name} data-testid="alert-rule">
                <td>{rule.name}</td>
                <td>
                  <Badge status={rule.severity}>{rule.severity}</Badge>
                </td>
                <td>{rule.stage}</td>
                <td>{rule.summary}</td>
                <td>
                  {Object.entries(rule.thresholds)
                    .map(([name, value]) => `${name} ${measure(name, value)}`)
                    .join(', ')}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
    </>
  );
}

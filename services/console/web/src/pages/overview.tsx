// Overview: a tile per stage coloured by status, throughput, end-to-end latency, active alerts.
import type { ActiveAlert, Overview, Stage } from '../api.js';
import { duration, measure, num, time } from '../format.js';
import { Badge, Facts } from '../ui.js';

const STAGE_LABELS: Record<Stage['stage'], string> = {
  api: 'API',
  outbox: 'Outbox',
  slot: 'Slot',
  relay: 'Relay',
  kafka: 'Kafka',
  projection: 'Projection',
};

export function AlertList({ alerts, testId }: { alerts: ActiveAlert[]; testId: string }) {
  if (alerts.length === 0) return <p data-testid={testId}>No active alerts.</p>;
  return (
    <ul class="alerts" data-testid={testId}>
      {alerts.map((alert) => (
        <li key={`${alert.name}-${alert.stage}`} data-testid="active-alert">
          <Badge status={alert.severity === 'critical' ? 'critical' : 'warning'}>
            {alert.severity}
          </Badge>{' '}
          <strong>{alert.name}</strong> ({alert.stage}): {alert.summary} — value{' '}
          {measure(alert.name, alert.value)}, since {time(alert.since)}
        </li>
      ))}
    </ul>
  );
}

export function OverviewPage({ overview }: { overview: Overview | undefined }) {
  if (overview === undefined) return <p class="loading">Waiting for the first update…</p>;
  return (
    <>
      <section class="tiles" aria-label="Stages">
        {overview.stages.map((stage) => (
          <article
            key={`${stage.stage}-${stage.name}`}
            class={`tile tile-${stage.status}`}
            data-testid={`stage-${stage.stage}-${stage.name}`}
            data-status={stage.status}
          >
            <h2>{STAGE_LABELS[stage.stage]}</h2>
            <p class="name">{stage.name}</p>
            <Badge status={stage.status} />
            {stage.reason !== undefined && <p class="reason">{stage.reason}</p>}
            <p class="throughput" data-testid="throughput">
              {stage.throughputPerSecond === undefined
                ? '—'
                : `${num(stage.throughputPerSecond)} /s`}
            </p>
          </article>
        ))}
      </section>
      <section>
        <h2>End-to-end latency</h2>
        <Facts
          items={[
            ['p50', duration(overview.latency.p50Ms), 'latency-p50'],
            ['p99', duration(overview.latency.p99Ms), 'latency-p99'],
            ['updated', time(overview.at), 'overview-at'],
          ]}
        />
      </section>
      <section>
        <h2>Active alerts</h2>
        <AlertList alerts={overview.alerts} testId="overview-alerts" />
      </section>
    </>
  );
}

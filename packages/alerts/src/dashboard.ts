import { ACTIVE_PROJECTION_LAG, alertNamed } from './alerts.js';

/** One graph: its queries, its unit, and the alerts whose thresholds it draws as lines. */
interface PanelSpec {
  title: string;
  description: string;
  /** PromQL and its legend. */
  queries: readonly (readonly [expr: string, legend: string])[];
  /** A Grafana unit: `bytes`, `s`, `short`, `ops`. */
  unit: string;
  alerts?: readonly string[];
  /** `below`: values under the alerts' thresholds are the bad ones (safe WAL size). */
  bad?: 'above' | 'below';
}

interface RowSpec {
  title: string;
  panels: readonly PanelSpec[];
}

const DATASOURCE = { type: 'prometheus', uid: '${datasource}' } as const;
const rate = (metric: string, by: string) => `sum by (${by}) (rate(${metric}[5m]))`;
const p99 = (metric: string, by: string) =>
  `histogram_quantile(0.99, sum by (${by}, le) (rate(${metric}_bucket[5m])))`;

const ROWS: readonly RowSpec[] = [
  {
    title: 'Overview',
    panels: [
      {
        title: 'Events published and applied',
        description: 'Outbox events Kafka acknowledged, and events applied to read models.',
        queries: [
          [
            rate('sluice_relay_events_published_total', 'aggregate_type'),
            'published {{aggregate_type}}',
          ],
          [rate('sluice_projector_events_applied_total', 'projection'), 'applied {{projection}}'],
        ],
        unit: 'ops',
      },
      {
        title: 'Relays leading',
        description: 'Relay processes leading, per job: exactly one should.',
        queries: [['sum by (job) (sluice_relay_leader)', '{{job}}']],
        unit: 'short',
      },
      {
        title: 'API requests',
        description: "shop-api's requests per second, by status.",
        queries: [[rate('http_requests_total', 'status'), '{{status}}']],
        unit: 'reqps',
      },
    ],
  },
  {
    title: 'Slot & relay',
    panels: [
      {
        title: 'Slot lag',
        description:
          'WAL the slot retains for the relay (pg_current_wal_lsn() - confirmed_flush_lsn).',
        queries: [['max by (job) (sluice_relay_slot_lag_bytes)', '{{job}}']],
        unit: 'bytes',
        alerts: ['SluiceSlotLagHigh', 'SluiceSlotLagCritical'],
      },
      {
        title: 'Safe WAL size',
        description: 'WAL that can still be written before the slot is lost (-1: unlimited).',
        queries: [['min by (job) (sluice_relay_slot_safe_wal_size_bytes)', '{{job}}']],
        unit: 'bytes',
        alerts: ['SluiceSlotSafeWalLow'],
        bad: 'below',
      },
      {
        title: 'Slot WAL status',
        description: "1 for the slot's wal_status: reserved is healthy.",
        queries: [['max by (job, status) (sluice_relay_slot_wal_status)', '{{status}}']],
        unit: 'short',
      },
      {
        title: 'Oldest unpublished event',
        description: 'Age of the oldest committed transaction not yet acknowledged by Kafka.',
        queries: [['max by (job) (sluice_relay_oldest_unpublished_seconds)', '{{job}}']],
        unit: 's',
        alerts: ['SluiceOutboxEventAgeHigh', 'SluiceOutboxEventAgeCritical'],
      },
      {
        title: 'Publish latency (p99)',
        description: 'From the PostgreSQL commit to the Kafka acknowledgement.',
        queries: [[p99('sluice_relay_publish_latency_seconds', 'job'), '{{job}}']],
        unit: 's',
      },
      {
        title: 'Replication stream failures (15 min)',
        description: 'Reconnections of the replication stream.',
        queries: [['sum by (job) (increase(sluice_relay_stream_failures_total[15m]))', '{{job}}']],
        unit: 'short',
        alerts: ['SluiceRelayStreamFailures'],
      },
      {
        title: 'Kafka send retries',
        description: 'Sends retried with a fresh producer, and failures by reason.',
        queries: [
          [rate('sluice_relay_send_retries_total', 'job'), 'retries {{job}}'],
          [rate('sluice_relay_send_failures_total', 'reason'), 'failed: {{reason}}'],
        ],
        unit: 'ops',
        alerts: ['SluiceKafkaSendRetries'],
      },
      {
        title: 'Publishing blocked, reading paused',
        description: '1 while publishing is blocked (by reason) or reading waits for Kafka.',
        queries: [
          ['max by (reason) (sluice_relay_publish_blocked)', 'blocked: {{reason}}'],
          ['max by (job) (sluice_relay_paused)', 'paused {{job}}'],
        ],
        unit: 'short',
      },
    ],
  },
  {
    title: 'Projections',
    panels: [
      {
        title: 'Consumer lag (active generation)',
        description: 'Records behind the end of the topics, per projection, as readers see it.',
        queries: [[ACTIVE_PROJECTION_LAG, '{{projection}}']],
        unit: 'short',
        alerts: ['SluiceProjectionLagHigh', 'SluiceProjectionLagCritical'],
      },
      {
        title: 'End-to-end apply latency (p99)',
        description: "From the event's occurrence to the read model's commit.",
        queries: [[p99('sluice_projector_apply_latency_seconds', 'projection'), '{{projection}}']],
        unit: 's',
        alerts: ['SluiceApplyLatencyHigh'],
      },
      {
        title: 'Health problems',
        description: 'Why the projector is not ready, per projection and code.',
        queries: [
          [
            'sum by (projection, code) (sluice_projector_health_problems)',
            '{{projection}} {{code}}',
          ],
        ],
        unit: 'short',
      },
      {
        title: 'Rebuilds',
        description: 'Records each rebuild still has to replay (0: none running).',
        queries: [['max by (projection) (sluice_projector_rebuild_behind)', '{{projection}}']],
        unit: 'short',
      },
    ],
  },
  {
    title: 'Dead letters & parked',
    panels: [
      {
        title: 'Dead-lettered events',
        description: 'Events that failed every attempt, per projection.',
        queries: [
          [
            rate('sluice_projector_events_total{outcome="dead_lettered"}', 'projection'),
            '{{projection}}',
          ],
        ],
        unit: 'ops',
        alerts: ['SluiceProjectionDeadLetters'],
      },
      {
        title: 'Parked aggregates',
        description: 'Aggregates waiting for an operator: redrive, skip or accept the gap.',
        queries: [['max by (projection) (sluice_projector_parked_aggregates)', '{{projection}}']],
        unit: 'short',
        alerts: ['SluiceProjectionParkedAggregates'],
      },
      {
        title: 'Unaccepted offset gaps',
        description: 'Records Kafka deleted before the projection applied them.',
        queries: [
          ['max by (projection) (sluice_projector_offset_gaps_unaccepted)', '{{projection}}'],
        ],
        unit: 'short',
        alerts: ['SluiceProjectionOffsetGaps'],
      },
      {
        title: 'Event outcomes',
        description: 'Events not simply applied: duplicates, parked, dead-lettered, gaps, skipped.',
        queries: [
          [
            rate('sluice_projector_events_total', 'projection, outcome'),
            '{{projection}} {{outcome}}',
          ],
        ],
        unit: 'ops',
      },
    ],
  },
];

const COLORS = { warning: 'orange', critical: 'red' } as const;

/** Threshold steps that draw each alert's threshold as a line in its severity's color. */
function thresholdSteps(panel: PanelSpec) {
  const lines = (panel.alerts ?? []).flatMap((name) => {
    const alert = alertNamed(name);
    return Object.values(alert.thresholds).map((value) => ({ value, severity: alert.severity }));
  });
  lines.sort((a, b) => a.value - b.value);
  if (panel.bad === 'below')
    return [
      { color: 'red', value: null },
      ...lines.map(({ value }) => ({ color: 'green', value })),
    ];
  return [
    { color: 'green', value: null },
    ...lines.map(({ value, severity }) => ({ color: COLORS[severity], value })),
  ];
}

function alertNote(panel: PanelSpec): string {
  if (panel.alerts === undefined) return '';
  return ` Alerts: ${panel.alerts.join(', ')}.`;
}

function panelJson(panel: PanelSpec, id: number, gridPos: Record<string, number>) {
  return {
    id,
    type: 'timeseries',
    title: panel.title,
    description: panel.description + alertNote(panel),
    datasource: DATASOURCE,
    gridPos,
    targets: panel.queries.map(([expr, legendFormat], index) => ({
      refId: String.fromCharCode(65 + index),
      datasource: DATASOURCE,
      expr,
      legendFormat,
    })),
    fieldConfig: {
      defaults: {
        unit: panel.unit,
        thresholds: { mode: 'absolute', steps: thresholdSteps(panel) },
        custom: { thresholdsStyle: { mode: panel.alerts === undefined ? 'off' : 'line' } },
      },
      overrides: [],
    },
    options: { legend: { displayMode: 'list', placement: 'bottom' }, tooltip: { mode: 'multi' } },
  };
}

/** Rows as Grafana lays them out: a row header, then its panels three to a line. */
function layout(): unknown[] {
  const panels: unknown[] = [];
  let y = 0;
  for (const row of ROWS) {
    const gridPos = { h: 1, w: 24, x: 0, y };
    panels.push({
      id: panels.length + 1,
      type: 'row',
      title: row.title,
      collapsed: false,
      gridPos,
    });
    y += 1;
    row.panels.forEach((panel, index) => {
      const position = { h: 8, w: 8, x: (index % 3) * 8, y: y + Math.floor(index / 3) * 8 };
      panels.push(panelJson(panel, panels.length + 1, position));
    });
    y += Math.ceil(row.panels.length / 3) * 8;
  }
  return panels;
}

/**
 * The Grafana dashboard over the services' metrics, with each alert's thresholds drawn on the
 * graph it watches. `pnpm alerts:generate` writes it to `infra/grafana/sluice-dashboard.json`;
 * import it in Grafana and pick the Prometheus data source.
 */
export function grafanaDashboard(): object {
  return {
    uid: 'sluice-pipeline',
    title: 'Sluice pipeline',
    description: 'Outbox, slot, relay, Kafka and projections. Generated from packages/alerts.',
    tags: ['sluice'],
    editable: true,
    schemaVersion: 39,
    version: 1,
    refresh: '30s',
    time: { from: 'now-6h', to: 'now' },
    annotations: { list: [] },
    templating: {
      list: [{ name: 'datasource', label: 'Prometheus', type: 'datasource', query: 'prometheus' }],
    },
    panels: layout(),
  };
}

/** {@link grafanaDashboard} as the file holds it: JSON, two-space indented, final newline. */
export function grafanaDashboardJson(): string {
  return `${JSON.stringify(grafanaDashboard(), null, 2)}\n`;
}

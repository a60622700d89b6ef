/** The part of the pipeline an alert watches, in the order events flow through it. */
export type AlertStage = 'outbox' | 'slot' | 'relay' | 'kafka' | 'projection';

/** How urgent an alert is: `critical` pages (events will be lost or stop), `warning` does not. */
export type AlertSeverity = 'warning' | 'critical';

/**
 * One alert over the services' Prometheus metrics: the rule Prometheus evaluates and what an
 * operator is told. `thresholds` holds the numbers `expr` compares with, named with their unit
 * (`lagBytes`, `ageSeconds`), for a console or a dashboard to draw the same lines.
 */
export interface AlertDefinition {
  /** The Prometheus `alertname`, unique among {@link ALERTS}. */
  readonly name: string;
  readonly severity: AlertSeverity;
  readonly stage: AlertStage;
  /** One line naming what is wrong; may use `{{ $labels.x }}`. */
  readonly summary: string;
  /** What it means and what to do, in a sentence or two. */
  readonly description: string;
  /** PromQL: the alert fires for every series it returns, once returned for `for`. */
  readonly expr: string;
  /** A Prometheus duration, e.g. `5m`; `0s` fires at the first evaluation. */
  readonly for: string;
  readonly thresholds: Readonly<Record<string, number>>;
}

const GiB = 1024 ** 3;

/** The definition, with `expr` and the texts built from the same thresholds. */
function define<T extends Record<string, number>>(
  thresholds: T,
  build: (t: T) => Omit<AlertDefinition, 'thresholds'>,
): AlertDefinition {
  return Object.freeze({ ...build(thresholds), thresholds: Object.freeze({ ...thresholds }) });
}

const gib = (bytes: number) => `${bytes / GiB} GiB`;

/**
 * The jobs that exported `series` (one per process and what it serves) within the last week and
 * export it no more: every process of the job stopped answering its scrape (a scrape that fails
 * ends its series at once), or left the scrape's targets (Kubernetes drops a pod that is not
 * ready). A week, so that an outage over a weekend does not resolve by itself.
 */
const gone = (series: string) =>
  `(group by (job) (max_over_time(${series}[7d])) unless on (job) group by (job) (${series}))`;

const slotAlerts = [
  define({ lagBytes: 1 * GiB }, (t) => ({
    name: 'SluiceSlotLagHigh',
    severity: 'warning',
    stage: 'slot',
    expr: `max by (job) (sluice_relay_slot_lag_bytes) > ${t.lagBytes}`,
    for: '10m',
    summary: 'The replication slot of {{ $labels.job }} retains more than ' + gib(t.lagBytes),
    description:
      `PostgreSQL keeps over ${gib(t.lagBytes)} of WAL the relay has not confirmed. Check that a ` +
      'relay leads and publishes (SluiceRelayNoLeader, SluiceRelayPublishBlocked) and that ' +
      'Kafka accepts sends.',
  })),
  define({ lagBytes: 8 * GiB }, (t) => ({
    name: 'SluiceSlotLagCritical',
    severity: 'critical',
    stage: 'slot',
    expr: `max by (job) (sluice_relay_slot_lag_bytes) > ${t.lagBytes}`,
    for: '5m',
    summary: 'The replication slot of {{ $labels.job }} retains more than ' + gib(t.lagBytes),
    description:
      `Over ${gib(t.lagBytes)} of WAL is held for the relay: the database disk fills, or the slot ` +
      'is invalidated and events are lost. Fix publishing now (relay logs, Kafka); watch the ' +
      "slot's safe_wal_size and free disk meanwhile.",
  })),
  define({}, () => ({
    name: 'SluiceSlotWalExtended',
    severity: 'warning',
    stage: 'slot',
    expr: 'max by (job) (sluice_relay_slot_wal_status{status="extended"}) == 1',
    for: '5m',
    summary: 'The replication slot of {{ $labels.job }} holds WAL beyond max_wal_size',
    description:
      "The slot's wal_status is extended: it retains more WAL than max_wal_size. Find why the " +
      'relay falls behind before the slot becomes unreserved.',
  })),
  define({}, () => ({
    name: 'SluiceSlotWalUnreserved',
    severity: 'critical',
    stage: 'slot',
    expr: 'max by (job, status) (sluice_relay_slot_wal_status{status=~"unreserved|lost"}) == 1',
    for: '0s',
    summary: 'The replication slot of {{ $labels.job }} is {{ $labels.status }}',
    description:
      'unreserved: the next checkpoint may remove WAL the relay has not read; get the relay ' +
      'publishing or raise max_slot_wal_keep_size now. lost: the relay stops (slot_lost) and ' +
      'events may be missing from Kafka; reconcile, then drop the slot and its ' +
      'sluice.relay_slots row so the relay republishes the outbox from a snapshot.',
  })),
  define({ safeWalBytes: 1 * GiB }, (t) => ({
    name: 'SluiceSlotSafeWalLow',
    severity: 'critical',
    stage: 'slot',
    expr: `min by (job) (sluice_relay_slot_safe_wal_size_bytes) >= 0 < ${t.safeWalBytes}`,
    for: '2m',
    summary: `The replication slot of {{ $labels.job }} is less than ${gib(t.safeWalBytes)} from being lost`,
    description:
      `Less than ${gib(t.safeWalBytes)} of WAL can still be written before the slot is invalidated ` +
      '(safe_wal_size). Get the relay publishing, or raise max_slot_wal_keep_size as a stopgap.',
  })),
] as const;

const relayAlerts = [
  define({}, () => ({
    name: 'SluiceRelayNoLeader',
    severity: 'critical',
    stage: 'relay',
    expr: `sum by (job) (sluice_relay_leader) == 0 or ${gone('sluice_relay_leader')}`,
    for: '1m',
    summary: 'No relay of {{ $labels.job }} leads: no event is published',
    description:
      'Every relay process is a standby, or none answers its scrape (stopped, crashing), so ' +
      'events stay in the outbox and WAL accumulates. Check the relay logs for why none runs ' +
      'or takes leadership (database connection, slot in use).',
  })),
  define({}, () => ({
    name: 'SluiceRelayPublishBlocked',
    severity: 'critical',
    stage: 'relay',
    expr: 'max by (job, reason) (sluice_relay_publish_blocked) == 1',
    for: '1m',
    summary: 'The relay of {{ $labels.job }} cannot publish: {{ $labels.reason }}',
    description:
      'stalled: Kafka sends have failed for longer than RELAY_STALLED_AFTER_MS, check the ' +
      'brokers. rejected or programming_error: retrying cannot help; read the relay error log, ' +
      'fix the topic, ACLs or event and restart the relay.',
  })),
  define({ failures: 3 }, (t) => ({
    name: 'SluiceRelayStreamFailures',
    severity: 'warning',
    stage: 'relay',
    expr: `sum by (job) (increase(sluice_relay_stream_failures_total[15m])) > ${t.failures}`,
    for: '0s',
    summary: `The replication stream of {{ $labels.job }} failed more than ${t.failures} times in 15 minutes`,
    description:
      'The relay keeps reconnecting to PostgreSQL. Check the database logs and the network, ' +
      'and that no other client uses the slot.',
  })),
] as const;

const outboxAlerts = [
  define({ ageSeconds: 60 }, (t) => ({
    name: 'SluiceOutboxEventAgeHigh',
    severity: 'warning',
    stage: 'outbox',
    expr: `max by (job) (sluice_relay_oldest_unpublished_seconds) > ${t.ageSeconds}`,
    for: '5m',
    summary: `Committed events wait more than ${t.ageSeconds} s to reach Kafka ({{ $labels.job }})`,
    description:
      'The oldest event the relay read is not yet acknowledged by Kafka. Check Kafka latency ' +
      'and the relay’s send retries.',
  })),
  define({ ageSeconds: 600 }, (t) => ({
    name: 'SluiceOutboxEventAgeCritical',
    severity: 'critical',
    stage: 'outbox',
    expr: `max by (job) (sluice_relay_oldest_unpublished_seconds) > ${t.ageSeconds}`,
    for: '5m',
    summary: `Committed events wait more than ${t.ageSeconds / 60} minutes to reach Kafka ({{ $labels.job }})`,
    description:
      'Publishing has stopped or nearly so: read models and consumers are stale. Check ' +
      'SluiceRelayPublishBlocked, the relay logs and the Kafka brokers.',
  })),
] as const;

const kafkaAlerts = [
  define({ retriesPerSecond: 0.1 }, (t) => ({
    name: 'SluiceKafkaSendRetries',
    severity: 'warning',
    stage: 'kafka',
    expr: `sum by (job) (rate(sluice_relay_send_retries_total[5m])) > ${t.retriesPerSecond}`,
    for: '10m',
    summary: 'Kafka sends of {{ $labels.job }} keep failing and being retried',
    description:
      `More than ${t.retriesPerSecond} sends a second are retried (sluice_relay_send_failures_total ` +
      'has the reasons). Check the brokers’ health and the relay’s warnings.',
  })),
  define({}, () => ({
    name: 'SluiceRelayPaused',
    severity: 'warning',
    stage: 'kafka',
    expr: 'max by (job) (sluice_relay_paused) == 1',
    for: '10m',
    summary: 'The relay of {{ $labels.job }} has paused reading for 10 minutes: Kafka is behind',
    description:
      'The relay stops reading the WAL while Kafka has not acknowledged what it holds, so slot ' +
      'lag grows. Check Kafka produce latency and broker disk.',
  })),
  define({}, () => ({
    name: 'SluiceKafkaUnderMinInsync',
    severity: 'critical',
    stage: 'kafka',
    expr: 'max by (job) (sluice_relay_under_min_insync) == 1',
    for: '2m',
    summary: 'Kafka refuses the sends of {{ $labels.job }}: too few replicas in sync',
    description:
      'A partition has fewer in-sync replicas than its min.insync.replicas (a broker is down or ' +
      'behind), so Kafka acknowledges nothing there and the relay waits. Nothing is lost; ' +
      'bring the brokers back.',
  })),
  define({}, () => ({
    name: 'SluiceTopicDurability',
    severity: 'warning',
    stage: 'kafka',
    expr: 'max by (job, topic) (sluice_relay_topic_durability_problems) > 0',
    for: '0s',
    summary: 'Topic {{ $labels.topic }} cannot keep every acknowledged event',
    description:
      'Its replication factor, min.insync.replicas or unclean leader election can lose records ' +
      'Kafka acknowledged when a broker fails; the relay logged why at start. Fix the topic’s ' +
      'settings (kafka-configs, kafka-reassign-partitions).',
  })),
] as const;

/**
 * The consumer lag of each projection's active generation: a rebuild replays under its own
 * generation and reports its progress in `sluice_projector_rebuild_behind` instead.
 */
export const ACTIVE_PROJECTION_LAG =
  'sum by (job, projection) (max by (job, projection, generation, topic, partition) ' +
  '(sluice_projector_consumer_lag) and on (job, projection, generation) ' +
  'count_values by (job, projection) ("generation", sluice_projector_generation{state="active"}))';

const projectionLagAlerts = [
  define({ records: 10_000 }, (t) => ({
    name: 'SluiceProjectionLagHigh',
    severity: 'warning',
    stage: 'projection',
    expr: `${ACTIVE_PROJECTION_LAG} > ${t.records}`,
    for: '10m',
    summary: `Projection {{ $labels.projection }} is more than ${t.records} events behind`,
    description:
      'Its read model is stale. Check the projector’s batch latency and failures; add ' +
      'projector processes (up to the partition count) if it cannot keep up.',
  })),
  define({ records: 100_000 }, (t) => ({
    name: 'SluiceProjectionLagCritical',
    severity: 'critical',
    stage: 'projection',
    expr: `${ACTIVE_PROJECTION_LAG} > ${t.records}`,
    for: '10m',
    summary: `Projection {{ $labels.projection }} is more than ${t.records} events behind`,
    description:
      'Its read model is far behind and views waiting for consistency tokens time out. Check ' +
      'SluiceProjectionStalled and the projector logs; scale the projector out.',
  })),
] as const;

const projectionAlerts = [
  define({}, () => ({
    name: 'SluiceProjectorDown',
    severity: 'critical',
    stage: 'projection',
    expr: gone('sluice_projector_health_problems{code="joining"}'),
    for: '2m',
    summary: 'No projector of {{ $labels.job }} answers: the read models fall behind',
    description:
      'Every projector process of the job stopped answering its metrics scrape (stopped, ' +
      'crashing, not ready, or its /metrics failing), so no lag or stall alert can fire for ' +
      'it. Read the projector logs and /readyz; start or restart it.',
  })),
  define({}, () => ({
    name: 'SluiceProjectionStalled',
    severity: 'critical',
    stage: 'projection',
    expr:
      'max by (job, projection, code) ' +
      '(sluice_projector_health_problems{code=~"stalled|consumer_stopped|joining"}) > 0',
    for: '5m',
    summary: 'Projection {{ $labels.projection }} makes no progress: {{ $labels.code }}',
    description:
      'The projector is not ready: its batches keep failing (stalled), its consumer stopped, or ' +
      'its groups cannot join. Read the projector’s /readyz and error log; fix the database or ' +
      'Kafka, or restart the projector.',
  })),
  define({ perSecond: 0 }, (t) => ({
    name: 'SluiceProjectionDeadLetters',
    severity: 'warning',
    stage: 'projection',
    expr:
      'sum by (job, projection) ' +
      `(rate(sluice_projector_events_total{outcome="dead_lettered"}[5m])) > ${t.perSecond}`,
    for: '0s',
    summary: 'Projection {{ $labels.projection }} dead-letters events',
    description:
      'Events failed every attempt and went to the dead-letter topic; their aggregates are ' +
      'parked. Read the error (GET /parked), fix the projection or the data, then redrive.',
  })),
  define({ aggregates: 0 }, (t) => ({
    name: 'SluiceProjectionParkedAggregates',
    severity: 'warning',
    stage: 'projection',
    expr: `max by (job, projection) (sluice_projector_parked_aggregates) > ${t.aggregates}`,
    for: '10m',
    summary: 'Projection {{ $labels.projection }} has parked aggregates for 10 minutes',
    description:
      'Their later events wait and their rows are stale. List them (GET /parked), then redrive, ' +
      'skip the failing event or accept the version gap.',
  })),
  define({ gaps: 0 }, (t) => ({
    name: 'SluiceProjectionOffsetGaps',
    severity: 'critical',
    stage: 'projection',
    expr: `max by (job, projection) (sluice_projector_offset_gaps_unaccepted) > ${t.gaps}`,
    for: '1m',
    summary: 'Projection {{ $labels.projection }} missed records Kafka no longer holds',
    description:
      'Kafka deleted records the projection had not applied (retention): the read model lacks ' +
      'them and the projector is not ready. Rebuild the projection, or accept the gaps ' +
      '(GET /offset-gaps) if the loss is tolerable.',
  })),
  define({ p99Seconds: 5 }, (t) => ({
    name: 'SluiceApplyLatencyHigh',
    severity: 'warning',
    stage: 'projection',
    expr:
      'histogram_quantile(0.99, sum by (job, projection, le) ' +
      `(rate(sluice_projector_apply_latency_seconds_bucket[5m]))) > ${t.p99Seconds}`,
    for: '10m',
    summary: `Events take more than ${t.p99Seconds} s to reach projection {{ $labels.projection }} (p99)`,
    description:
      'From the write to the read model commit, 1 % of events take longer. Check outbox age ' +
      '(relay) and consumer lag (projector) to see which side is slow.',
  })),
] as const;

/**
 * Every Sluice alert, in pipeline order: outbox, slot, relay, Kafka, projections. The rule file
 * (`alertRulesYaml`), the dashboard's threshold lines and the console all read these.
 *
 * @example
 * const lagHigh = ALERTS.find((a) => a.name === 'SluiceSlotLagHigh');
 * console.log(lagHigh?.thresholds.lagBytes); // 1073741824
 */
export const ALERTS: readonly AlertDefinition[] = Object.freeze([
  ...outboxAlerts,
  ...slotAlerts,
  ...relayAlerts,
  ...kafkaAlerts,
  ...projectionLagAlerts,
  ...projectionAlerts,
]);

/** The alert named `name`; throws on an unknown name (a typo in a caller is a bug). */
export function alertNamed(name: string): AlertDefinition {
  const found = ALERTS.find((alert) => alert.name === name);
  if (found === undefined) throw new Error(`no Sluice alert is named ${name}`);
  return found;
}

import type {
  OutgoingEvent,
  PublishBlock,
  RelayHooks,
  SendFailureReason,
  SlotHealth,
} from '@sluice/relay';
import { collectProcessMetrics } from '@sluice/service-kit';
import { traceExemplar } from '@sluice/tracing';
import { Counter, Gauge, Histogram, Registry, type RegistryContentType } from 'prom-client';

const BLOCK_REASONS: readonly PublishBlock['reason'][] = [
  'programming_error',
  'rejected',
  'stalled',
];

/**
 * The relay's Prometheus metrics and the hooks that feed them. With `exemplars` (when tracing),
 * `/metrics` speaks OpenMetrics and the publish latency's buckets name a trace that fell in them.
 */
export function createRelayMetrics(options: { exemplars: boolean } = { exemplars: false }) {
  const registry = new Registry<RegistryContentType>();
  if (options.exemplars) registry.setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
  collectProcessMetrics(registry);
  const publishing = publishingMetrics(registry, options.exemplars);
  const sends = sendMetrics(registry);
  const { setPaused, ...state } = stateMetrics(registry);
  const journey = journeyMetrics(registry);
  const hooks: RelayHooks = {
    ...publishing.hooks,
    paused: () => setPaused(true),
    resumed: () => setPaused(false),
  };
  return {
    registry,
    hooks,
    countPublished: publishing.countPublished,
    ...sends,
    ...state,
    ...journey,
  };
}

export type RelayMetrics = ReturnType<typeof createRelayMetrics>;

function publishingMetrics(registry: Registry<RegistryContentType>, exemplars: boolean) {
  const published = new Counter({
    name: 'sluice_relay_events_published_total',
    help: 'Outbox events Kafka acknowledged.',
    labelNames: ['aggregate_type'],
    registers: [registry],
  });
  const latency = new Histogram({
    name: 'sluice_relay_publish_latency_seconds',
    help: 'From PostgreSQL commit to Kafka acknowledgement, per batch (oldest transaction).',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [registry],
    enableExemplars: exemplars,
  });
  const streamFailures = new Counter({
    name: 'sluice_relay_stream_failures_total',
    help: 'Replication stream failures (each followed by a reconnect).',
    registers: [registry],
  });
  const countPublished = (events: readonly OutgoingEvent[]) => {
    const counts = new Map<string, number>();
    for (const { event } of events)
      counts.set(event.aggregateType, (counts.get(event.aggregateType) ?? 0) + 1);
    for (const [type, count] of counts) published.inc({ aggregate_type: type }, count);
  };
  const hooks: RelayHooks = {
    published(events, oldestCommitTime) {
      countPublished(events);
      const value = (Date.now() - oldestCommitTime.getTime()) / 1000;
      if (!exemplars) return latency.observe(value);
      const exemplarLabels = traceExemplar(events[0]?.event.metadata.traceparent) ?? {};
      latency.observe({ value, exemplarLabels });
    },
    streamFailed: () => streamFailures.inc(),
  };
  return { countPublished, hooks };
}

function sendMetrics(registry: Registry<RegistryContentType>) {
  const sendRetries = new Counter({
    name: 'sluice_relay_send_retries_total',
    help: 'Kafka sends retried with a fresh producer.',
    registers: [registry],
  });
  const sendFailures = new Counter({
    name: 'sluice_relay_send_failures_total',
    help: 'Failed Kafka sends (each retried) by reason: transient, programming_error, rejected.',
    labelNames: ['reason'],
    registers: [registry],
  });
  const underReplicated = new Gauge({
    name: 'sluice_relay_under_min_insync',
    help: '1 while sends fail because fewer replicas than min.insync.replicas are in sync (a broker is down or behind); 0 once they succeed.',
    registers: [registry],
  });
  const durability = new Gauge({
    name: 'sluice_relay_topic_durability_problems',
    help: 'Problems found at start with a topic’s replication settings (replication factor 1 on a cluster, min.insync.replicas 1 or equal to the replicas, unclean leader election).',
    labelNames: ['topic'],
    registers: [registry],
  });
  let publishBlock: () => PublishBlock | undefined = () => undefined;
  new Gauge({
    name: 'sluice_relay_publish_blocked',
    help: '1 for why events are not getting into Kafka (programming_error, rejected: retrying cannot fix it; stalled: sends failing longer than RELAY_STALLED_AFTER_MS); 0 while they are.',
    labelNames: ['reason'],
    registers: [registry],
    collect() {
      const reason = publishBlock()?.reason;
      for (const label of BLOCK_REASONS) this.set({ reason: label }, label === reason ? 1 : 0);
    },
  });
  return {
    sendFailed(reason: SendFailureReason, notEnoughReplicas: boolean) {
      sendRetries.inc();
      sendFailures.inc({ reason });
      underReplicated.set(notEnoughReplicas ? 1 : 0);
    },
    sendsRecovered: () => underReplicated.set(0),
    topicDurabilityProblem: (topic: string) => durability.inc({ topic }),
    /** Where `sluice_relay_publish_blocked` reads, at each scrape, why publishing is blocked. */
    watchPublishing(probe: () => PublishBlock | undefined) {
      publishBlock = probe;
    },
  };
}

function journeyMetrics(registry: Registry<RegistryContentType>) {
  const lost = new Counter({
    name: 'sluice_relay_journey_records_lost_total',
    help: 'Published events missing from sluice.published_events, by reason: write_failed (logged), dropped (writes fell behind).',
    labelNames: ['reason'],
    registers: [registry],
  });
  return {
    journeyRecordsLost: (reason: 'write_failed' | 'dropped', records: number) =>
      lost.inc({ reason }, records),
  };
}

function stateMetrics(registry: Registry<RegistryContentType>) {
  const gauge = (name: string, help: string) => new Gauge({ name, help, registers: [registry] });
  const paused = gauge(
    'sluice_relay_paused',
    '1 while reading from PostgreSQL is paused because Kafka is behind.',
  );
  const leader = gauge('sluice_relay_leader', '1 while this process leads.');
  const slotLag = gauge(
    'sluice_relay_slot_lag_bytes',
    'pg_current_wal_lsn() - confirmed_flush_lsn of the slot.',
  );
  const safeWal = gauge(
    'sluice_relay_slot_safe_wal_size_bytes',
    'WAL that can still be written before the slot is in danger (-1: unlimited).',
  );
  const walStatus = new Gauge({
    name: 'sluice_relay_slot_wal_status',
    help: '1 for the slot’s current wal_status (reserved, extended, unreserved, lost, missing).',
    labelNames: ['status'],
    registers: [registry],
  });
  const oldest = gauge(
    'sluice_relay_oldest_unpublished_seconds',
    'Age of the oldest committed transaction read but not yet acknowledged to PostgreSQL.',
  );
  return {
    setPaused: (isPaused: boolean) => paused.set(isPaused ? 1 : 0),
    setLeader: (isLeader: boolean) => leader.set(isLeader ? 1 : 0),
    setOldestUnpublished: (commitTime: Date | undefined) =>
      oldest.set(commitTime === undefined ? 0 : (Date.now() - commitTime.getTime()) / 1000),
    setSlot(health: SlotHealth) {
      slotLag.set(health.lagBytes);
      safeWal.set(health.safeWalSizeBytes ?? -1);
      walStatus.reset();
      walStatus.set({ status: health.exists ? (health.walStatus ?? 'unknown') : 'missing' }, 1);
    },
  };
}

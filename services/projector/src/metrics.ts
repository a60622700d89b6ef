import type { BatchReport, OffsetNotice, Projector } from '@sluice/projector';
import { collectProcessMetrics } from '@sluice/service-kit';
import { traceExemplar } from '@sluice/tracing';
import { Counter, Gauge, Histogram, Registry, type RegistryContentType } from 'prom-client';

/** What the scrape-time gauges read: generations, offset gaps, health and parked events. */
type Source = Pick<Projector, 'generations' | 'offsetGaps' | 'health' | 'parked'>;

const HEALTH_CODES = ['consumer_stopped', 'stalled', 'offset_gap', 'joining'] as const;

/** Gauges read at each scrape from the projector: why it is not ready, and what is parked. */
function problemGauges(
  registry: Registry<RegistryContentType>,
  hosted: readonly string[],
  source: () => Source,
) {
  new Gauge({
    name: 'sluice_projector_health_problems',
    help: 'Why the projector is not ready, per projection and code (consumer_stopped, stalled: batches failing, one applying or a fetch unanswered too long, offset_gap, joining; projection "*" while the groups join).',
    labelNames: ['projection', 'code'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const projection of hosted)
        for (const code of HEALTH_CODES) this.set({ projection, code }, 0);
      const { problems } = await source().health();
      for (const { projection, code } of problems) this.inc({ projection, code });
    },
  });
  new Gauge({
    name: 'sluice_projector_parked_aggregates',
    help: 'Aggregates with parked events in the active generation, per projection (each waits for an operator: redrive, skip or accept the gap).',
    labelNames: ['projection'],
    registers: [registry],
    async collect() {
      this.reset();
      const aggregates = new Map(hosted.map((projection) => [projection, new Set<string>()]));
      // A record without an aggregate (undecodable) waits alone.
      for (const event of await source().parked())
        aggregates
          .get(event.projection)
          ?.add(
            event.aggregateId === null
              ? `${event.topic}:${event.partition}:${event.offset}`
              : JSON.stringify([event.aggregateType, event.aggregateId]),
          );
      for (const [projection, ids] of aggregates) this.set({ projection }, ids.size);
    },
  });
}

/** Gauges read at each scrape from the projector: generations, rebuilds, unaccepted offset gaps. */
function scrapedGauges(
  registry: Registry<RegistryContentType>,
  hosted: readonly string[],
  source: () => Source,
) {
  new Gauge({
    name: 'sluice_projector_generation',
    help: 'Per projection: the generation readers see (active) and the one being rebuilt (building).',
    labelNames: ['projection', 'state'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const projection of hosted) {
        const { generations } = await source().generations(projection);
        for (const g of generations)
          if (g.state !== 'retired') this.set({ projection, state: g.state }, g.generation);
      }
    },
  });
  new Gauge({
    name: 'sluice_projector_rebuild_behind',
    help: 'Records a rebuild still has to replay to reach the active generation (0: none running).',
    labelNames: ['projection'],
    registers: [registry],
    async collect() {
      for (const projection of hosted) {
        const { rebuild } = await source().generations(projection);
        this.set({ projection }, rebuild?.behind ?? 0);
      }
    },
  });
  new Gauge({
    name: 'sluice_projector_offset_gaps_unaccepted',
    help: 'Offset gaps not yet accepted by an operator, per projection (the projector is unready while an active generation has any).',
    labelNames: ['projection'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const projection of hosted) this.set({ projection }, 0);
      for (const gap of await source().offsetGaps())
        if (gap.acceptedAt === null) this.inc({ projection: gap.projection });
    },
  });
}

/** The projector's Prometheus metrics; see {@link createProjectorMetrics}. */
export type ProjectorMetrics = ReturnType<typeof createProjectorMetrics>;

/** The projector's Prometheus metrics, for the projections this process runs (`hosted`). */
export function createProjectorMetrics(
  hosted: readonly string[],
  options: { exemplars: boolean } = { exemplars: false },
) {
  const { exemplars } = options;
  const registry = new Registry<RegistryContentType>();
  if (exemplars) registry.setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
  collectProcessMetrics(registry);
  const applied = new Counter({
    name: 'sluice_projector_events_applied_total',
    help: 'Events applied to read models.',
    labelNames: ['projection'],
    registers: [registry],
  });
  const outcomes = new Counter({
    name: 'sluice_projector_events_total',
    help: 'Events by outcome: duplicate, parked, dead_lettered, gap, skipped, below_checkpoint (never applied, found below a checkpoint: a recreated topic).',
    labelNames: ['projection', 'outcome'],
    registers: [registry],
  });
  const lag = new Gauge({
    name: 'sluice_projector_consumer_lag',
    help: 'Records behind the partition’s end, per generation (a rebuild replays under its own).',
    labelNames: ['projection', 'generation', 'topic', 'partition'],
    registers: [registry],
  });
  const offsetNotices = new Counter({
    name: 'sluice_projector_offset_notices_total',
    help: 'Partition offsets an operator must know of: gap (Kafka no longer held records not applied), reset (a partition ended below its checkpoint).',
    labelNames: ['projection', 'kind'],
    registers: [registry],
  });
  const batchSize = new Histogram({
    name: 'sluice_projector_batch_size',
    help: 'Records per applied batch.',
    labelNames: ['projection'],
    buckets: [1, 10, 50, 100, 500, 1000, 5000],
    registers: [registry],
  });
  const latency = new Histogram({
    name: 'sluice_projector_apply_latency_seconds',
    help: 'From the event’s occurrence to the view’s commit.',
    labelNames: ['projection'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
    enableExemplars: exemplars,
  });
  let source: Source | undefined;
  const watched = () => {
    if (source === undefined) throw new Error('the projector metrics watch no projector yet');
    return source;
  };
  scrapedGauges(registry, hosted, watched);
  problemGauges(registry, hosted, watched);

  return {
    registry,
    /** Where the generation and offset-gap gauges read, at each scrape. */
    watch(projector: Source) {
      source = projector;
    },
    batch({ projection, generation, building, partitions, result }: BatchReport) {
      for (const { topic, partition, lag: behind } of partitions)
        lag.set({ projection, generation, topic, partition: String(partition) }, behind);
      // A rebuild replays history: its counts and latencies are not the live view's.
      if (building) return;
      applied.inc({ projection }, result.applied);
      for (const [outcome, count] of [
        ['duplicate', result.duplicates],
        ['parked', result.parked],
        ['dead_lettered', result.deadLettered],
        ['gap', result.gaps],
        ['skipped', result.skipped],
        ['below_checkpoint', result.belowCheckpoint],
      ] as const) {
        if (count > 0) outcomes.inc({ projection, outcome }, count);
      }
      batchSize.observe({ projection }, result.applied + result.duplicates + result.parked);
      const now = Date.now();
      const observed = latency.labels({ projection });
      for (const event of result.appliedAt) {
        const seconds = (now - Date.parse(event.occurredAt)) / 1000;
        if (!Number.isFinite(seconds)) continue;
        if (!exemplars) observed.observe(seconds);
        else {
          const exemplarLabels = traceExemplar(event.metadata.traceparent) ?? {};
          latency.observe({ labels: { projection }, value: seconds, exemplarLabels });
        }
      }
    },
    offsetNotice: (projection: string, notice: OffsetNotice) =>
      offsetNotices.inc({ projection, kind: notice.kind }),
    /** A generation stopped consuming here: its lag series would stay at their last values. */
    generationStopped: () => lag.reset(),
  };
}

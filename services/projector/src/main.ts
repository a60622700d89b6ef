// The projector's composition root: config, migrations, projections, metrics, shutdown.
import { SluiceError, isSluiceError } from '@sluice/errors';
import { parseBrokers } from '@sluice/preflight';
import { createProjector } from '@sluice/projector';
import { createDatabase, migrate } from '@sluice/database';
import { createLogger, redactConfig } from '@sluice/service-kit';
import { Kafka, logLevel } from 'kafkajs';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import {
  auditLog,
  cartSummary,
  productSales,
  removedThenBought,
  viewMigrations,
} from '@sluice/shop-views';
import { createRequire } from 'node:module';
import { loadProjectorConfig } from './config.js';
import { operationsApi } from './operations.js';

// Every header value becomes a string here anyway: decoding them as strings (an option our
// kafkajs patch adds, process-wide) saves a Buffer per header of every record.
(
  createRequire(import.meta.url)('kafkajs/src/protocol/recordBatch/header/v0/decoder') as {
    valuesAsStrings: boolean;
  }
).valuesAsStrings = true;

const config = loadProjectorConfig(process.env);
const logger = createLogger({ service: 'projector', level: config.LOG_LEVEL });
logger.info({ config: redactConfig(config) }, 'starting');
const available = [cartSummary, productSales, removedThenBought, auditLog];
const names = config.PROJECTOR_PROJECTIONS.split(',');
const unknown = names.filter((name) => !available.some((projection) => projection.name === name));
if (unknown.length > 0) {
  throw new SluiceError(
    'config_invalid',
    `PROJECTOR_PROJECTIONS names unknown projections: ${unknown.join(', ')} ` +
      `(known: ${available.map((projection) => projection.name).join(', ')})`,
  );
}

const hosted = available.filter((projection) => names.includes(projection.name));

const db = createDatabase<Record<string, never>>({
  url: config.DATABASE_URL,
  maxConnections: 6,
  applicationName: 'sluice-projector',
  // Views and checkpoints commit together and Kafka keeps the events: a commit lost in a
  // PostgreSQL crash takes its checkpoint with it, and the batch is applied again. Not waiting
  // for the WAL flush of every batch is safe here, and it is most of a small batch's latency.
  settings: { synchronous_commit: 'off' },
  onIdleError: (error) => logger.warn({ err: error }, 'idle database connection failed'),
});
await migrate(db, 'projector_migrations', viewMigrations);

const registry = new Registry();
collectDefaultMetrics({ register: registry });
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
new Gauge({
  name: 'sluice_projector_generation',
  help: 'Per projection: the generation readers see (active) and the one being rebuilt (building).',
  labelNames: ['projection', 'state'],
  registers: [registry],
  async collect() {
    this.reset();
    for (const projection of hosted) {
      const { generations } = await projector.generations(projection.name);
      for (const g of generations)
        if (g.state !== 'retired')
          this.set({ projection: projection.name, state: g.state }, g.generation);
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
      const { rebuild } = await projector.generations(projection.name);
      this.set({ projection: projection.name }, rebuild?.behind ?? 0);
    }
  },
});
const offsetNotices = new Counter({
  name: 'sluice_projector_offset_notices_total',
  help: 'Partition offsets an operator must know of: gap (Kafka no longer held records not applied), reset (a partition ended below its checkpoint).',
  labelNames: ['projection', 'kind'],
  registers: [registry],
});
new Gauge({
  name: 'sluice_projector_offset_gaps_unaccepted',
  help: 'Offset gaps not yet accepted by an operator, per projection (the projector is unready while an active generation has any).',
  labelNames: ['projection'],
  registers: [registry],
  async collect() {
    this.reset();
    for (const projection of hosted) this.set({ projection: projection.name }, 0);
    for (const gap of await projector.offsetGaps())
      if (gap.acceptedAt === null) this.inc({ projection: gap.projection });
  },
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
});

const kafka = new Kafka({
  clientId: 'sluice-projector',
  brokers: parseBrokers(config.KAFKA_BROKERS),
  logLevel: logLevel.WARN,
});
const projector = createProjector({
  db,
  kafka,
  projections: hosted,
  topicPrefix: config.PROJECTOR_TOPIC_PREFIX,
  groupPrefix: config.PROJECTOR_GROUP_PREFIX,
  partitions: config.PROJECTOR_TOPIC_PARTITIONS,
  maxAttempts: config.PROJECTOR_MAX_ATTEMPTS,
  sessionTimeoutMs: config.PROJECTOR_SESSION_TIMEOUT_MS,
  generationPollMs: config.PROJECTOR_GENERATION_POLL_MS,
  stalledAfterMs: config.PROJECTOR_STALLED_AFTER_MS,
  hooks: {
    batch({ projection, generation, building, partitions, result }) {
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
      if (result.gaps > 0)
        logger.error(
          {
            projection,
            partitions: partitions.map((p) => `${p.topic}:${p.partition}`),
            gaps: result.gaps,
          },
          'version gap: aggregate parked',
        );
      if (result.deadLettered > 0)
        logger.warn(
          {
            projection,
            partitions: partitions.map((p) => `${p.topic}:${p.partition}`),
            deadLettered: result.deadLettered,
          },
          'events dead-lettered',
        );
      if (result.belowCheckpoint > 0)
        logger.error(
          { projection, belowCheckpoint: result.belowCheckpoint },
          'events never applied were found below a checkpoint (the topic was recreated or rewritten); applied them',
        );
      batchSize.observe({ projection }, result.applied + result.duplicates + result.parked);
      const now = Date.now();
      for (const event of result.appliedAt) {
        const seconds = (now - Date.parse(event.occurredAt)) / 1000;
        if (Number.isFinite(seconds)) latency.observe({ projection }, seconds);
      }
    },
    offsets(projection, generation, notice) {
      offsetNotices.inc({ projection, kind: notice.kind });
      logger.error(
        {
          projection,
          generation,
          topic: notice.topic,
          partition: notice.partition,
          from: notice.from.toString(),
          to: notice.to.toString(),
        },
        notice.kind === 'gap'
          ? 'Kafka no longer holds records this generation had not applied: offset gap recorded (GET /offset-gaps; accept it or rebuild)'
          : 'the partition ends below its checkpoint (a recreated topic): the checkpoint went back; applied events are kept out by their versions',
      );
    },
    crashed(projection, generation, error) {
      // kafkajs will not restart this consumer: a new process will (and /readyz says so meanwhile).
      logger.fatal({ projection, generation, err: error }, 'consumer stopped for good; exiting');
      void shutdown('consumer_stopped', 70);
    },
    generation(projection, generation, change) {
      // The stopped generation's series would stay at their last values.
      if (change === 'stopped') lag.reset();
      logger.info({ projection, generation, change }, `generation ${change}`);
    },
    failed: (projection, error) =>
      isSluiceError(error, 'consumer_group_delete_failed')
        ? logger.warn({ projection, err: error }, 'retired consumer groups kept; will try again')
        : logger.error({ projection, err: error }, 'batch failed; it will be retried'),
  },
});

let stopping = false;
const http = operationsApi({
  projector,
  registry,
  logger,
  hosted: hosted.map((projection) => projection.name),
  stopping: () => stopping,
});
const address = await http.listen({
  port: config.PROJECTOR_METRICS_PORT,
  host: config.PROJECTOR_METRICS_HOST,
});
logger.info({ address }, 'metrics listening');
// Operations endpoints answer while the consumer groups join (a join can wait out a dead member).
await projector.start();
logger.info('consuming');

async function shutdown(signal: string, exitCode = 0): Promise<void> {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, 'stopping: finishing the batches in hand');
  setTimeout(() => {
    logger.error('graceful stop timed out');
    process.exit(exitCode === 0 ? 1 : exitCode);
  }, 30_000).unref();
  await projector.stop().catch((error: unknown) => logger.error({ err: error }, 'stop failed'));
  await http.close();
  await db.destroy();
  logger.info('stopped');
  process.exit(exitCode);
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));

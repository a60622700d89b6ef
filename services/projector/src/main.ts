// The projector's composition root: config, migrations, projections, metrics, shutdown.
import { SluiceError, isSluiceError } from '@sluice/errors';
import { parseBrokers } from '@sluice/preflight';
import { createProjector, listParked } from '@sluice/projector';
import { Type } from '@sinclair/typebox';
import { createDatabase, migrate } from '@sluice/database';
import { createLogger, redactConfig } from '@sluice/service-kit';
import Fastify from 'fastify';
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
  help: 'Events by outcome: duplicate, parked, dead_lettered, gap.',
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
      batchSize.observe({ projection }, result.applied + result.duplicates + result.parked);
      const now = Date.now();
      for (const event of result.appliedAt)
        latency.observe({ projection }, (now - Date.parse(event.occurredAt)) / 1000);
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
let consuming = false;
const http = Fastify({ logger: false });
http.get('/healthz', (_request, reply) => reply.send({ status: 'ok' }));
http.get('/readyz', (_request, reply) => {
  const status = stopping ? 'stopping' : consuming ? 'ready' : 'joining';
  return reply.code(status === 'ready' ? 200 : 503).send({ status });
});
http.setErrorHandler((error: Error & { validation?: unknown }, _request, reply) => {
  if (isSluiceError(error, 'projection_unknown'))
    return reply.code(404).send({ code: error.code, detail: error.message });
  if (isSluiceError(error, 'rebuild_in_progress') || isSluiceError(error, 'projection_not_started'))
    return reply.code(409).send({ code: error.code, detail: error.message });
  if (error.validation !== undefined)
    return reply.code(400).send({ code: 'invalid_request', detail: error.message });
  logger.error({ err: error }, 'operations request failed');
  return reply.code(500).send({ code: 'internal_error', detail: 'See the projector log' });
});
// Operations on parked events: list, redrive an aggregate once its cause is fixed, skip one record.
http.get('/parked', async (request, reply) => {
  const { projection } = request.query as { projection?: string };
  return reply.send({ items: await listParked(db, projection) });
});
http.post(
  '/parked/redrive',
  {
    schema: {
      body: Type.Object(
        { projection: Type.String(), aggregateType: Type.String(), aggregateId: Type.String() },
        { additionalProperties: false },
      ),
    },
  },
  async (request, reply) => {
    const body = request.body as { projection: string; aggregateType: string; aggregateId: string };
    const result = await projector.redrive(body.projection, {
      type: body.aggregateType,
      id: body.aggregateId,
    });
    logger.info(
      { ...body, applied: result.applied, parked: result.parked },
      'parked events redriven',
    );
    return reply.send({
      applied: result.applied,
      parked: result.parked,
      duplicates: result.duplicates,
    });
  },
);
http.post(
  '/parked/skip',
  {
    schema: {
      body: Type.Object(
        {
          projection: Type.String(),
          topic: Type.String(),
          partition: Type.Integer({ minimum: 0 }),
          offset: Type.String({ pattern: '^[0-9]+$' }),
        },
        { additionalProperties: false },
      ),
    },
  },
  async (request, reply) => {
    const body = request.body as {
      projection: string;
      topic: string;
      partition: number;
      offset: string;
    };
    const result = await projector.skip(body.projection, body);
    if (result === undefined)
      return reply.code(404).send({ code: 'not_found', detail: 'No such parked record' });
    logger.warn({ ...body }, 'parked record skipped');
    return reply.send({ applied: result.applied, parked: result.parked });
  },
);
// Blue/green rebuilds: the generations of each projection here, and starting a rebuild.
http.get('/projections', async (_request, reply) =>
  reply.send({
    items: await Promise.all(
      hosted.map(async ({ name }) => ({
        projection: name,
        ...(await projector.generations(name)),
      })),
    ),
  }),
);
http.post(
  '/projections/:name/rebuild',
  { schema: { params: Type.Object({ name: Type.String() }, { additionalProperties: false }) } },
  async (request, reply) => {
    const { name } = request.params as { name: string };
    const generation = await projector.rebuild(name);
    logger.info({ projection: name, generation: generation.generation }, 'rebuild started');
    return reply.code(202).send(generation);
  },
);
http.get('/metrics', async (_request, reply) =>
  reply.type(registry.contentType).send(await registry.metrics()),
);
const address = await http.listen({
  port: config.PROJECTOR_METRICS_PORT,
  host: config.PROJECTOR_METRICS_HOST,
});
logger.info({ address }, 'metrics listening');
// Operations endpoints answer while the consumer groups join (a join can wait out a dead member).
await projector.start();
consuming = !stopping;
logger.info('consuming');

async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, 'stopping: finishing the batches in hand');
  setTimeout(() => {
    logger.error('graceful stop timed out');
    process.exit(1);
  }, 30_000).unref();
  await projector.stop();
  await http.close();
  await db.destroy();
  logger.info('stopped');
  process.exit(0);
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));

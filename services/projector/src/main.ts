// The projector's composition root: config, migrations, projections, metrics, shutdown.
import { SluiceError, isSluiceError } from '@sluice/errors';
import { createKafka, decodeHeaderValuesAsStrings, parseBrokers } from '@sluice/kafka';
import { createProjector, type BatchReport, type ProjectorHooks } from '@sluice/projector';
import { createDatabase, migrate } from '@sluice/database';
import { ExitCode, createLogger, redactConfig, runService } from '@sluice/service-kit';
import {
  auditLog,
  cartSummary,
  productSales,
  removedThenBought,
  viewMigrations,
} from '@sluice/shop-views';
import { loadProjectorConfig } from './config.js';
import { createProjectorMetrics } from './metrics.js';
import { operationsRoutes } from './operations.js';

// Every header value becomes a string here anyway: decoding them as strings saves a Buffer per
// header of every record.
decodeHeaderValuesAsStrings(true);

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
const hostedNames = hosted.map((projection) => projection.name);

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

const metrics = createProjectorMetrics(hostedNames);

/** What a batch tells an operator: gaps, dead letters, events found below a checkpoint. */
function logBatch({ projection, partitions, result }: BatchReport): void {
  const where = partitions.map((p) => `${p.topic}:${p.partition}`);
  if (result.gaps > 0)
    logger.error(
      { projection, partitions: where, gaps: result.gaps },
      'version gap: aggregate parked',
    );
  if (result.deadLettered > 0)
    logger.warn(
      { projection, partitions: where, deadLettered: result.deadLettered },
      'events dead-lettered',
    );
  if (result.belowCheckpoint > 0)
    logger.error(
      { projection, belowCheckpoint: result.belowCheckpoint },
      'events never applied were found below a checkpoint (the topic was recreated or rewritten); applied them',
    );
}

const hooks: ProjectorHooks = {
  batch(report) {
    metrics.batch(report);
    // A rebuild replays history: what it meets was reported when it was live.
    if (!report.building) logBatch(report);
  },
  offsets(projection, generation, notice) {
    metrics.offsetNotice(projection, notice);
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
    void service.shutdown('consumer_stopped', ExitCode.consumerStopped);
  },
  generation(projection, generation, change) {
    if (change === 'stopped') metrics.generationStopped();
    logger.info({ projection, generation, change }, `generation ${change}`);
  },
  failed: (projection, error) =>
    isSluiceError(error, 'consumer_group_delete_failed')
      ? logger.warn({ projection, err: error }, 'retired consumer groups kept; will try again')
      : logger.error({ projection, err: error }, 'batch failed; it will be retried'),
};

const projector = createProjector({
  db,
  kafka: createKafka({
    clientId: 'sluice-projector',
    brokers: parseBrokers(config.KAFKA_BROKERS),
    logger,
  }),
  projections: hosted,
  topicPrefix: config.PROJECTOR_TOPIC_PREFIX,
  groupPrefix: config.PROJECTOR_GROUP_PREFIX,
  partitions: config.PROJECTOR_TOPIC_PARTITIONS,
  maxAttempts: config.PROJECTOR_MAX_ATTEMPTS,
  sessionTimeoutMs: config.PROJECTOR_SESSION_TIMEOUT_MS,
  generationPollMs: config.PROJECTOR_GENERATION_POLL_MS,
  stalledAfterMs: config.PROJECTOR_STALLED_AFTER_MS,
  hooks,
});
metrics.watch(projector);

// Operations endpoints answer while the consumer groups join (a join can wait out a dead member).
const service = await runService({
  logger,
  port: config.PROJECTOR_METRICS_PORT,
  host: config.PROJECTOR_METRICS_HOST,
  metrics: metrics.registry,
  async readiness({ stopping }) {
    if (stopping) return { ready: false, body: { status: 'stopping', problems: [] } };
    const { ready, problems } = await projector.health();
    return { ready, body: { status: ready ? 'ready' : 'not_ready', problems } };
  },
  routes: (app) => operationsRoutes(app, { projector, logger, hosted: hostedNames }),
  stopDescription: 'finishing the batches in hand',
  stop: () => projector.stop(),
  close: () => db.destroy(),
  stopTimeoutMs: config.PROJECTOR_STOP_TIMEOUT_MS,
});
logger.info({ address: service.address }, 'metrics listening');
await projector.start();
logger.info('consuming');

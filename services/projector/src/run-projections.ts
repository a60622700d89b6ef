// A projector's process: migrations, the projector with its hooks and metrics, the HTTP server
// (health, readiness, metrics, operations) and the graceful stop.
import type { Access } from '@sluice/access';
import { createDatabase, migrate } from '@sluice/database';
import { SluiceError, isSluiceError } from '@sluice/errors';
import {
  createKafka,
  decodeHeaderValuesAsStrings,
  isSecured,
  kafkaSecurityOf,
  parseBrokers,
  verifyKafka,
  type KafkaSecurity,
} from '@sluice/kafka';
import {
  createProjector,
  projectorMigrations,
  type Projection,
  type Projector,
  type Reveal,
} from '@sluice/projector';
import {
  ExitCode,
  createLogger,
  postgresTlsFailure,
  redactConfig,
  runService,
  startTracing,
  type Service,
  type Tracing,
} from '@sluice/service-kit';
import { sql } from 'kysely';
import type { Logger } from 'pino';
import { loadProjectorConfig, type ProjectorConfig } from './config.js';
import { projectorHooks } from './hooks.js';
import { checkMasterKeys } from './master-keys.js';
import { createProjectorMetrics, type ProjectorMetrics } from './metrics.js';
import { distinctProjections, mergeMigrations, type Migrations } from './modules.js';
import { operationsAccess, operationsRoutes } from './operations.js';
import { revealerFor } from './privacy.js';

type Tracer = NonNullable<Tracing['tracer']>;
type Database = ReturnType<typeof createDatabase<unknown>>;

/** Options for {@link runProjections}. */
export interface RunProjectionsOptions {
  /** The projections to run (`PROJECTOR_PROJECTIONS` may pick some); names must be unique. */
  projections: readonly Projection[];
  /**
   * The views' migrations (e.g. the schema their tables live in), run before start together
   * with the projector's own, in `sluice.projector_migrations`.
   */
  migrations?: Migrations;
  /** Validated settings (see {@link loadProjectorConfig}); default: read from `env`. */
  config?: ProjectorConfig;
  /** Where the settings are read when `config` is not given. Default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Default: JSON lines on stdout at `LOG_LEVEL`. */
  logger?: Logger;
  /**
   * Whether the projections own the process (default true): SIGTERM and SIGINT stop them, and a
   * stop, or a consumer that stops for good, exits the process. Pass false to embed them in a
   * process with a lifecycle of its own: then nothing exits, and `stop()` and `stopped` resolve.
   */
  ownsProcess?: boolean;
  /**
   * Traces what the projections apply. Default: OpenTelemetry as the `OTEL_*` variables of the
   * environment configure it (off unless they ask for it); pass your process's tracer when it
   * has its own SDK.
   */
  tracer?: Tracer;
}

/** Projections running; see {@link runProjections}. */
export interface RunningProjections {
  /** Where the HTTP server listens, e.g. `http://127.0.0.1:9465`. */
  readonly address: string;
  /** The names of the projections running here. */
  readonly projections: readonly string[];
  /** The projector: its health, parked events, offset gaps and rebuilds. */
  readonly projector: Projector;
  /**
   * Stops as SIGTERM does: finishes the batches in hand, closes the HTTP server and the
   * database pool, then exits the process (status 0, or 1 when a step failed or timed out).
   * Without `ownsProcess`, resolves with that status instead.
   */
  stop(): Promise<ExitCode>;
  /**
   * Resolves with the exit status once stopped: by `stop()`, or by a consumer that stopped for
   * good (70), which a new start resumes from the checkpoints. Only seen without `ownsProcess`.
   */
  readonly stopped: Promise<ExitCode>;
}

/**
 * The projections `PROJECTOR_PROJECTIONS` names, all when it is empty.
 *
 * @throws SluiceError `config_invalid` naming the unknown ones and the known ones
 */
export function selectProjections(
  available: readonly Projection[],
  names: string,
): readonly Projection[] {
  if (names === '') return available;
  const wanted = names.split(',');
  const unknown = wanted.filter((name) => !available.some((p) => p.name === name));
  if (unknown.length > 0) {
    throw new SluiceError(
      'config_invalid',
      `PROJECTOR_PROJECTIONS names unknown projections: ${unknown.join(', ')} ` +
        `(known: ${available.map((p) => p.name).join(', ')})`,
    );
  }
  return available.filter((p) => wanted.includes(p.name));
}

/** Connects to Kafka once when TLS or SASL is set: a refusal fails the start at once. */
async function verifySecuredKafka(config: ProjectorConfig, security: KafkaSecurity): Promise<void> {
  if (!isSecured(security)) return;
  const brokers = parseBrokers(config.KAFKA_BROKERS);
  const probe = createKafka({
    clientId: 'sluice-projector',
    brokers,
    security,
    connectionTimeoutMs: 5000,
    retry: { retries: 1, initialRetryTime: 200 },
  });
  await verifyKafka(probe, brokers).catch((error: unknown) => {
    if (isSluiceError(error)) throw error;
  });
}

async function openDatabase(config: ProjectorConfig, logger: Logger, migrations: Migrations) {
  const db = createDatabase<unknown>({
    url: config.DATABASE_URL,
    maxConnections: 6,
    applicationName: 'sluice-projector',
    // Views and checkpoints commit together and Kafka keeps the events: a commit lost in a
    // PostgreSQL crash takes its checkpoint with it, and the batch is applied again. Not waiting
    // for the WAL flush of every batch is safe here, and it is most of a small batch's latency.
    settings: { synchronous_commit: 'off' },
    onIdleError: (error) => logger.warn({ err: error }, 'idle database connection failed'),
  });
  try {
    if (await migrationsPending(db, Object.keys(migrations))) {
      await migrate(db, 'projector_migrations', migrations, { shared: true });
    }
  } catch (error) {
    throw postgresTlsFailure(error, config.DATABASE_URL) ?? error;
  }
  return db;
}

/**
 * Whether some of `names` are not recorded in sluice.projector_migrations. When all are, the
 * projector's role needs no privilege of a migrator (`migrate` creates schema sluice if it is
 * missing, and PostgreSQL checks CREATE on the database even when it is not).
 */
async function migrationsPending(db: Database, names: readonly string[]): Promise<boolean> {
  const { rows } = await sql<{ present: boolean }>`
    SELECT to_regclass('sluice.projector_migrations') IS NOT NULL AS present`.execute(db);
  if (rows[0]?.present !== true) return true;
  const { rows: missing } = await sql<{ name: string }>`
    SELECT name FROM unnest(${names}::text[]) AS wanted(name)
     WHERE NOT EXISTS (SELECT 1 FROM sluice.projector_migrations m WHERE m.name = wanted.name)
     LIMIT 1`.execute(db);
  return missing.length > 0;
}

/** The projector over `hosted`, reporting through `metrics` and `logger`. */
function newProjector(
  config: ProjectorConfig,
  parts: {
    db: Database;
    logger: Logger;
    hosted: readonly Projection[];
    tracing: Tracing;
    security: KafkaSecurity;
    reveal: Reveal | undefined;
  },
  metrics: ProjectorMetrics,
  crashed: () => void,
): Projector {
  const projector = createProjector({
    db: parts.db,
    kafka: createKafka({
      clientId: 'sluice-projector',
      brokers: parseBrokers(config.KAFKA_BROKERS),
      logger: parts.logger,
      security: parts.security,
    }),
    projections: parts.hosted,
    topicPrefix: config.PROJECTOR_TOPIC_PREFIX,
    groupPrefix: config.PROJECTOR_GROUP_PREFIX,
    consumerGroups: config.PROJECTOR_CONSUMER_GROUPS,
    partitions: config.PROJECTOR_TOPIC_PARTITIONS,
    replicationFactor: config.PROJECTOR_TOPIC_REPLICATION_FACTOR,
    minInsyncReplicas: config.PROJECTOR_TOPIC_MIN_INSYNC_REPLICAS,
    maxAttempts: config.PROJECTOR_MAX_ATTEMPTS,
    sessionTimeoutMs: config.PROJECTOR_SESSION_TIMEOUT_MS,
    fetchLingerMs: config.PROJECTOR_FETCH_LINGER_MS,
    generationPollMs: config.PROJECTOR_GENERATION_POLL_MS,
    stalledAfterMs: config.PROJECTOR_STALLED_AFTER_MS,
    journeyRetentionHours: config.PROJECTOR_JOURNEY_RETENTION_HOURS,
    hooks: projectorHooks(parts.logger, metrics, crashed),
    tracer: parts.tracing.tracer,
    ...(parts.reveal === undefined ? {} : { reveal: parts.reveal }),
  });
  metrics.watch(projector);
  return projector;
}

/** The HTTP server and the process around `projector`: health, readiness, metrics, operations, stop. */
function serve(
  config: ProjectorConfig,
  parts: {
    db: Database;
    logger: Logger;
    projector: Projector;
    names: readonly string[];
    access: Access | undefined;
    tracing: Tracing;
  },
  metrics: ProjectorMetrics,
  ownsProcess: boolean,
): Promise<Service> {
  const { projector, logger } = parts;
  return runService({
    logger,
    port: config.PROJECTOR_METRICS_PORT,
    host: config.PROJECTOR_METRICS_HOST,
    metrics: metrics.registry,
    async readiness({ stopping }) {
      if (stopping) return { ready: false, body: { status: 'stopping', problems: [] } };
      const { ready, problems } = await projector.health();
      return { ready, body: { status: ready ? 'ready' : 'not_ready', problems } };
    },
    notReady: (problem) => ({
      ready: false,
      body: { status: 'not_ready', problems: [{ ...problem, projection: '*' }] },
    }),
    routes: (app) =>
      operationsRoutes(app, { projector, logger, hosted: parts.names, access: parts.access }),
    stopDescription: 'finishing the batches in hand',
    stop: () => projector.stop(),
    async close() {
      await parts.db.destroy();
      await parts.tracing.shutdown();
    },
    stopTimeoutMs: config.PROJECTOR_STOP_TIMEOUT_MS,
    ownsProcess,
  });
}

/**
 * Runs projections as a service: migrates, starts consuming, and serves `/metrics`, `/healthz`,
 * `/readyz` and the operations routes (parked events, offset gaps, rebuilds; each needs a token
 * that `SLUICE_ACCESS_SECRET` or `SLUICE_ACCESS_JWKS_URL` verifies). By default it owns
 * the process: SIGTERM and SIGINT stop it gracefully and exit, and so does a consumer that stops
 * for good (status 70, for a supervisor to restart it); see `ownsProcess` to embed it in a
 * process of your own. Resolves once consuming.
 *
 * @throws SluiceError before connecting to anything: `config_invalid` (also for a missing master
 *   key when the projections' catalogs protect personal fields), `projection_duplicate`,
 *   `migration_conflict`; with Kafka over TLS or SASL, `kafka_auth_failed`, `kafka_tls_untrusted`,
 *   `kafka_tls_hostname` when Kafka refuses the connection; then `migration_failed`, and
 *   `config_invalid` when a subject key is wrapped by a master key the settings do not hold
 * @example
 * import { tickets, migrations } from './projections.js';
 * const running = await runProjections({ projections: [tickets], migrations, env: process.env });
 */
export async function runProjections(options: RunProjectionsOptions): Promise<RunningProjections> {
  const config = options.config ?? loadProjectorConfig(options.env ?? process.env);
  const given = distinctProjections([
    { spec: 'the projections given', projections: options.projections },
  ]);
  const hosted = selectProjections(given, config.PROJECTOR_PROJECTIONS);
  const names = hosted.map((projection) => projection.name);
  const migrations = mergeMigrations([
    { source: '@sluice/projector', migrations: projectorMigrations },
    { source: 'the migrations given', migrations: options.migrations ?? {} },
  ]);
  const logger = options.logger ?? createLogger({ service: 'projector', level: config.LOG_LEVEL });
  logger.info({ config: redactConfig(config), projections: names }, 'starting');
  const reveal = revealerFor(hosted, config);
  const access = operationsAccess(config, logger);
  const security = kafkaSecurityOf(config);
  await verifySecuredKafka(config, security);
  // Every header value becomes a string here anyway: decoding them as strings saves a Buffer per
  // header of every record.
  decodeHeaderValuesAsStrings(true);
  const db = await openDatabase(config, logger, migrations);
  // A subject key wrapped by a master key not configured is a setting to fix, not events to park.
  await checkMasterKeys(config, hosted, db).catch(async (error: unknown) => {
    await db.destroy();
    throw error;
  });
  const tracing: Tracing =
    options.tracer === undefined
      ? await startTracing({ service: 'projector', logger, env: options.env ?? process.env })
      : { tracer: options.tracer, shutdown: () => Promise.resolve() };
  const metrics = createProjectorMetrics(names, { exemplars: tracing.tracer !== undefined });
  const served: { service?: Service } = {};
  // kafkajs will not restart a crashed consumer: a new process will (/readyz says so meanwhile).
  const projectorParts = { db, logger, hosted, tracing, security, reveal };
  const projector = newProjector(config, projectorParts, metrics, () => {
    void served.service?.shutdown('consumer_stopped', ExitCode.consumerStopped);
  });
  // Operations endpoints answer while the consumer groups join (a join can wait out a dead member).
  const parts = { db, logger, projector, names, access, tracing };
  const running = await serve(config, parts, metrics, options.ownsProcess ?? true);
  served.service = running;
  logger.info({ address: running.address }, 'metrics listening');
  await projector.start();
  logger.info('consuming');
  return {
    address: running.address,
    projections: names,
    projector,
    stop: () => running.shutdown('stop'),
    stopped: running.stopped,
  };
}

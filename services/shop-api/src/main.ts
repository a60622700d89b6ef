// shop-api's composition root: config, pool, migrations, HTTP server, retention, shutdown.
import { createOutbox } from '@sluice/outbox';
import { assertMasterKeysKnown, createPrivacy, loadMasterKeys } from '@sluice/privacy';
import { shopCatalog, shopProtectedFields } from '@sluice/shop-catalog';
import { createDatabase, migrate } from '@sluice/database';
import {
  createLogger,
  readCommandLine,
  redactConfig,
  runService,
  settingOrExit,
  startTracing,
  verifyDatabaseAtStart,
  collectProcessMetrics,
} from '@sluice/service-kit';
import { CompiledQuery, sql } from 'kysely';
import { Registry } from 'prom-client';
import { buildApp } from './app.js';
import { checkShopApi } from './check.js';
import { authProblem, authSettings, configuredTokenSecret, shopApiConfigSchema } from './config.js';
import { storedTokenSecret } from './consistency-tokens.js';
import type { ShopDatabase } from './database.js';
import { PROBLEM_JSON, problem } from './http/problems.js';
import { shopMigrations } from './migrations.js';

const { config } = await readCommandLine({
  command: 'shop-api',
  summary: [
    'The shop: a REST API over customers, products, carts and orders that writes each change and',
    'its domain events to PostgreSQL in one transaction (the outbox the relay publishes).',
  ].join('\n'),
  notes: 'Exit status: 0 after SIGTERM or SIGINT; 78 on invalid settings; 1 on other failures.',
  schema: shopApiConfigSchema,
  check: (settings) => {
    const problem = authProblem(settings);
    return problem === undefined ? checkShopApi(settings) : Promise.resolve([problem]);
  },
});
const tokenSecret = configuredTokenSecret(config);
const auth = settingOrExit('shop-api', () => authSettings(config));
const masterKeys = settingOrExit('shop-api', () => loadMasterKeys(config));
const logger = createLogger({ service: 'shop-api', level: config.LOG_LEVEL });
logger.info({ config: redactConfig(config) }, 'starting');
if (auth.mode === 'off') {
  logger.warn(
    'authentication is off (SHOP_AUTH=off): every request acts as the admin "dev"; for local development only',
  );
}

const db = createDatabase<ShopDatabase>({
  url: config.DATABASE_URL,
  maxConnections: config.DATABASE_POOL_SIZE,
  applicationName: 'shop-api',
  // A server that accepts and never answers (or a pool in use to the last connection) fails a
  // request with 503 database_unavailable instead of holding it.
  connectTimeoutMs: 10_000,
  onIdleError: (error) => logger.warn({ err: error }, 'idle database connection failed'),
});
await verifyDatabaseAtStart(config.DATABASE_URL, logger, () => sql`SELECT 1`.execute(db));
if (config.MIGRATE_ON_START) await migrate(db, 'shop_api_migrations', shopMigrations);
// A subject key wrapped by a master key not configured is a setting to fix: exit 78 before serving.
await assertMasterKeysKnown(
  { query: (text, values = []) => db.executeQuery(CompiledQuery.raw(text, values)) },
  masterKeys,
).catch((error: unknown) =>
  settingOrExit('shop-api', () => {
    throw error;
  }),
);

const tracing = await startTracing({ service: 'shop-api', logger });
const registry = new Registry();
collectProcessMetrics(registry);
const app = buildApp({
  db,
  logger,
  registry,
  tracer: tracing.tracer,
  consistencyTimeoutMs: config.VIEW_CONSISTENCY_TIMEOUT_MS,
  consistencyTokenSecret: tokenSecret ?? (await storedTokenSecret(db)),
  auth,
  privacy: createPrivacy({ keys: masterKeys, fields: shopProtectedFields }),
  masterKeys,
});

// Retention: outbox rows and idempotency keys are purged in batches, off the request path.
const outbox = createOutbox({ schema: 'shop', catalog: shopCatalog });
const day = 24 * 60 * 60 * 1000;
async function purge(): Promise<void> {
  const purged = await outbox.purge(db, {
    olderThan: new Date(Date.now() - config.OUTBOX_RETENTION_DAYS * day),
  });
  const keys = await sql`DELETE FROM sluice.idempotency_keys
    WHERE created_at < now() - make_interval(hours => ${config.IDEMPOTENCY_RETENTION_HOURS})`.execute(
    db,
  );
  const idempotencyKeys = Number(keys.numAffectedRows ?? 0n);
  if (purged > 0 || idempotencyKeys > 0)
    logger.info({ outboxRows: purged, idempotencyKeys }, 'retention purge');
}
const retention = setInterval(
  () =>
    void purge().catch((error: unknown) => logger.warn({ err: error }, 'retention purge failed')),
  10 * 60 * 1000,
);
retention.unref();

await runService({
  logger,
  app,
  port: config.API_PORT,
  host: config.API_HOST,
  metrics: registry,
  async readiness() {
    await sql`SELECT 1`.execute(db);
    return { ready: true, body: { status: 'ready' } };
  },
  // The check asks only the database; the cause stays in the log (it may name hosts or roles).
  notReady: () => ({
    ready: false,
    body: problem(503, 'database_unavailable', 'The database does not answer.'),
    contentType: PROBLEM_JSON,
  }),
  stopDescription: 'finishing the requests in flight',
  stop() {
    // The HTTP server closes next: it stops accepting and finishes the requests in flight.
    logger.info('draining');
    clearInterval(retention);
    return Promise.resolve();
  },
  async close() {
    await db.destroy();
    await tracing.shutdown();
  },
  stopTimeoutMs: config.API_STOP_TIMEOUT_MS,
});

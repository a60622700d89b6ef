// shop-api's composition root: config, pool, migrations, HTTP server, retention, shutdown.
import { createOutbox } from '@sluice/outbox';
import { createDatabase, migrate } from '@sluice/database';
import { createLogger, redactConfig } from '@sluice/service-kit';
import { sql } from 'kysely';
import { buildApp } from './app.js';
import { configuredTokenSecret, loadShopApiConfig } from './config.js';
import { storedTokenSecret } from './consistency-tokens.js';
import type { ShopDatabase } from './database.js';
import { shopMigrations } from './migrations.js';

const config = loadShopApiConfig(process.env);
const tokenSecret = configuredTokenSecret(config);
const logger = createLogger({ service: 'shop-api', level: config.LOG_LEVEL });
logger.info({ config: redactConfig(config) }, 'starting');

const db = createDatabase<ShopDatabase>({
  url: config.DATABASE_URL,
  maxConnections: config.DATABASE_POOL_SIZE,
  applicationName: 'shop-api',
  onIdleError: (error) => logger.warn({ err: error }, 'idle database connection failed'),
});
if (config.MIGRATE_ON_START) await migrate(db, 'shop_api_migrations', shopMigrations);

const app = buildApp({
  db,
  logger,
  consistencyTimeoutMs: config.VIEW_CONSISTENCY_TIMEOUT_MS,
  consistencyTokenSecret: tokenSecret ?? (await storedTokenSecret(db)),
});
await app.listen({ port: config.API_PORT, host: config.API_HOST });

// Retention: outbox rows and idempotency keys are purged in batches, off the request path.
const outbox = createOutbox({ schema: 'shop' });
const day = 24 * 60 * 60 * 1000;
const retention = setInterval(
  () => {
    void (async () => {
      const purged = await outbox.purge(db, {
        olderThan: new Date(Date.now() - config.OUTBOX_RETENTION_DAYS * day),
      });
      const keys = await sql`DELETE FROM sluice.idempotency_keys
      WHERE created_at < now() - make_interval(hours => ${config.IDEMPOTENCY_RETENTION_HOURS})`.execute(
        db,
      );
      if (purged > 0 || Number(keys.numAffectedRows ?? 0n) > 0) {
        logger.info(
          { outboxRows: purged, idempotencyKeys: Number(keys.numAffectedRows ?? 0n) },
          'retention purge',
        );
      }
    })().catch((error: unknown) => logger.warn({ err: error }, 'retention purge failed'));
  },
  10 * 60 * 1000,
);
retention.unref();

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, 'draining');
  setTimeout(() => {
    logger.error('drain timed out; exiting');
    process.exit(1);
  }, 30_000).unref();
  clearInterval(retention);
  await app.close(); // stops accepting, finishes in-flight requests
  await db.destroy();
  logger.info('stopped');
  process.exit(0);
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));

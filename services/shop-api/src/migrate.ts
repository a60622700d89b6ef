// `pnpm --filter @sluice/shop-api migrate`: applies shop-api's migrations and exits.
import { createDatabase, migrate } from '@sluice/database';
import { createLogger } from '@sluice/service-kit';
import { loadShopApiConfig } from './config.js';
import type { ShopDatabase } from './database.js';
import { shopMigrations } from './migrations.js';

const config = loadShopApiConfig(process.env);
const logger = createLogger({ service: 'shop-api', level: config.LOG_LEVEL });
const db = createDatabase<ShopDatabase>({ url: config.DATABASE_URL, maxConnections: 1 });
try {
  await migrate(db, 'shop_api_migrations', shopMigrations);
  logger.info('migrated');
} finally {
  await db.destroy();
}

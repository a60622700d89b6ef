import { projectorMigrations } from '@sluice/projector';
import { sql } from 'kysely';
import type { Migration } from 'kysely/migration';

/**
 * Databases that applied these created the views' tables here. The projector now creates each
 * generation's tables itself (and adopts tables these made), so on a new database they only
 * create the `views` schema. They stay listed because applied migrations must be.
 */
const createdByTheProjector: Migration = {
  async up(db) {
    await sql`CREATE SCHEMA IF NOT EXISTS views`.execute(db);
  },
};

/** The projector's bookkeeping, and the `views` schema of the shop's read models. */
export const viewMigrations: Record<string, Migration> = {
  ...projectorMigrations,
  '0002_views': createdByTheProjector,
  '0003_product_sales': createdByTheProjector,
  '0004_reports': createdByTheProjector,
};

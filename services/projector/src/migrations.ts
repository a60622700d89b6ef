import { projectorMigrations } from '@sluice/projector';
import { sql } from 'kysely';
import type { Migration } from 'kysely/migration';

/** The projector's bookkeeping and the shop's read models in `views`. */
export const viewMigrations: Record<string, Migration> = {
  ...projectorMigrations,
  '0002_views': {
    async up(db) {
      await sql`
        CREATE SCHEMA IF NOT EXISTS views;
        CREATE TABLE views.cart_summaries (
          cart_id uuid PRIMARY KEY,
          customer_id uuid,
          status text NOT NULL,
          item_count integer NOT NULL,
          total_cents bigint NOT NULL,
          version bigint NOT NULL,
          updated_at timestamptz NOT NULL DEFAULT now()
        );
      `.execute(db);
    },
  },
  '0003_product_sales': {
    async up(db) {
      await sql`
        CREATE TABLE views.product_sales (
          product_id uuid PRIMARY KEY,
          added_count bigint NOT NULL,
          removed_count bigint NOT NULL,
          units_sold bigint NOT NULL,
          revenue_cents bigint NOT NULL,
          updated_at timestamptz NOT NULL DEFAULT now()
        );
      `.execute(db);
    },
  },
};

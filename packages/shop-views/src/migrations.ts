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
  '0004_reports': {
    async up(db) {
      await sql`
        CREATE TABLE views.cart_owners (cart_id uuid PRIMARY KEY, customer_id uuid NOT NULL);
        CREATE TABLE views.removals (customer_id uuid NOT NULL, product_id uuid NOT NULL, removed_at timestamptz NOT NULL);
        CREATE INDEX removals_customer_product ON views.removals (customer_id, product_id);
        CREATE TABLE views.purchases (
          customer_id uuid NOT NULL, product_id uuid NOT NULL, bought_at timestamptz NOT NULL,
          PRIMARY KEY (customer_id, product_id, bought_at)
        );
        CREATE TABLE views.removed_then_bought (
          customer_id uuid NOT NULL, product_id uuid NOT NULL, removed_at timestamptz NOT NULL, bought_at timestamptz NOT NULL,
          PRIMARY KEY (customer_id, product_id, bought_at)
        );
        CREATE TABLE views.audit_log (
          event_id uuid PRIMARY KEY,
          aggregate_type text NOT NULL,
          aggregate_id text NOT NULL,
          version bigint NOT NULL,
          type text NOT NULL,
          occurred_at timestamptz NOT NULL,
          actor text,
          reason text,
          correlation_id text,
          data jsonb NOT NULL
        );
        CREATE INDEX audit_log_aggregate ON views.audit_log (aggregate_type, aggregate_id, version);
      `.execute(db);
    },
  },
};

-- Least-privilege roles for running Sluice against a shared PostgreSQL.
--
-- The schema owner (the role that runs migrations: `pnpm --filter @sluice/shop-api migrate`,
-- or shop-api on start with MIGRATE_ON_START=true) owns every table. Apply this file as that
-- owner after migrating, then set passwords out of band (ALTER ROLE ... PASSWORD ...):
--
--   psql "$OWNER_DATABASE_URL" -v ON_ERROR_STOP=1 -f infra/postgres/roles.sql
--
-- sluice_app       shop-api: reads and writes shop.*; appends to the outbox but cannot change
--                  or reshape it (no UPDATE, no ALTER: only the owner alters tables).
-- sluice_relay     the relay: logical replication of the outbox, nothing else.
-- sluice_projector projectors: read models in views.*, bookkeeping in sluice.*.

DO $$
BEGIN
  CREATE ROLE sluice_app LOGIN;
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;
DO $$
BEGIN
  CREATE ROLE sluice_relay LOGIN REPLICATION;
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;
DO $$
BEGIN
  CREATE ROLE sluice_projector LOGIN;
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

GRANT USAGE ON SCHEMA shop, sluice TO sluice_app;
GRANT SELECT, INSERT, UPDATE, DELETE
  ON shop.customers, shop.products, shop.carts, shop.cart_items, shop.orders, shop.order_lines
  TO sluice_app;
-- Insert-only outbox; DELETE only for the retention purge of rows published long ago.
GRANT SELECT, INSERT, DELETE ON shop.outbox TO sluice_app;
GRANT SELECT, INSERT, UPDATE ON shop.outbox_heads TO sluice_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON sluice.idempotency_keys TO sluice_app;
-- The consistency-token key the migrations generate (unless CONSISTENCY_TOKEN_SECRET is set).
GRANT SELECT ON sluice.api_secrets TO sluice_app;

GRANT USAGE ON SCHEMA shop TO sluice_relay;
GRANT SELECT ON shop.outbox TO sluice_relay;

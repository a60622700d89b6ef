-- Least-privilege roles for running Sluice against a shared PostgreSQL.
--
-- Who migrates: the schema owner (a role of its own, not a superuser) owns schemas shop and
-- sluice and every table its migrations make. Before the services start as the roles below it
-- applies shop-api's migrations (`pnpm --filter @sluice/shop-api migrate`; shop-api then runs
-- with MIGRATE_ON_START=false) and the projector's (`sluice.projector_migrations`: a first start
-- of sluice-projector with the owner's DATABASE_URL, or `migrate` from @sluice/database with the
-- modules' migrations). An administrator (a superuser, or a member of every role below) then
-- applies this file, once, before the services first start: what the relay and the projector
-- create later is granted as they create it (default privileges). It is idempotent; apply it
-- again only after an upgrade whose migrations made new tables:
--
--   psql "$ADMIN_DATABASE_URL" -v ON_ERROR_STOP=1 -f infra/postgres/roles.sql
--   psql "$ADMIN_DATABASE_URL" -c "ALTER ROLE sluice_app PASSWORD '...'"   (and each role)
--
-- sluice_app       shop-api: reads and writes shop.*; appends to the outbox but cannot change
--                  or reshape it (no UPDATE, no ALTER: only the owner alters tables). Reads the
--                  views (/views/*) and the applied versions (consistency waits).
-- sluice_relay     the relay: REPLICATION (it creates its slot), SELECT on the outbox, and its
--                  own tables in sluice: relay_slots and published_events, which it creates at
--                  its first start, and claim_checks, which this file creates for it (so that
--                  the viewer, granted the relay's other tables by default, never reads the
--                  payloads kept there). It cannot create the publication: PostgreSQL
--                  requires ownership of the outbox for that, so an administrator creates it:
--                    CREATE PUBLICATION sluice_outbox FOR TABLE shop.outbox WITH (publish = 'insert');
--                  A slot created beforehand (pgoutput) is adopted as it is.
-- sluice_projector projectors: owns schema views (each generation's tables and views, made at
--                  run time), writes its bookkeeping in sluice and reads the claim checks. No
--                  CREATE on the database: it creates no schema that exists, and runs no
--                  migration once the owner applied them all.
-- sluice_viewer    operations viewers (the console's queries): SELECT on the projector's
--                  bookkeeping and on the relay's tables but claim_checks (the journey table
--                  published_events; relay_slots, its slots' positions); nothing else.
--
-- pg_hba.conf: certificates or passwords over TLS, one line per role, and the relay's
-- replication connection on a line of its own:
--
--   hostssl  sluice       sluice_app        10.0.0.0/8  scram-sha-256
--   hostssl  sluice       sluice_projector  10.0.0.0/8  scram-sha-256
--   hostssl  sluice       sluice_viewer     10.0.0.0/8  scram-sha-256
--   hostssl  sluice       sluice_relay      10.0.0.0/8  scram-sha-256
--   hostssl  replication  sluice_relay      10.0.0.0/8  scram-sha-256
--
-- (the relay's logical replication connects to its database, not to `replication`, in
-- PostgreSQL; the `replication` line is for physical tools and harmless otherwise.)

-- Roles are cluster-wide: concurrent appliers wait for each other.
SELECT pg_advisory_lock(hashtext('sluice roles.sql'));

DO $$
DECLARE
  role_name text;
BEGIN
  FOREACH role_name IN ARRAY ARRAY['sluice_app', 'sluice_relay', 'sluice_projector', 'sluice_viewer'] LOOP
    BEGIN
      EXECUTE format('CREATE ROLE %I LOGIN', role_name);
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
  END LOOP;
END $$;
ALTER ROLE sluice_relay REPLICATION;

CREATE SCHEMA IF NOT EXISTS sluice;
CREATE SCHEMA IF NOT EXISTS views AUTHORIZATION sluice_projector;
ALTER SCHEMA views OWNER TO sluice_projector;

-- shop-api.
GRANT USAGE ON SCHEMA shop, sluice, views TO sluice_app;
GRANT SELECT, INSERT, UPDATE, DELETE
  ON shop.customers, shop.products, shop.carts, shop.cart_items, shop.orders, shop.order_lines
  TO sluice_app;
-- Insert-only outbox; DELETE only for the retention purge of rows published long ago.
GRANT SELECT, INSERT, DELETE ON shop.outbox TO sluice_app;
GRANT SELECT, INSERT, UPDATE ON shop.outbox_heads TO sluice_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON sluice.idempotency_keys TO sluice_app;
-- The consistency-token key the migrations generate (unless CONSISTENCY_TOKEN_SECRET is set).
GRANT SELECT ON sluice.api_secrets TO sluice_app;
-- The read models the projector makes, present and future.
ALTER DEFAULT PRIVILEGES FOR ROLE sluice_projector IN SCHEMA views
  GRANT SELECT ON TABLES TO sluice_app;

-- The relay.
GRANT USAGE ON SCHEMA shop TO sluice_relay;
GRANT SELECT ON shop.outbox TO sluice_relay;
GRANT USAGE, CREATE ON SCHEMA sluice TO sluice_relay;
-- Projectors read the payloads the relay keeps as claim checks; viewers read the tables the
-- relay creates at its first start (published_events, the journey; relay_slots).
ALTER DEFAULT PRIVILEGES FOR ROLE sluice_relay IN SCHEMA sluice
  GRANT SELECT ON TABLES TO sluice_projector, sluice_viewer;
-- The claim checks (@sluice/outbox's CLAIM_CHECKS_TABLE) exist before the relay starts, made
-- here and not by it, so that no default privilege gives viewers the payloads.
CREATE TABLE IF NOT EXISTS sluice.claim_checks (
  event_id uuid PRIMARY KEY,
  payload jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE sluice.claim_checks OWNER TO sluice_relay;
GRANT SELECT ON sluice.claim_checks TO sluice_projector;
REVOKE ALL ON sluice.claim_checks FROM sluice_viewer;

-- The projector. An older version of this file granted it CREATE on the database.
DO $$
BEGIN
  EXECUTE format('REVOKE CREATE ON DATABASE %I FROM sluice_projector', current_database());
END $$;
GRANT USAGE ON SCHEMA sluice TO sluice_projector;

-- Grants on tables the migrations made (and, where the relay started before this file was
-- first applied, on the relay's): a table not there yet is granted when this file is applied
-- again after the migration that makes it.
DO $$
DECLARE
  grant_row record;
BEGIN
  FOR grant_row IN
    SELECT wanted.privileges, wanted.relation, wanted.grantee
      FROM (VALUES
        ('SELECT, INSERT, UPDATE, DELETE', 'sluice.projection_checkpoints', 'sluice_projector'),
        ('SELECT, INSERT, UPDATE, DELETE', 'sluice.projection_versions', 'sluice_projector'),
        ('SELECT, INSERT, UPDATE, DELETE', 'sluice.parked_events', 'sluice_projector'),
        ('SELECT, INSERT, UPDATE, DELETE', 'sluice.projection_generations', 'sluice_projector'),
        ('SELECT, INSERT, UPDATE, DELETE', 'sluice.projection_offset_gaps', 'sluice_projector'),
        ('SELECT, INSERT, UPDATE, DELETE', 'sluice.projection_applied_batches', 'sluice_projector'),
        ('SELECT, INSERT', 'sluice.operator_audit', 'sluice_projector'),
        ('USAGE', 'sluice.operator_audit_id_seq', 'sluice_projector'),
        ('SELECT', 'sluice.projector_migrations', 'sluice_projector'),
        ('SELECT', 'sluice.projector_migrations_lock', 'sluice_projector'),
        -- Subject keys of personal data: shop-api makes and destroys them, the projector reads them.
        ('SELECT, INSERT, UPDATE', 'sluice.subject_keys', 'sluice_app'),
        ('SELECT', 'sluice.subject_keys', 'sluice_projector'),
        ('SELECT', 'sluice.projection_versions', 'sluice_app'),
        ('SELECT', 'sluice.projection_generations', 'sluice_app'),
        ('SELECT', 'sluice.projection_checkpoints', 'sluice_viewer'),
        ('SELECT', 'sluice.projection_versions', 'sluice_viewer'),
        ('SELECT', 'sluice.parked_events', 'sluice_viewer'),
        ('SELECT', 'sluice.projection_generations', 'sluice_viewer'),
        ('SELECT', 'sluice.projection_offset_gaps', 'sluice_viewer'),
        ('SELECT', 'sluice.projection_applied_batches', 'sluice_viewer'),
        ('SELECT', 'sluice.operator_audit', 'sluice_viewer'),
        ('SELECT', 'sluice.published_events', 'sluice_viewer'),
        ('SELECT', 'sluice.relay_slots', 'sluice_viewer')
      ) AS wanted (privileges, relation, grantee)
     WHERE to_regclass(wanted.relation) IS NOT NULL
  LOOP
    EXECUTE format(
      'GRANT %s ON %s %s TO %I',
      grant_row.privileges,
      CASE WHEN grant_row.privileges = 'USAGE' THEN 'SEQUENCE' ELSE 'TABLE' END,
      grant_row.relation,
      grant_row.grantee
    );
  END LOOP;
END $$;
GRANT USAGE ON SCHEMA sluice TO sluice_viewer;

-- Tables the owner made in views (a first projector start as the owner) go to the projector,
-- which drops and replaces them when it rebuilds.
DO $$
DECLARE
  relation record;
BEGIN
  FOR relation IN
    SELECT c.relname, c.relkind FROM pg_class c
     WHERE c.relnamespace = 'views'::regnamespace AND c.relkind IN ('r', 'v')
       AND c.relowner <> 'sluice_projector'::regrole
  LOOP
    EXECUTE format('ALTER %s views.%I OWNER TO sluice_projector',
                   CASE relation.relkind WHEN 'v' THEN 'VIEW' ELSE 'TABLE' END, relation.relname);
    EXECUTE format('GRANT SELECT ON views.%I TO sluice_app', relation.relname);
  END LOOP;
END $$;

SELECT pg_advisory_unlock(hashtext('sluice roles.sql'));

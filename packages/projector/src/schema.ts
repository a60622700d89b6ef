import { sql } from 'kysely';
import type { Migration } from 'kysely/migration';

/**
 * The projector's bookkeeping in `sluice`: per (projection, topic, partition) the next offset to
 * apply, per (projection, aggregate) the last applied version, the parked events, each
 * projection's generations, the offset ranges Kafka no longer held when a partition needed them,
 * the operators' actions, and when each partition batch was applied (the event journey). The bookkeeping tables' `projection` column holds a generation's
 * instance key.
 */
export const projectorMigrations: Record<string, Migration> = {
  '0001_projector': {
    async up(db) {
      await sql`
        CREATE SCHEMA IF NOT EXISTS sluice;
        CREATE TABLE sluice.projection_checkpoints (
          projection text NOT NULL,
          topic text NOT NULL,
          partition integer NOT NULL,
          next_offset bigint NOT NULL,
          updated_at timestamptz NOT NULL DEFAULT now(),
          PRIMARY KEY (projection, topic, partition)
        );
        CREATE TABLE sluice.projection_versions (
          projection text NOT NULL,
          aggregate_type text NOT NULL,
          aggregate_id text NOT NULL,
          version bigint NOT NULL,
          PRIMARY KEY (projection, aggregate_type, aggregate_id)
        );
        CREATE TABLE sluice.parked_events (
          projection text NOT NULL,
          topic text NOT NULL,
          partition integer NOT NULL,
          record_offset bigint NOT NULL,
          aggregate_type text,
          aggregate_id text,
          aggregate_version bigint,
          record_key text,
          record_value text,
          record_headers jsonb NOT NULL,
          reason text NOT NULL,
          error text,
          attempts integer NOT NULL,
          first_failed_at timestamptz NOT NULL DEFAULT now(),
          last_failed_at timestamptz NOT NULL DEFAULT now(),
          PRIMARY KEY (projection, topic, partition, record_offset)
        );
        CREATE INDEX parked_events_aggregate ON sluice.parked_events (projection, aggregate_type, aggregate_id);
      `.execute(db);
    },
  },
  '0001_projector_generations': {
    async up(db) {
      await sql`
        CREATE TABLE sluice.projection_generations (
          projection text NOT NULL,
          generation integer NOT NULL CHECK (generation > 0),
          instance text NOT NULL UNIQUE,
          state text NOT NULL CHECK (state IN ('building', 'active', 'retired')),
          created_at timestamptz NOT NULL DEFAULT now(),
          activated_at timestamptz,
          retired_at timestamptz,
          PRIMARY KEY (projection, generation)
        );
        CREATE UNIQUE INDEX projection_generations_one_active
          ON sluice.projection_generations (projection) WHERE state = 'active';
        CREATE UNIQUE INDEX projection_generations_one_building
          ON sluice.projection_generations (projection) WHERE state = 'building';
      `.execute(db);
    },
  },
  '0005_projector_edges': {
    async up(db) {
      // Parked records keep Kafka's bytes (a NUL byte or invalid UTF-8 cannot be text or jsonb);
      // headers as a JSON array of [name, value] pairs, so repeated and null headers survive.
      await sql`
        ALTER TABLE sluice.parked_events
          ALTER COLUMN record_key TYPE bytea USING convert_to(record_key, 'UTF8'),
          ALTER COLUMN record_value TYPE bytea USING convert_to(record_value, 'UTF8'),
          ALTER COLUMN record_headers TYPE bytea USING convert_to(record_headers::text, 'UTF8');
        -- What the record before the checkpoint was (its time and event id): a partition whose
        -- offsets were reused (a recreated topic) is recognised by a different record there.
        ALTER TABLE sluice.projection_checkpoints ADD COLUMN last_record text;
        ALTER TABLE sluice.projection_generations DROP CONSTRAINT projection_generations_state_check;
        ALTER TABLE sluice.projection_generations ADD CONSTRAINT projection_generations_state_check
          CHECK (state IN ('building', 'active', 'retired', 'cancelled'));
        CREATE TABLE sluice.projection_offset_gaps (
          projection text NOT NULL,
          topic text NOT NULL,
          partition integer NOT NULL,
          from_offset bigint NOT NULL,
          to_offset bigint NOT NULL,
          detected_at timestamptz NOT NULL DEFAULT now(),
          accepted_at timestamptz,
          accepted_by text,
          accepted_reason text,
          PRIMARY KEY (projection, topic, partition, from_offset)
        );
        CREATE TABLE sluice.operator_audit (
          id bigserial PRIMARY KEY,
          at timestamptz NOT NULL DEFAULT now(),
          actor text NOT NULL,
          action text NOT NULL,
          projection text,
          target jsonb NOT NULL,
          reason text,
          outcome jsonb NOT NULL
        );
      `.execute(db);
    },
  },
  '0006_projector_applied_batches': {
    async up(db) {
      // The event journey: when each partition batch was applied (its offsets from..to), written
      // with the batch's checkpoint; old rows are deleted after the projector's retention.
      await sql`
        CREATE TABLE sluice.projection_applied_batches (
          projection text NOT NULL,
          generation integer NOT NULL,
          topic text NOT NULL,
          partition integer NOT NULL,
          from_offset bigint NOT NULL,
          to_offset bigint NOT NULL,
          applied_at timestamptz NOT NULL
        );
        CREATE INDEX projection_applied_batches_offsets
          ON sluice.projection_applied_batches (topic, partition, to_offset);
        CREATE INDEX projection_applied_batches_applied_at
          ON sluice.projection_applied_batches USING brin (applied_at);
      `.execute(db);
    },
  },
  '0007_projector_parked_reason': {
    async up(db) {
      // The console's parked records of one error class, in key order: without it a rare class
      // walks every parked record of the projection. The included columns are those its groups
      // read, so grouping the first 1000 matching records reads the index alone.
      await sql`
        CREATE INDEX parked_events_reason
          ON sluice.parked_events (projection, reason, topic, partition, record_offset)
          INCLUDE (aggregate_type, aggregate_id, first_failed_at);
      `.execute(db);
    },
  },
};

import type { Migration } from 'kysely/migration';

export {
  createOutbox,
  type AggregateRef,
  type AppendContext,
  type Outbox,
  type OutboxOptions,
  type PreparedAppend,
} from './outbox.js';
export type { SqlSession } from './sessions.js';
export type { OutboxErrorCode } from './errors.js';

const q = (name: string) => `"${name.replaceAll('"', '""')}"`;

/** The outbox's tables in `schema`, as SQL for a team's own migration tool. */
export function outboxSchemaSql(schema = 'shop'): string {
  return `
    CREATE SCHEMA IF NOT EXISTS ${q(schema)};
    CREATE TABLE ${q(schema)}.outbox (
      id uuid PRIMARY KEY,
      aggregate_type text NOT NULL,
      aggregate_id text NOT NULL,
      aggregate_version bigint NOT NULL CHECK (aggregate_version > 0),
      type text NOT NULL,
      payload jsonb NOT NULL,
      metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
      occurred_at timestamptz NOT NULL DEFAULT now(),
      UNIQUE (aggregate_type, aggregate_id, aggregate_version)
    );
    CREATE INDEX outbox_occurred_at ON ${q(schema)}.outbox (occurred_at);
    CREATE TABLE ${q(schema)}.outbox_heads (
      aggregate_type text NOT NULL,
      aggregate_id text NOT NULL,
      version bigint NOT NULL,
      PRIMARY KEY (aggregate_type, aggregate_id)
    );`;
}

/**
 * The outbox's indexes on its rows' correlation id and trace id (the console's event journey
 * finds events by them), as SQL for a team's own migration tool, to run after
 * {@link outboxSchemaSql}. Rows without them are left out of the indexes.
 */
export function outboxLookupIndexesSql(schema = 'shop'): string {
  const outbox = `${q(schema)}.outbox`;
  return `
    CREATE INDEX outbox_correlation_id ON ${outbox} ((metadata->>'correlation_id'))
      WHERE metadata->>'correlation_id' IS NOT NULL;
    CREATE INDEX outbox_trace_id ON ${outbox} ((split_part(metadata->>'traceparent', '-', 2)))
      WHERE metadata->>'traceparent' IS NOT NULL;`;
}

/**
 * The outbox's migrations, to run with the owning service's Kysely `Migrator`. The outbox is
 * insert-only; `outbox_heads` holds each aggregate's latest version, so versions never repeat
 * even after old rows are purged.
 */
export function outboxMigrations(options: { schema?: string } = {}): Record<string, Migration> {
  return {
    '0001_outbox': {
      async up(db) {
        // Loaded here: a team on plain `pg` never needs Kysely.
        const { sql } = await import('kysely');
        await sql.raw(outboxSchemaSql(options.schema ?? 'shop')).execute(db);
      },
    },
    '0002_outbox_lookup_indexes': {
      async up(db) {
        const { sql } = await import('kysely');
        await sql.raw(outboxLookupIndexesSql(options.schema ?? 'shop')).execute(db);
      },
    },
  };
}

import {
  assertPayload,
  catalog,
  METADATA_FIELDS,
  type DomainEvent,
  type EventMetadata,
  type EventPayload,
  type EventType,
} from '@sluice/contracts';
import { SluiceError } from '@sluice/errors';
import { sql, type Kysely, type Transaction } from 'kysely';
import type { Migration } from 'kysely/migration';
import { v7 as uuidv7 } from 'uuid';
import type { OutboxErrorCode } from './errors.js';
import { OUTBOX_COLUMNS } from './rows.js';

/** Options for {@link createOutbox} and {@link outboxMigrations}. */
export interface OutboxOptions {
  /** Schema of the `outbox` and `outbox_heads` tables. Default `shop`. */
  schema?: string;
}

/** Who acted, why, and the trace the request belonged to; stored as the events' metadata. */
export interface AppendContext {
  traceparent?: string;
  correlationId?: string;
  /** Id of the event or command that caused these events. */
  causationId?: string;
  actor?: string;
  reason?: string;
}

/** An event to append: a catalog type and its payload. */
export type NewEvent = { [T in EventType]: { type: T; payload: EventPayload<T> } }[EventType];

/** The aggregate the appended events belong to. */
export interface AggregateRef {
  type: string;
  id: string;
  /**
   * The aggregate's version before these events: 0 for a new aggregate. Appending fails with
   * `version_conflict` unless it matches, so versions stay 1, 2, 3, … without gaps or repeats.
   */
  expectedVersion: number;
}

/** The outbox: append events in the caller's transaction; purge old rows in batches. */
export interface Outbox {
  /**
   * Validates `events` against the catalog, assigns UUIDv7 ids and the next versions, and
   * inserts them in `trx`. They commit if and only if `trx` commits.
   *
   * @throws SluiceError `outbox_requires_transaction`, `event_type_unknown`,
   *   `event_payload_invalid`, `event_aggregate_mismatch`, `version_conflict`.
   * @example
   * await db.transaction().execute(async (trx) => {
   *   await trx.insertInto('shop.carts').values(cart).execute();
   *   await outbox.append(trx, { type: 'cart', id: cart.id, expectedVersion: 0 },
   *     [{ type: 'cart.opened.v1', payload: { cartId: cart.id, customerId } }], context);
   * });
   */
  append<DB>(
    trx: Transaction<DB>,
    aggregate: AggregateRef,
    events: readonly NewEvent[],
    context?: AppendContext,
  ): Promise<DomainEvent[]>;
  /**
   * Deletes rows that occurred before `olderThan`, `batchSize` rows per statement, and returns
   * how many went. Safe at any time: the relay reads events from the WAL, not from the table.
   */
  purge<DB>(db: Kysely<DB>, options: { olderThan: Date; batchSize?: number }): Promise<number>;
}

function toMetadata(context: AppendContext): EventMetadata {
  const metadata: EventMetadata = {};
  for (const field of METADATA_FIELDS) {
    const value = context[field.context];
    if (value !== undefined) metadata[field.metadata] = value;
  }
  return metadata;
}

const COLUMNS = sql.raw(OUTBOX_COLUMNS.join(', '));

/** Every event valid against the catalog, and of the aggregate's type. */
function assertEvents(aggregate: AggregateRef, events: readonly NewEvent[]): void {
  for (const event of events) {
    // Throws for unknown types too: callers from plain JavaScript can pass anything.
    assertPayload(event.type, event.payload);
    if (catalog[event.type].aggregateType !== aggregate.type) {
      throw new SluiceError<OutboxErrorCode>(
        'event_aggregate_mismatch',
        `${event.type} belongs to ${catalog[event.type].aggregateType}, not ${aggregate.type}`,
      );
    }
  }
}

/** The events as they are stored: ids, the versions after `expectedVersion`, time, context. */
function eventsOf(
  aggregate: AggregateRef,
  events: readonly NewEvent[],
  context: AppendContext,
): DomainEvent[] {
  const metadata = toMetadata(context);
  const occurredAt = new Date().toISOString();
  return events.map((event, index) => ({
    id: uuidv7(),
    type: event.type,
    aggregateType: aggregate.type,
    aggregateId: aggregate.id,
    aggregateVersion: aggregate.expectedVersion + index + 1,
    occurredAt,
    payload: event.payload,
    metadata,
  }));
}

/** Creates an outbox over `<schema>.outbox`. */
export function createOutbox(options: OutboxOptions = {}): Outbox {
  const schema = options.schema ?? 'shop';
  const outboxTable = sql.table(`${schema}.outbox`);
  const headsTable = sql.table(`${schema}.outbox_heads`);

  /** The statement that claims versions in `outbox_heads`, guarded by the expected version. */
  function claimVersions(aggregate: AggregateRef, count: number) {
    return aggregate.expectedVersion === 0
      ? sql`INSERT INTO ${headsTable} (aggregate_type, aggregate_id, version)
            VALUES (${aggregate.type}, ${aggregate.id}, ${count})
            ON CONFLICT (aggregate_type, aggregate_id) DO NOTHING
            RETURNING version`
      : sql`UPDATE ${headsTable} SET version = version + ${count}
             WHERE aggregate_type = ${aggregate.type} AND aggregate_id = ${aggregate.id}
               AND version = ${aggregate.expectedVersion}
            RETURNING version`;
  }

  return {
    async append(trx, aggregate, events, context = {}) {
      // The type already demands a transaction; this catches casts and plain JavaScript.
      if (!(trx as { isTransaction: boolean }).isTransaction) {
        throw new SluiceError<OutboxErrorCode>(
          'outbox_requires_transaction',
          'outbox.append needs the open transaction that writes the state the events describe',
        );
      }
      if (events.length === 0) return [];
      assertEvents(aggregate, events);
      const appended = eventsOf(aggregate, events, context);
      const rows = appended.map(
        (e) =>
          sql`(${e.id}::uuid, ${e.aggregateType}, ${e.aggregateId}, ${e.aggregateVersion}::bigint, ${e.type},
               ${JSON.stringify(e.payload)}::jsonb, ${JSON.stringify(e.metadata)}::jsonb, ${e.occurredAt}::timestamptz)`,
      );
      // One round trip: the events are inserted only if the version claim succeeded.
      const result = await sql`
        WITH claimed AS (${claimVersions(aggregate, events.length)})
        INSERT INTO ${outboxTable} (${COLUMNS})
        SELECT e.* FROM (VALUES ${sql.join(rows)}) AS e (${COLUMNS})
        WHERE EXISTS (SELECT 1 FROM claimed)`.execute(trx);
      if (Number(result.numAffectedRows ?? 0n) !== events.length) {
        throw new SluiceError<OutboxErrorCode>(
          'version_conflict',
          `${aggregate.type} ${aggregate.id} is not at version ${aggregate.expectedVersion}`,
        );
      }
      return appended;
    },

    async purge(db, { olderThan, batchSize = 10_000 }) {
      let total = 0;
      for (;;) {
        const result = await sql`
          DELETE FROM ${outboxTable} WHERE id IN (
            SELECT id FROM ${outboxTable} WHERE occurred_at < ${olderThan.toISOString()}::timestamptz
             ORDER BY occurred_at LIMIT ${batchSize})`.execute(db);
        const deleted = Number(result.numAffectedRows ?? 0n);
        total += deleted;
        if (deleted < batchSize) return total;
      }
    },
  };
}

/**
 * The outbox's migrations, to run with the owning service's Kysely `Migrator`. The outbox is
 * insert-only; `outbox_heads` holds each aggregate's latest version, so versions never repeat
 * even after old rows are purged.
 */
export function outboxMigrations(options: OutboxOptions = {}): Record<string, Migration> {
  const schema = options.schema ?? 'shop';
  return {
    '0001_outbox': {
      async up(db) {
        await sql`CREATE SCHEMA IF NOT EXISTS ${sql.id(schema)}`.execute(db);
        await sql`
          CREATE TABLE ${sql.table(`${schema}.outbox`)} (
            id uuid PRIMARY KEY,
            aggregate_type text NOT NULL,
            aggregate_id text NOT NULL,
            aggregate_version bigint NOT NULL CHECK (aggregate_version > 0),
            type text NOT NULL,
            payload jsonb NOT NULL,
            metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
            occurred_at timestamptz NOT NULL DEFAULT now(),
            UNIQUE (aggregate_type, aggregate_id, aggregate_version)
          )`.execute(db);
        await sql`CREATE INDEX ${sql.id('outbox_occurred_at')} ON ${sql.table(`${schema}.outbox`)} (occurred_at)`.execute(
          db,
        );
        await sql`
          CREATE TABLE ${sql.table(`${schema}.outbox_heads`)} (
            aggregate_type text NOT NULL,
            aggregate_id text NOT NULL,
            version bigint NOT NULL,
            PRIMARY KEY (aggregate_type, aggregate_id)
          )`.execute(db);
      },
    },
  };
}
export type { OutboxErrorCode } from './errors.js';

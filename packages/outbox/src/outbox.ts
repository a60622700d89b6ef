import {
  assertPayload,
  METADATA_FIELDS,
  type Catalog,
  type DomainEvent,
  type EventDefinitions,
  type EventMetadata,
  type NewEventOf,
} from '@sluice/contracts';
import { SluiceError } from '@sluice/errors';
import { v7 as uuidv7 } from 'uuid';
import type { OutboxErrorCode } from './errors.js';
import { OUTBOX_COLUMNS } from './rows.js';
import { executorOf, identifier, type Executor, type SqlSession } from './sessions.js';

/** Options for {@link createOutbox}. */
export interface OutboxOptions<D extends EventDefinitions> {
  /** The events the outbox takes: appending any other, or an invalid payload, is refused. */
  catalog: Catalog<D>;
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

/** An append as one statement: see {@link Outbox.prepare}. */
export interface PreparedAppend {
  /** The events as they will be stored. */
  events: DomainEvent[];
  /** The statement, with `$n` parameters. */
  text: string;
  values: unknown[];
  /** The error to reject with when the statement failed with `error`. */
  refused: (error: Error) => Error;
}

/** The outbox: append events in the caller's transaction; purge old rows in batches. */
export interface Outbox<D extends EventDefinitions> {
  /**
   * Validates `events` against the catalog, assigns UUIDv7 ids and the next versions, and
   * inserts them in `trx` — a Kysely transaction, or a `pg` client inside `BEGIN`. They commit
   * if and only if `trx` commits. A `version_conflict` is PostgreSQL refusing the statement: the
   * transaction can only roll back.
   *
   * @throws SluiceError `outbox_requires_transaction`, `event_type_unknown`,
   *   `event_payload_invalid`, `event_aggregate_mismatch`, `version_conflict`.
   * @example
   * await db.transaction().execute(async (trx) => {
   *   await trx.insertInto('billing.invoices').values(invoice).execute();
   *   await outbox.append(trx, { type: 'invoice', id: invoice.id, expectedVersion: 0 },
   *     [{ type: 'invoice.issued.v1', payload: { invoiceId: invoice.id, totalCents } }], context);
   * });
   */
  append(
    trx: SqlSession,
    aggregate: AggregateRef,
    events: readonly NewEventOf<{ events: D }>[],
    context?: AppendContext,
  ): Promise<DomainEvent[]>;
  /**
   * The append of `events` as one statement for the caller to run, and the events it stores:
   * validated as {@link Outbox.append} validates them, for sending with the transaction's
   * COMMIT, a round trip less (`atCommit` of `@sluice/database`, given `refused`). The statement
   * fails unless the aggregate is at `expectedVersion`; `refused` names that failure
   * `version_conflict` and passes any other error through. Without events it does nothing.
   *
   * @throws SluiceError `event_type_unknown`, `event_payload_invalid`, `event_aggregate_mismatch`.
   * @example
   * const append = outbox.prepare({ type: 'invoice', id, expectedVersion: 0 }, events, context);
   * await atCommit(trx, [CompiledQuery.raw(append.text, append.values)], append);
   */
  prepare(
    aggregate: AggregateRef,
    events: readonly NewEventOf<{ events: D }>[],
    context?: AppendContext,
  ): PreparedAppend;
  /**
   * Deletes rows that occurred before `olderThan`, `batchSize` rows per statement, and returns
   * how many went. Safe at any time: the relay reads events from the WAL, not from the table.
   */
  purge(db: SqlSession, options: { olderThan: Date; batchSize?: number }): Promise<number>;
}

function toMetadata(context: AppendContext): EventMetadata {
  const metadata: EventMetadata = {};
  for (const field of METADATA_FIELDS) {
    const value = context[field.context];
    if (value !== undefined) metadata[field.metadata] = value;
  }
  return metadata;
}

/** Every event valid against the catalog, and of the aggregate's type. */
function assertEvents<D extends EventDefinitions>(
  catalog: Catalog<D>,
  aggregate: AggregateRef,
  events: readonly { type: string; payload: unknown }[],
): void {
  for (const event of events) {
    // Throws for unknown types too: callers from plain JavaScript can pass anything.
    assertPayload(catalog, event.type, event.payload);
    const owner = catalog.events[event.type]?.aggregateType;
    if (owner !== aggregate.type) {
      throw new SluiceError<OutboxErrorCode>(
        'event_aggregate_mismatch',
        `${event.type} belongs to ${String(owner)}, not ${aggregate.type}`,
      );
    }
  }
}

/** The events as they are stored: ids, the versions after `expectedVersion`, time, context. */
function eventsOf(
  aggregate: AggregateRef,
  events: readonly { type: string; payload: unknown }[],
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

/** The statements of an outbox in `schema`: one text each, whatever the number of events. */
function statements(schema: string) {
  const outbox = `${identifier(schema)}.outbox`;
  const heads = `${identifier(schema)}.outbox_heads`;
  // One statement: without the version claim the events' versions are NULL, which the column
  // refuses, so the statement fails (and can go with the COMMIT, its result unread).
  const insert = (claim: string) => `
    WITH claimed AS (${claim})
    INSERT INTO ${outbox} (${OUTBOX_COLUMNS.join(', ')})
    SELECT e.id, e.aggregate_type, e.aggregate_id,
           CASE WHEN EXISTS (SELECT 1 FROM claimed) THEN e.aggregate_version END,
           e.type, e.payload, e.metadata, e.occurred_at
      FROM unnest($4::uuid[], $5::text[], $6::text[], $7::bigint[], $8::text[],
                  $9::jsonb[], $10::jsonb[], $11::timestamptz[])
           AS e(id, aggregate_type, aggregate_id, aggregate_version, type, payload, metadata,
                occurred_at)`;
  return {
    /** $1 type, $2 id, $3 the version after the events. */
    appendNew: insert(`
      INSERT INTO ${heads} (aggregate_type, aggregate_id, version) VALUES ($1, $2, $3)
      ON CONFLICT (aggregate_type, aggregate_id) DO NOTHING RETURNING version`),
    /** $1 type, $2 id, $3 the version after the events, $12 the version before them. */
    append: insert(`
      UPDATE ${heads} SET version = $3
       WHERE aggregate_type = $1 AND aggregate_id = $2 AND version = $12 RETURNING version`),
    purge: `
      DELETE FROM ${outbox} WHERE id IN (
        SELECT id FROM ${outbox} WHERE occurred_at < $1::timestamptz ORDER BY occurred_at LIMIT $2)`,
  };
}

/**
 * Creates an outbox over `<schema>.outbox` for the events of `catalog`.
 *
 * @example const outbox = createOutbox({ schema: 'billing', catalog });
 */
export function createOutbox<D extends EventDefinitions>(options: OutboxOptions<D>): Outbox<D> {
  const sql = statements(options.schema ?? 'shop');
  const prepare: Outbox<D>['prepare'] = (aggregate, events, context = {}) => {
    if (events.length === 0) return { events: [], text: 'SELECT', values: [], refused: (e) => e };
    assertEvents(options.catalog, aggregate, events);
    const appended = eventsOf(aggregate, events, context);
    const after = aggregate.expectedVersion + events.length;
    const values: unknown[] = [aggregate.type, aggregate.id, after, ...columnsOf(appended)];
    const fresh = aggregate.expectedVersion === 0;
    if (!fresh) values.push(aggregate.expectedVersion);
    const refused = (error: Error) =>
      isUnclaimed(error)
        ? new SluiceError<OutboxErrorCode>(
            'version_conflict',
            `${aggregate.type} ${aggregate.id} is not at version ${aggregate.expectedVersion}`,
            { cause: error },
          )
        : error;
    return { events: appended, text: fresh ? sql.appendNew : sql.append, values, refused };
  };
  return {
    prepare,
    async append(trx, aggregate, events, context = {}) {
      const executor = await executorOf(trx);
      if (events.length === 0) return [];
      const { events: appended, text, values, refused } = prepare(aggregate, events, context);
      await executor(text, values).catch((error: unknown) => {
        throw error instanceof Error ? refused(error) : error;
      });
      return appended;
    },

    async purge(db, { olderThan, batchSize = 10_000 }) {
      const executor: Executor = await executorOf(db, { transaction: false });
      let total = 0;
      for (;;) {
        const deleted = await executor(sql.purge, [olderThan.toISOString(), batchSize]);
        total += deleted;
        if (deleted < batchSize) return total;
      }
    },
  };
}

/**
 * Whether `error` is the outbox's refusal of events whose version claim failed: its statement
 * inserts into no other table of that name (the schema is not compared: PostgreSQL shortens a
 * long one in what it reports).
 */
function isUnclaimed(error: Error): boolean {
  const { code, table, column } = error as Error & Record<string, unknown>;
  return code === '23502' && table === 'outbox' && column === 'aggregate_version';
}

/** The events as column arrays, in `OUTBOX_COLUMNS` order. */
function columnsOf(events: readonly DomainEvent[]): unknown[][] {
  return [
    events.map((e) => e.id),
    events.map((e) => e.aggregateType),
    events.map((e) => e.aggregateId),
    events.map((e) => e.aggregateVersion),
    events.map((e) => e.type),
    events.map((e) => JSON.stringify(e.payload)),
    events.map((e) => JSON.stringify(e.metadata)),
    events.map((e) => e.occurredAt),
  ];
}

import { sql, type Kysely, type Transaction } from 'kysely';
import {
  applyRecords,
  emptyResult,
  type ApplyOptions,
  type BatchResult,
  type DeadLetterSink,
  type IncomingRecord,
} from './batch.js';
import { activeGeneration, instanceOf } from './generations.js';
import type { Projection } from './projection.js';

/** A parked record, as operators see it. */
export interface ParkedEvent {
  projection: string;
  topic: string;
  partition: number;
  offset: string;
  aggregateType: string | null;
  aggregateId: string | null;
  aggregateVersion: number | null;
  reason: string;
  error: string | null;
  attempts: number;
  firstFailedAt: Date;
  lastFailedAt: Date;
}

interface ParkedRow {
  projection: string;
  topic: string;
  partition: number;
  record_offset: string;
  aggregate_type: string | null;
  aggregate_id: string | null;
  aggregate_version: string | null;
  record_key: string | null;
  record_value: string | null;
  record_headers: Record<string, string | undefined>;
  reason: string;
  error: string | null;
  attempts: number;
  first_failed_at: Date;
  last_failed_at: Date;
}

/**
 * Parked events of `projection`'s active generation (of every projection when omitted), oldest
 * first. A generation being rebuilt keeps its own until it becomes active.
 */
export async function listParked<DB>(db: Kysely<DB>, projection?: string): Promise<ParkedEvent[]> {
  const { rows } = await sql<ParkedRow>`
    SELECT COALESCE(g.projection, p.projection) AS projection, topic, partition, record_offset::text,
           aggregate_type, aggregate_id, aggregate_version::text, record_key, record_value, record_headers,
           reason, error, attempts, first_failed_at, last_failed_at
      FROM sluice.parked_events p LEFT JOIN sluice.projection_generations g ON g.instance = p.projection
     WHERE COALESCE(g.state, 'active') = 'active'
       AND ${projection === undefined ? sql`true` : sql`COALESCE(g.projection, p.projection) = ${projection}`}
     ORDER BY p.first_failed_at, p.topic, p.partition, p.record_offset`.execute(db);
  return rows.map((row) => ({
    projection: row.projection,
    topic: row.topic,
    partition: row.partition,
    offset: row.record_offset,
    aggregateType: row.aggregate_type,
    aggregateId: row.aggregate_id,
    aggregateVersion: row.aggregate_version === null ? null : Number(row.aggregate_version),
    reason: row.reason,
    error: row.error,
    attempts: row.attempts,
    firstFailedAt: row.first_failed_at,
    lastFailedAt: row.last_failed_at,
  }));
}

/** Takes an aggregate's parked records out of the table, in their original order. */
async function unpark<DB>(
  trx: Transaction<DB>,
  projection: string,
  aggregateType: string,
  aggregateId: string,
): Promise<IncomingRecord[]> {
  const { rows } = await sql<ParkedRow>`
    DELETE FROM sluice.parked_events
     WHERE projection = ${projection} AND aggregate_type = ${aggregateType} AND aggregate_id = ${aggregateId}
    RETURNING topic, partition, record_offset::text, record_key, record_value, record_headers`.execute(
    trx,
  );
  return rows
    .map((row) => ({
      topic: row.topic,
      partition: row.partition,
      offset: BigInt(row.record_offset),
      key: row.record_key,
      value: row.record_value,
      headers: row.record_headers,
    }))
    .sort((a, b) => (a.offset < b.offset ? -1 : a.offset > b.offset ? 1 : 0));
}

/**
 * Applies an aggregate's parked events again, in order, once their cause is fixed (a handler
 * bug deployed, a gap filled). What still fails is parked again and dead-lettered again.
 */
export async function redriveParked<DB>(
  db: Kysely<DB>,
  projection: Projection<DB>,
  aggregate: { type: string; id: string },
  deadLetters: DeadLetterSink,
  options: ApplyOptions = {},
): Promise<BatchResult> {
  const result = emptyResult();
  await db.transaction().execute(async (trx) => {
    const generation = await activeGeneration(trx, projection.name);
    const instance = instanceOf(projection.name, generation);
    const records = await unpark(trx, instance, aggregate.type, aggregate.id);
    await applyRecords(trx, projection, records, deadLetters, { ...options, generation }, result);
  });
  return result;
}

/**
 * Gives up on one parked record: it counts as applied (its version, or every version up to the
 * next parked one when it could not be decoded), and the aggregate's other parked events are
 * redriven behind it.
 */
export async function skipParked<DB>(
  db: Kysely<DB>,
  projection: Projection<DB>,
  record: { topic: string; partition: number; offset: string },
  deadLetters: DeadLetterSink,
  options: ApplyOptions = {},
): Promise<BatchResult | undefined> {
  const result = emptyResult();
  const found = await db.transaction().execute(async (trx) => {
    const generation = await activeGeneration(trx, projection.name);
    const instance = instanceOf(projection.name, generation);
    const { rows } = await sql<{
      aggregate_type: string | null;
      aggregate_id: string | null;
      aggregate_version: string | null;
    }>`
      DELETE FROM sluice.parked_events
       WHERE projection = ${instance} AND topic = ${record.topic} AND partition = ${record.partition}
         AND record_offset = ${record.offset}::bigint
      RETURNING aggregate_type, aggregate_id, aggregate_version::text`.execute(trx);
    const skipped = rows[0];
    if (skipped === undefined) return false;
    if (skipped.aggregate_type === null || skipped.aggregate_id === null) return true;
    const { rows: next } = await sql<{ version: string | null }>`
      SELECT min(aggregate_version)::text AS version FROM sluice.parked_events
       WHERE projection = ${instance} AND aggregate_type = ${skipped.aggregate_type}
         AND aggregate_id = ${skipped.aggregate_id}`.execute(trx);
    const through =
      skipped.aggregate_version !== null
        ? Number(skipped.aggregate_version)
        : next[0]?.version == null
          ? undefined
          : Number(next[0].version) - 1;
    if (through !== undefined) {
      await sql`
        INSERT INTO sluice.projection_versions (projection, aggregate_type, aggregate_id, version)
        VALUES (${instance}, ${skipped.aggregate_type}, ${skipped.aggregate_id}, ${through})
        ON CONFLICT (projection, aggregate_type, aggregate_id) DO UPDATE SET version = excluded.version
          WHERE sluice.projection_versions.version < excluded.version`.execute(trx);
    }
    const records = await unpark(trx, instance, skipped.aggregate_type, skipped.aggregate_id);
    await applyRecords(trx, projection, records, deadLetters, { ...options, generation }, result);
    return true;
  });
  return found ? result : undefined;
}

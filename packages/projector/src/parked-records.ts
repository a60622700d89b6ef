import { sql, type Kysely, type Transaction } from 'kysely';
import {
  decodeHeaders,
  encodeHeaders,
  rawOf,
  recordFromRaw,
  storableText,
  type IncomingRecord,
} from './records.js';

/** A record set aside, and why. */
export interface Park {
  record: IncomingRecord;
  aggregateType: string | null;
  aggregateId: string | null;
  version: number | null;
  reason: string;
  error?: string;
  attempts: number;
}

/** Parks records with their bytes as Kafka holds them. A record parked before stays as it was. */
export async function parkRecords<DB>(
  trx: Transaction<DB>,
  instance: string,
  parks: readonly Park[],
): Promise<void> {
  for (const park of parks) {
    const raw = rawOf(park.record);
    await sql`
      INSERT INTO sluice.parked_events (projection, topic, partition, record_offset, aggregate_type, aggregate_id,
          aggregate_version, record_key, record_value, record_headers, reason, error, attempts)
      VALUES (${instance}, ${park.record.topic}, ${park.record.partition}, ${park.record.offset.toString()},
          ${park.aggregateType}, ${park.aggregateId}, ${park.version}, ${raw.key}, ${raw.value},
          ${encodeHeaders(raw.headers)}, ${park.reason},
          ${park.error === undefined ? null : storableText(park.error)}, ${park.attempts})
      ON CONFLICT DO NOTHING`.execute(trx);
  }
}

/** A parked record, as operators see it. */
export interface ParkedEvent {
  projection: string;
  topic: string;
  partition: number;
  offset: string;
  aggregateType: string | null;
  aggregateId: string | null;
  aggregateVersion: number | null;
  /** Why it waits: its own failure, `behind_parked`, `version_gap`, or `skipped` (passed over in its turn). */
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
  record_key: Buffer | null;
  record_value: Buffer | null;
  record_headers: Buffer | null;
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
           aggregate_type, aggregate_id, aggregate_version::text, reason, error, attempts,
           first_failed_at, last_failed_at
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
export async function unpark<DB>(
  trx: Transaction<DB>,
  instance: string,
  aggregate: { type: string; id: string },
): Promise<IncomingRecord[]> {
  const { rows } = await sql<ParkedRow>`
    DELETE FROM sluice.parked_events
     WHERE projection = ${instance} AND aggregate_type = ${aggregate.type} AND aggregate_id = ${aggregate.id}
    RETURNING topic, partition, record_offset::text, aggregate_version::text, record_key, record_value,
              record_headers, reason`.execute(trx);
  return rows
    .map((row) => {
      const record = recordFromRaw(
        { topic: row.topic, partition: row.partition, offset: BigInt(row.record_offset) },
        {
          key: row.record_key,
          value: row.record_value,
          headers: decodeHeaders(row.record_headers),
        },
      );
      if (row.reason === 'skipped' && row.aggregate_version !== null) {
        record.skipped = {
          aggregateType: aggregate.type,
          aggregateId: aggregate.id,
          version: Number(row.aggregate_version),
        };
      }
      return record;
    })
    .sort((a, b) => (a.offset < b.offset ? -1 : a.offset > b.offset ? 1 : 0));
}

/** An aggregate's applied version, how many of its records are parked, and the lowest parked version. */
export async function parkedStatus<DB>(
  trx: Transaction<DB>,
  instance: string,
  aggregate: { type: string; id: string },
): Promise<{ applied: number; parked: number; head: number | undefined }> {
  const { rows } = await sql<{ applied: string | null; parked: string; head: string | null }>`
    SELECT (SELECT version::text FROM sluice.projection_versions
             WHERE projection = ${instance} AND aggregate_type = ${aggregate.type}
               AND aggregate_id = ${aggregate.id}) AS applied,
           count(*)::text AS parked, min(aggregate_version)::text AS head
      FROM sluice.parked_events
     WHERE projection = ${instance} AND aggregate_type = ${aggregate.type} AND aggregate_id = ${aggregate.id}`.execute(
    trx,
  );
  const head = rows[0]?.head;
  return {
    applied: Number(rows[0]?.applied ?? 0),
    parked: Number(rows[0]?.parked ?? 0),
    head: head == null ? undefined : Number(head),
  };
}

/**
 * Passes over one parked record: a record with a version stays, marked `skipped`, until its
 * turn; one without is dropped. Returns what it was, or undefined when no such record is parked.
 */
export async function skipRecord<DB>(
  trx: Transaction<DB>,
  instance: string,
  at: { topic: string; partition: number; offset: string },
): Promise<
  { aggregateType: string | null; aggregateId: string | null; version: string | null } | undefined
> {
  const where = sql`projection = ${instance} AND topic = ${at.topic}
    AND partition = ${at.partition} AND record_offset = ${at.offset}::bigint`;
  const { rows } = await sql<{
    aggregate_type: string | null;
    aggregate_id: string | null;
    aggregate_version: string | null;
  }>`SELECT aggregate_type, aggregate_id, aggregate_version::text FROM sluice.parked_events
      WHERE ${where} FOR UPDATE`.execute(trx);
  const found = rows[0];
  if (found === undefined) return undefined;
  const keep = found.aggregate_version !== null && found.aggregate_id !== null;
  await (
    keep
      ? sql`UPDATE sluice.parked_events SET reason = 'skipped', attempts = 0 WHERE ${where}`
      : sql`DELETE FROM sluice.parked_events WHERE ${where}`
  ).execute(trx);
  return {
    aggregateType: found.aggregate_type,
    aggregateId: found.aggregate_id,
    version: found.aggregate_version,
  };
}

/** How many of an aggregate's parked records lie before `at` in its partition. */
export async function parkedAhead<DB>(
  trx: Transaction<DB>,
  instance: string,
  aggregate: { type: string; id: string },
  at: { topic: string; partition: number; offset: string },
): Promise<number> {
  const { rows } = await sql<{ n: string }>`
    SELECT count(*)::text AS n FROM sluice.parked_events
     WHERE projection = ${instance} AND aggregate_type = ${aggregate.type}
       AND aggregate_id = ${aggregate.id} AND (topic, partition, record_offset) <
           (${at.topic}, ${at.partition}, ${at.offset}::bigint)`.execute(trx);
  return Number(rows[0]?.n ?? 0);
}

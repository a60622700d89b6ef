import { SluiceError } from '@sluice/errors';
import { sql, type Kysely, type Transaction } from 'kysely';
import { applyRecords, emptyResult, type ApplyOptions, type BatchResult } from './batch.js';
import { audit, saveProgress, type OperatorRequest } from './bookkeeping.js';
import { activeGeneration, instanceOf } from './generations.js';
import type { Projection } from './projection.js';
import {
  decodeHeaders,
  recordFromRaw,
  type DeadLetterSink,
  type IncomingRecord,
} from './records.js';

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

/** An aggregate still waiting for versions that never arrived. */
export interface VersionGap {
  aggregateType: string;
  aggregateId: string;
  /** The version the projection needs next. */
  expectedVersion: number;
  /** The lowest version parked. */
  nextParkedVersion: number;
}

/** What an operation on parked events did. */
export interface ParkedOutcome {
  result: BatchResult;
  /** Records of the aggregate still parked afterwards. */
  stillParked: number;
  /** Set when the aggregate is still blocked on a gap: accept it to go on. */
  gap: VersionGap | null;
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
async function unpark<DB>(
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

/** How many records of an aggregate are parked, and whether it waits on missing versions. */
async function aggregateStatus<DB>(
  trx: Transaction<DB>,
  instance: string,
  aggregate: { type: string; id: string },
): Promise<Omit<ParkedOutcome, 'result'>> {
  const { rows } = await sql<{ applied: string | null; parked: string; head: string | null }>`
    SELECT (SELECT version::text FROM sluice.projection_versions
             WHERE projection = ${instance} AND aggregate_type = ${aggregate.type}
               AND aggregate_id = ${aggregate.id}) AS applied,
           count(*)::text AS parked, min(aggregate_version)::text AS head
      FROM sluice.parked_events
     WHERE projection = ${instance} AND aggregate_type = ${aggregate.type} AND aggregate_id = ${aggregate.id}`.execute(
    trx,
  );
  const applied = Number(rows[0]?.applied ?? 0);
  const head = rows[0]?.head == null ? undefined : Number(rows[0].head);
  return {
    stillParked: Number(rows[0]?.parked ?? 0),
    gap:
      head !== undefined && head > applied + 1
        ? {
            aggregateType: aggregate.type,
            aggregateId: aggregate.id,
            expectedVersion: applied + 1,
            nextParkedVersion: head,
          }
        : null,
  };
}

/** Applies an aggregate's parked records again, in order; reports what is still parked. */
async function redriveIn<DB>(
  trx: Transaction<DB>,
  projection: Projection<DB>,
  generation: number,
  aggregate: { type: string; id: string },
  deadLetters: DeadLetterSink,
  options: ApplyOptions,
): Promise<ParkedOutcome> {
  const result = emptyResult();
  const instance = instanceOf(projection.name, generation);
  const records = await unpark(trx, instance, aggregate);
  // No memory of earlier failures: an event that fails again is parked again at once.
  const once: ApplyOptions = { ...options, generation };
  delete once.failures;
  await applyRecords(trx, projection, records, deadLetters, once, result);
  return { result, ...(await aggregateStatus(trx, instance, aggregate)) };
}

const summary = (outcome: ParkedOutcome) => ({
  applied: outcome.result.applied,
  skipped: outcome.result.skipped,
  parked: outcome.stillParked,
  gap: outcome.gap,
});

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
  request: OperatorRequest = { actor: 'system' },
): Promise<ParkedOutcome> {
  return db.transaction().execute(async (trx) => {
    const generation = await activeGeneration(trx, projection.name);
    const outcome = await redriveIn(trx, projection, generation, aggregate, deadLetters, options);
    await audited(trx, projection, request, 'redrive', aggregate, summary(outcome));
    return outcome;
  });
}

/**
 * Gives up on exactly one parked record. A record with a version is passed over in its turn: it
 * counts as applied once the versions before it are, so what waited behind it applies in order
 * (and what waits ahead of it stays parked). A record without one (it could not be decoded) is
 * dropped. The aggregate's parked records are then redriven. Undefined if no such record is parked.
 */
export async function skipParked<DB>(
  db: Kysely<DB>,
  projection: Projection<DB>,
  record: { topic: string; partition: number; offset: string },
  deadLetters: DeadLetterSink,
  options: ApplyOptions = {},
  request: OperatorRequest = { actor: 'system' },
): Promise<ParkedOutcome | undefined> {
  return db.transaction().execute(async (trx) => {
    const generation = await activeGeneration(trx, projection.name);
    const instance = instanceOf(projection.name, generation);
    const where = sql`projection = ${instance} AND topic = ${record.topic}
      AND partition = ${record.partition} AND record_offset = ${record.offset}::bigint`;
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
    const target = { ...record, aggregateVersion: found.aggregate_version };
    if (found.aggregate_type === null || found.aggregate_id === null) {
      const outcome = { result: emptyResult(), stillParked: 0, gap: null };
      await audited(trx, projection, request, 'skip', target, summary(outcome));
      return outcome;
    }
    const aggregate = { type: found.aggregate_type, id: found.aggregate_id };
    // Only a record at the head of its aggregate's queue lets the others move; one further back
    // waits for its turn, and the records ahead of it are left as they are.
    const { rows: ahead } = await sql<{ n: string }>`
      SELECT count(*)::text AS n FROM sluice.parked_events
       WHERE projection = ${instance} AND aggregate_type = ${aggregate.type}
         AND aggregate_id = ${aggregate.id} AND (topic, partition, record_offset) <
             (${record.topic}, ${record.partition}, ${record.offset}::bigint)`.execute(trx);
    const outcome =
      Number(ahead[0]?.n ?? 0) === 0
        ? await redriveIn(trx, projection, generation, aggregate, deadLetters, options)
        : { result: emptyResult(), ...(await aggregateStatus(trx, instance, aggregate)) };
    await audited(trx, projection, request, 'skip', target, summary(outcome));
    return outcome;
  });
}

/** Records an operation on parked events in the operator audit log. */
function audited<DB>(
  trx: Transaction<DB>,
  projection: Projection<DB>,
  request: OperatorRequest,
  action: string,
  target: unknown,
  outcome: unknown,
): Promise<void> {
  return audit(trx, {
    actor: request.actor,
    action,
    projection: projection.name,
    target,
    reason: request.reason ?? null,
    outcome,
  });
}

/**
 * Accepts that an aggregate's missing versions will never come (they were lost upstream): the
 * projection goes on from its lowest parked version, and the aggregate's parked records are
 * redriven.
 *
 * @throws SluiceError `no_version_gap` when the aggregate is not blocked on a gap.
 */
export async function acceptVersionGap<DB>(
  db: Kysely<DB>,
  projection: Projection<DB>,
  aggregate: { type: string; id: string },
  deadLetters: DeadLetterSink,
  options: ApplyOptions = {},
  request: OperatorRequest = { actor: 'system' },
): Promise<ParkedOutcome & { accepted: { from: number; to: number } }> {
  return db.transaction().execute(async (trx) => {
    const generation = await activeGeneration(trx, projection.name);
    const instance = instanceOf(projection.name, generation);
    const { gap } = await aggregateStatus(trx, instance, aggregate);
    if (gap === null) {
      throw new SluiceError(
        'no_version_gap',
        `${aggregate.type} ${aggregate.id} of ${projection.name} is not waiting for missing versions; ` +
          'redrive or skip its parked records instead',
      );
    }
    const accepted = { from: gap.expectedVersion, to: gap.nextParkedVersion - 1 };
    await saveProgress(trx, instance, [{ ...aggregate, version: accepted.to }], []);
    const outcome = await redriveIn(trx, projection, generation, aggregate, deadLetters, options);
    const outcomeSummary = { accepted, ...summary(outcome) };
    await audited(trx, projection, request, 'accept_version_gap', aggregate, outcomeSummary);
    return { ...outcome, accepted };
  });
}

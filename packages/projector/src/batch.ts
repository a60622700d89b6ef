import { fromKafkaRecord, payloadErrors, type DomainEvent } from '@sluice/contracts';
import { errorMessage, SluiceError } from '@sluice/errors';
import { sql, type Kysely, type Transaction } from 'kysely';
import { instanceOf, tableNamer } from './generations.js';
import type { Projection, TableNamer } from './projection.js';

/** A Kafka record as the projector received it. */
export interface IncomingRecord {
  topic: string;
  partition: number;
  offset: bigint;
  key: string | null;
  value: string | null;
  headers: Record<string, string | undefined>;
}

/** A record that will not be applied, with why. */
export interface DeadLetter {
  record: IncomingRecord;
  errorClass: string;
  message: string;
  attempts: number;
  firstFailure: Date;
  lastFailure: Date;
}

/** Where records that cannot be applied go (`sluice.dlq.<projection>`), before the batch commits. */
export interface DeadLetterSink {
  send(projection: string, letters: readonly DeadLetter[]): Promise<void>;
}

/** What one batch did. */
export interface BatchResult {
  applied: number;
  /** Already applied (same offset redelivered, or the relay sent it again at a new offset). */
  duplicates: number;
  parked: number;
  deadLettered: number;
  gaps: number;
  /** Per applied event: its `occurredAt` time, for latency metrics. */
  appliedAt: DomainEvent[];
}

/** A partition whose records start past its stored checkpoint: the consumer goes back to `offset`. */
export interface Rewind {
  topic: string;
  partition: number;
  offset: bigint;
}

/** What {@link applyBatch} did. */
export interface AppliedBatch {
  result: BatchResult;
  /** Partitions left unapplied because Kafka's position is past their checkpoint. */
  rewinds: Rewind[];
}

/** A result with nothing counted yet. */
export function emptyResult(): BatchResult {
  return { applied: 0, duplicates: 0, parked: 0, deadLettered: 0, gaps: 0, appliedAt: [] };
}

/** Options for {@link applyBatch}. */
export interface ApplyOptions {
  /** Turns old event versions into current ones before `apply`. */
  upcast?: (event: DomainEvent) => DomainEvent;
  /** Attempts of a failing handler before its event is dead-lettered. Default 3. */
  maxAttempts?: number;
  /** First pause between attempts, doubling. Default 50. */
  retryDelayMs?: number;
  /** The generation applied: its tables and bookkeeping. Default 1. */
  generation?: number;
  /** Strips a prefix from topic names to get the aggregate type. Default ''. */
  topicPrefix?: string;
}

type Decoded =
  | { ok: true; record: IncomingRecord; event: DomainEvent }
  | {
      ok: false;
      record: IncomingRecord;
      errorClass: string;
      message: string;
      /** Set when the record is a well-formed event whose payload breaks its schema. */
      event?: DomainEvent;
    };

function aggregateTypeOf(topic: string, prefix: string): string | null {
  const base = `${prefix}outbox.event.`;
  return topic.startsWith(base) ? topic.slice(base.length) : null;
}

/** A claim-checked record's payload: the relay stored it in PostgreSQL under the event id. */
async function claimChecked<DB>(
  trx: Transaction<DB>,
  record: IncomingRecord,
): Promise<IncomingRecord> {
  const { rows } = await sql<{ payload: string }>`
    SELECT payload::text AS payload FROM sluice.claim_checks WHERE event_id::text = ${record.headers.ce_id ?? ''}`.execute(
    trx,
  );
  return { ...record, value: rows[0]?.payload ?? null };
}

function decode(record: IncomingRecord, upcast: (event: DomainEvent) => DomainEvent): Decoded {
  try {
    const dataref = record.headers.ce_dataref;
    if (record.value === null && dataref !== undefined)
      throw new SluiceError('claim_check_missing', `No claim-checked payload for ${dataref}`);
    const event = fromKafkaRecord(record);
    const errors = payloadErrors(event.type, event.payload);
    if (errors.length > 0) {
      return {
        ok: false,
        record,
        errorClass: 'schema_invalid',
        message: `${event.type}: ${errors.join('; ')}`,
        event,
      };
    }
    return { ok: true, record, event: upcast(event) };
  } catch (error) {
    const errorClass = error instanceof SluiceError ? error.code : 'decode_failed';
    return { ok: false, record, errorClass, message: errorMessage(error) };
  }
}

/** Identifies a topic-partition (in a batch, the apply queue). */
export const partitionKey = (topic: string, partition: number): string =>
  `${topic}\u0000${partition}`;

/** Identifies an aggregate within a batch. */
const aggregateKey = (type: string, id: string): string => `${type}\u0000${id}`;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A handler threw on the fast path: the batch is applied again one event at a time. */
class HandlerFailed extends Error {}

/** PostgreSQL aborted the transaction for a deadlock or a serialization conflict. */
export function isConflict(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  return code === '40P01' || code === '40001';
}

/** Where a partition's checkpoint moves when the batch commits. */
interface Advance {
  topic: string;
  partition: number;
  nextOffset: bigint;
}

/**
 * The stored checkpoints of those of `assignment`'s partitions (topic → partitions) this
 * projection instance has applied before: where its consumer must start.
 */
export async function readCheckpoints<DB>(
  db: Kysely<DB>,
  instance: string,
  assignment: Readonly<Record<string, readonly number[]>>,
): Promise<Rewind[]> {
  const topics: string[] = [];
  const partitions: number[] = [];
  for (const [topic, list] of Object.entries(assignment)) {
    for (const partition of list) {
      topics.push(topic);
      partitions.push(partition);
    }
  }
  if (topics.length === 0) return [];
  const { rows } = await sql<{ topic: string; partition: number; next_offset: string | number }>`
    SELECT c.topic, c.partition, c.next_offset FROM sluice.projection_checkpoints c
      JOIN unnest(${topics}::text[], ${partitions}::int[]) AS k(topic, partition)
        ON c.topic = k.topic AND c.partition = k.partition
     WHERE c.projection = ${instance}`.execute(db);
  return rows.map((row) => ({
    topic: row.topic,
    partition: row.partition,
    offset: BigInt(row.next_offset),
  }));
}

/**
 * Applies a batch in one transaction — records of one partition or of several: skips offsets
 * below each partition's checkpoint, filters versions already applied, parks gaps, poison and
 * everything queued behind them per aggregate, applies the rest in order, and advances
 * checkpoints and versions — so a view changes exactly once per event however often Kafka
 * delivers it. The handler first gets the whole batch; if it throws, the batch is applied
 * again in a new transaction, one event at a time, to isolate the poison.
 */
export async function applyBatch<DB>(
  db: Kysely<DB>,
  projection: Projection<DB>,
  records: readonly IncomingRecord[],
  deadLetters: DeadLetterSink,
  options: ApplyOptions = {},
): Promise<AppliedBatch> {
  try {
    return await applyBatchOnce(db, projection, records, deadLetters, options, false);
  } catch (error) {
    if (!(error instanceof HandlerFailed)) throw error;
    return applyBatchOnce(db, projection, records, deadLetters, options, true);
  }
}

async function applyBatchOnce<DB>(
  db: Kysely<DB>,
  projection: Projection<DB>,
  records: readonly IncomingRecord[],
  deadLetters: DeadLetterSink,
  options: ApplyOptions,
  careful: boolean,
): Promise<AppliedBatch> {
  const result = emptyResult();
  const rewinds: Rewind[] = [];
  const partitions = new Map<string, IncomingRecord[]>();
  for (const record of records) {
    const key = partitionKey(record.topic, record.partition);
    const list = partitions.get(key);
    if (list === undefined) partitions.set(key, [record]);
    else list.push(record);
  }
  if (partitions.size === 0) return { result, rewinds };
  const instance = instanceOf(projection.name, options.generation ?? 1);
  const batches = [...partitions.values()].map((list) => ({
    topic: list[0]?.topic ?? '',
    partition: list[0]?.partition ?? 0,
    records: list,
  }));
  // A fixed lock order: two processes sharing partitions during a rebalance cannot deadlock.
  batches.sort((a, b) =>
    a.topic === b.topic ? a.partition - b.partition : a.topic < b.topic ? -1 : 1,
  );

  await db.transaction().execute(async (trx) => {
    // Creates (at 0) and locks the partitions' checkpoints in one statement: a process that
    // lost a partition in a rebalance waits here, then finds its offsets already applied.
    const { rows } = await sql<{ topic: string; partition: number; next_offset: string | number }>`
      INSERT INTO sluice.projection_checkpoints AS c (projection, topic, partition, next_offset)
      SELECT ${instance}, k.topic, k.partition, 0
        FROM unnest(${batches.map((b) => b.topic)}::text[], ${batches.map((b) => b.partition)}::int[])
             WITH ORDINALITY AS k(topic, partition, n)
       ORDER BY k.n
      ON CONFLICT (projection, topic, partition) DO UPDATE SET next_offset = c.next_offset
      RETURNING c.topic, c.partition, c.next_offset`.execute(trx);
    const checkpoints = new Map(
      rows.map((row) => [partitionKey(row.topic, row.partition), BigInt(row.next_offset)]),
    );
    const fresh: IncomingRecord[] = [];
    const advances: Advance[] = [];
    for (const batch of batches) {
      const nextOffset = checkpoints.get(partitionKey(batch.topic, batch.partition)) ?? 0n;
      const unseen = batch.records.filter((record) => record.offset >= nextOffset);
      const last = unseen.at(-1);
      // Kafka's own position can be ahead of the checkpoint (a restored database, a reset
      // group); applying from there would skip events.
      if (unseen[0] !== undefined && unseen[0].offset > nextOffset) {
        rewinds.push({ topic: batch.topic, partition: batch.partition, offset: nextOffset });
        continue;
      }
      result.duplicates += batch.records.length - unseen.length;
      if (last === undefined) continue;
      fresh.push(...unseen);
      advances.push({
        topic: batch.topic,
        partition: batch.partition,
        nextOffset: last.offset + 1n,
      });
    }
    if (fresh.length === 0) return;
    await applyRecords(trx, projection, fresh, deadLetters, options, result, { careful, advances });
  });
  return { result, rewinds };
}

/**
 * The heart of a batch, also used to redrive parked events: decode, filter versions already
 * applied, park gaps, poison and what queues behind them, apply the rest, record versions,
 * dead-letter what cannot be applied (before the caller commits).
 */
export async function applyRecords<DB>(
  trx: Transaction<DB>,
  projection: Projection<DB>,
  records: readonly IncomingRecord[],
  deadLetters: DeadLetterSink,
  options: ApplyOptions,
  result: BatchResult,
  batch: { careful: boolean; advances: readonly Advance[] } = { careful: true, advances: [] },
): Promise<void> {
  const upcast = options.upcast ?? ((event: DomainEvent) => event);
  const maxAttempts = options.maxAttempts ?? 3;
  const instance = instanceOf(projection.name, options.generation ?? 1);
  const decoded: Decoded[] = [];
  for (const record of records) {
    const claimed =
      record.value === null && record.headers.ce_dataref !== undefined
        ? await claimChecked(trx, record)
        : record;
    decoded.push(decode(claimed, upcast));
  }

  // Current versions and parked aggregates of everything in the batch.
  const aggregates = new Map<string, [type: string, id: string]>();
  for (const item of decoded) {
    const type = item.ok
      ? item.event.aggregateType
      : aggregateTypeOf(item.record.topic, options.topicPrefix ?? '');
    const id = item.ok ? item.event.aggregateId : item.record.key;
    if (type !== null && id !== null) aggregates.set(aggregateKey(type, id), [type, id]);
  }
  const pairs = [...aggregates.values()];
  const versions = new Map<string, number>();
  const parked = new Set<string>();
  if (pairs.length > 0) {
    const types = pairs.map((p) => p[0]);
    const ids = pairs.map((p) => p[1]);
    // One round trip for both: applied versions ('v') and parked aggregates ('p'). int8 arrives
    // as text unless the pool parses it; either way it becomes a number here.
    const { rows } = await sql<{
      kind: 'v' | 'p';
      aggregate_type: string;
      aggregate_id: string;
      version: string | number | null;
    }>`
        SELECT 'v' AS kind, v.aggregate_type, v.aggregate_id, v.version FROM sluice.projection_versions v
          JOIN unnest(${types}::text[], ${ids}::text[]) AS k(aggregate_type, aggregate_id)
            ON v.aggregate_type = k.aggregate_type AND v.aggregate_id = k.aggregate_id
         WHERE v.projection = ${instance}
        UNION ALL
        SELECT DISTINCT 'p', p.aggregate_type, p.aggregate_id, NULL::bigint FROM sluice.parked_events p
          JOIN unnest(${types}::text[], ${ids}::text[]) AS k(aggregate_type, aggregate_id)
            ON p.aggregate_type = k.aggregate_type AND p.aggregate_id = k.aggregate_id
         WHERE p.projection = ${instance}`.execute(trx);
    for (const row of rows) {
      const key = aggregateKey(row.aggregate_type, row.aggregate_id);
      if (row.kind === 'v') versions.set(key, Number(row.version));
      else parked.add(key);
    }
  }

  const letters: DeadLetter[] = [];
  const toPark: {
    record: IncomingRecord;
    event?: DomainEvent;
    reason: string;
    error?: string;
    attempts: number;
  }[] = [];
  const ready: DomainEvent[] = [];
  for (const item of decoded) {
    if (!item.ok) {
      const now = new Date();
      letters.push({
        record: item.record,
        errorClass: item.errorClass,
        message: item.message,
        attempts: 1,
        firstFailure: now,
        lastFailure: now,
      });
      toPark.push({
        record: item.record,
        ...(item.event === undefined ? {} : { event: item.event }),
        reason: item.errorClass,
        error: item.message,
        attempts: 1,
      });
      const type = aggregateTypeOf(item.record.topic, options.topicPrefix ?? '');
      if (type !== null && item.record.key !== null)
        parked.add(aggregateKey(type, item.record.key));
      continue;
    }
    const { event } = item;
    const key = aggregateKey(event.aggregateType, event.aggregateId);
    const applied = versions.get(key) ?? 0;
    if (event.aggregateVersion <= applied) {
      result.duplicates += 1;
      continue;
    }
    if (parked.has(key)) {
      toPark.push({ record: item.record, event, reason: 'behind_parked', attempts: 0 });
      continue;
    }
    if (event.aggregateVersion > applied + 1) {
      result.gaps += 1;
      parked.add(key);
      toPark.push({
        record: item.record,
        event,
        reason: 'version_gap',
        error: `expected version ${applied + 1}, got ${event.aggregateVersion}`,
        attempts: 0,
      });
      continue;
    }
    versions.set(key, event.aggregateVersion);
    ready.push(event);
  }

  await applyEvents(trx, projection, ready, {
    careful: batch.careful,
    maxAttempts,
    retryDelayMs: options.retryDelayMs ?? 50,
    table: tableNamer(options.generation ?? 1),
    onPoison(event, failure) {
      const item = decoded.find((d) => d.ok && d.event.id === event.id);
      if (item === undefined) return;
      if (failure === 'behind') {
        toPark.push({ record: item.record, event, reason: 'behind_parked', attempts: 0 });
        return;
      }
      const key = aggregateKey(event.aggregateType, event.aggregateId);
      parked.add(key);
      versions.set(key, event.aggregateVersion - 1);
      const message = errorMessage(failure.error);
      letters.push({
        record: item.record,
        errorClass: 'handler_failed',
        message,
        attempts: failure.attempts,
        firstFailure: failure.firstFailure,
        lastFailure: new Date(),
      });
      toPark.push({
        record: item.record,
        event,
        reason: 'handler_failed',
        error: message,
        attempts: failure.attempts,
      });
    },
    onApplied(event) {
      result.applied += 1;
      result.appliedAt.push(event);
    },
  });

  if (toPark.length > 0) {
    for (const park of toPark) {
      await sql`
          INSERT INTO sluice.parked_events (projection, topic, partition, record_offset, aggregate_type, aggregate_id,
              aggregate_version, record_key, record_value, record_headers, reason, error, attempts)
          VALUES (${instance}, ${park.record.topic}, ${park.record.partition}, ${park.record.offset.toString()},
              ${park.event?.aggregateType ?? aggregateTypeOf(park.record.topic, options.topicPrefix ?? '')},
              ${park.event?.aggregateId ?? park.record.key}, ${park.event?.aggregateVersion ?? null},
              ${park.record.key}, ${park.record.value}, ${JSON.stringify(park.record.headers)}::jsonb,
              ${park.reason}, ${park.error ?? null}, ${park.attempts})
          ON CONFLICT DO NOTHING`.execute(trx);
    }
    result.parked += toPark.length;
  }

  // Versions and checkpoints in one statement.
  const applied = [...versions].filter(([, version]) => version > 0);
  if (applied.length > 0 || batch.advances.length > 0) {
    const { advances } = batch;
    await sql`
        WITH versions AS (
          INSERT INTO sluice.projection_versions (projection, aggregate_type, aggregate_id, version)
          SELECT ${instance}, t, i, v
            FROM unnest(${applied.map(([key]) => aggregates.get(key)?.[0])}::text[],
                        ${applied.map(([key]) => aggregates.get(key)?.[1])}::text[],
                        ${applied.map(([, version]) => version)}::bigint[]) AS x(t, i, v)
          ON CONFLICT (projection, aggregate_type, aggregate_id) DO UPDATE SET version = excluded.version
            WHERE sluice.projection_versions.version < excluded.version
        )
        UPDATE sluice.projection_checkpoints c SET next_offset = x.n, updated_at = now()
          FROM unnest(${advances.map((a) => a.topic)}::text[], ${advances.map((a) => a.partition)}::int[],
                      ${advances.map((a) => a.nextOffset.toString())}::bigint[]) AS x(t, p, n)
         WHERE c.projection = ${instance} AND c.topic = x.t AND c.partition = x.p`.execute(trx);
  }
  if (letters.length > 0) {
    // Before commit: if the commit fails the batch comes again and the letter is repeated,
    // never lost.
    await deadLetters.send(projection.name, letters);
    result.deadLettered += letters.length;
  }
}

/**
 * Applies events in one call; carefully, one at a time, each in a savepoint and retried with
 * backoff, so a poison event is isolated and the rest still apply.
 */
async function applyEvents<DB>(
  trx: Transaction<DB>,
  projection: Projection<DB>,
  events: readonly DomainEvent[],
  options: {
    careful: boolean;
    maxAttempts: number;
    retryDelayMs: number;
    table: TableNamer;
    /** A handler kept failing on `event`, or `event` is queued behind such a failure. */
    onPoison(
      event: DomainEvent,
      failure: 'behind' | { error: unknown; attempts: number; firstFailure: Date },
    ): void;
    onApplied(event: DomainEvent): void;
  },
): Promise<void> {
  if (events.length === 0) return;
  const context = { trx, table: options.table };
  if (!options.careful) {
    try {
      await projection.apply(events, context);
    } catch (error) {
      // A conflict aborted the whole transaction, whichever event met it: the batch runs again.
      throw isConflict(error) ? error : new HandlerFailed(errorMessage(error));
    }
    for (const event of events) options.onApplied(event);
    return;
  }
  const poisoned = new Set<string>();
  for (const event of events) {
    const key = aggregateKey(event.aggregateType, event.aggregateId);
    if (poisoned.has(key)) {
      // Order per aggregate: nothing after a poison event applies before it.
      options.onPoison(event, 'behind');
      continue;
    }
    const firstFailure = new Date();
    for (let attempt = 1; ; attempt += 1) {
      await sql`SAVEPOINT sluice_event`.execute(trx);
      try {
        await projection.apply([event], context);
        await sql`RELEASE SAVEPOINT sluice_event`.execute(trx);
        options.onApplied(event);
        break;
      } catch (error) {
        await sql`ROLLBACK TO SAVEPOINT sluice_event`.execute(trx);
        if (attempt >= options.maxAttempts) {
          poisoned.add(key);
          options.onPoison(event, { error, attempts: attempt, firstFailure });
          break;
        }
        await sleep(options.retryDelayMs * 2 ** (attempt - 1));
      }
    }
  }
}

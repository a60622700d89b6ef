import type { DomainEvent } from '@sluice/contracts';
import { pipelined } from '@sluice/database/statements';
import type { Tracer } from '@sluice/tracing';
import { sql, type Kysely, type Transaction } from 'kysely';
import { HandlerFailed, type HandlerFailure } from './apply-events.js';
import { applyRecords } from './apply-records.js';
import {
  aggregatesOf,
  lockAndReadStatements,
  lockedAndRead,
  partitionKey,
  setLastRecord,
  type Advance,
  type LockedAndRead,
  type PartitionOffset,
} from './bookkeeping.js';
import { aggregateOfRecord } from './classify.js';
import { instanceOf } from './generations.js';
import { processSpans, type RecordOutcome } from './process-spans.js';
import type { Projection } from './projection.js';
import { fingerprint, type DeadLetterSink, type IncomingRecord, type Reveal } from './records.js';

/** What one batch did. */
export interface BatchResult {
  applied: number;
  /** Already applied (same offset redelivered, or the relay sent it again at a new offset). */
  duplicates: number;
  parked: number;
  deadLettered: number;
  gaps: number;
  /** Parked records an operator skipped, passed over in their turn. */
  skipped: number;
  /** Records below a checkpoint that had never been applied: the topic was recreated or rewritten. */
  belowCheckpoint: number;
  /** Per applied event: its `occurredAt` time, for latency metrics. */
  appliedAt: DomainEvent[];
  /** What happened to each record, when traced. */
  outcomes?: RecordOutcome[];
}

/** A partition whose records start past its stored checkpoint (`offset`) at `first`. */
export interface Rewind extends PartitionOffset {
  first: bigint;
}

/** A partition whose end lies below its checkpoint: its offsets went back (a recreated topic). */
export interface OffsetReset {
  topic: string;
  partition: number;
  /** The checkpoint that was past the partition's end. */
  from: bigint;
  /** Where it stands now. */
  to: bigint;
}

/** What {@link applyBatch} did. */
export interface AppliedBatch {
  result: BatchResult;
  /** Partitions left unapplied because Kafka's position is past their checkpoint. */
  rewinds: Rewind[];
  resets: OffsetReset[];
  /**
   * Partitions left unapplied whose record before the checkpoint is not the one applied there:
   * their offsets were reused (a recreated topic). Read them again from their start: the
   * version guard applies only what was never applied. `offset` is the checkpoint.
   */
  rewritten: PartitionOffset[];
}

/** A result with nothing counted yet. */
export function emptyResult(): BatchResult {
  return {
    applied: 0,
    duplicates: 0,
    parked: 0,
    deadLettered: 0,
    gaps: 0,
    skipped: 0,
    belowCheckpoint: 0,
    appliedAt: [],
  };
}

/** Options for {@link applyBatch}. */
export interface ApplyOptions {
  /** Turns old event versions into current ones before `apply`. */
  upcast?: (event: DomainEvent) => DomainEvent;
  /**
   * Opens the sealed personal fields of an event before `apply` (`ProjectorOptions.reveal`), for a
   * projection that opts in (`personalData: 'reveal'`).
   */
  reveal?: Reveal;
  /** Attempts of a failing handler before its event is dead-lettered. Default 3. */
  maxAttempts?: number;
  /** First pause between attempts, doubling up to {@link MAX_RETRY_DELAY_MS}. Default 50. */
  retryDelayMs?: number;
  /** The generation applied: its tables and bookkeeping. Default 1. */
  generation?: number;
  /** Strips a prefix from topic names to get the aggregate type. Default ''. */
  topicPrefix?: string;
  /** Each partition's end (high watermark) when its records were fetched, by partition key. */
  ends?: ReadonlyMap<string, bigint>;
  /**
   * Handler failures by event id, kept by the caller between attempts. Without it a failing
   * handler's event is dead-lettered at once.
   */
  failures?: Map<string, HandlerFailure>;
  /** Record each partition batch in `sluice.projection_applied_batches` (the event journey). Default true. */
  recordBatches?: boolean;
  /** Traces each record a transaction commits: a `process <topic>` span. Default: none. */
  tracer?: Tracer | undefined;
  /** The Kafka consumer group the records came through, for the spans. */
  consumerGroup?: string;
}

/**
 * Applies a batch in one transaction — records of one partition or of several: filters versions
 * already applied, parks gaps, poison and everything queued behind them per aggregate, applies
 * the rest in order, and advances checkpoints and versions — so a view changes exactly once per
 * event however often Kafka delivers it. The handler first gets the whole batch; if it throws,
 * the batch is applied again in a new transaction, one event at a time, to isolate the poison.
 *
 * Records below a partition's checkpoint pass the version guard too: an event there that was
 * never applied (the topic was recreated or rewritten) is applied and counted, never dropped.
 *
 * @throws HandlerRetry when a handler failed and its event has attempts left.
 */
export async function applyBatch<DB>(
  db: Kysely<DB>,
  projection: Projection<DB>,
  records: readonly IncomingRecord[],
  deadLetters: DeadLetterSink,
  options: ApplyOptions,
): Promise<AppliedBatch> {
  try {
    return await applyBatchOnce(db, projection, records, deadLetters, options, false);
  } catch (error) {
    if (!(error instanceof HandlerFailed)) throw error;
    return applyBatchOnce(db, projection, records, deadLetters, options, true);
  }
}

/** Records per partition, partitions in a fixed lock order (no deadlock between processes). */
function byPartition(records: readonly IncomingRecord[]) {
  const partitions = new Map<string, IncomingRecord[]>();
  for (const record of records) {
    const key = partitionKey(record.topic, record.partition);
    const list = partitions.get(key);
    if (list === undefined) partitions.set(key, [record]);
    else list.push(record);
  }
  const batches = [...partitions].map(([key, list]) => ({
    key,
    topic: list[0]?.topic ?? '',
    partition: list[0]?.partition ?? 0,
    records: list,
  }));
  return batches.sort((a, b) =>
    a.topic === b.topic ? a.partition - b.partition : a.topic < b.topic ? -1 : 1,
  );
}

/** A batch of one projection's records, as {@link applyBatch} takes it. */
export interface BatchRequest<DB> {
  projection: Projection<DB>;
  records: readonly IncomingRecord[];
  deadLetters: DeadLetterSink;
  options: ApplyOptions;
}

async function applyBatchOnce<DB>(
  db: Kysely<DB>,
  projection: Projection<DB>,
  records: readonly IncomingRecord[],
  deadLetters: DeadLetterSink,
  options: ApplyOptions,
  careful: boolean,
): Promise<AppliedBatch> {
  const request = { projection, records, deadLetters, options };
  const startedAt = Date.now();
  let committingAt = startedAt;
  const applied = await db.transaction().execute(async (trx) => {
    const done = await applyInTransaction(trx, request, careful);
    committingAt = Date.now();
    return done;
  });
  traceBatch(request, applied, { startedAt, committingAt });
  return applied;
}

/** Draws the process spans of what a committed batch did, when traced. */
export function traceBatch<DB>(
  { projection, options }: BatchRequest<DB>,
  applied: AppliedBatch,
  timing: { startedAt: number; committingAt: number },
): void {
  const { outcomes } = applied.result;
  if (options.tracer === undefined || outcomes === undefined) return;
  const consumerGroup = options.consumerGroup;
  processSpans(options.tracer, projection.name, outcomes, { ...timing, consumerGroup });
}

/**
 * The work of {@link applyBatch} in `trx`, carefully (event by event) or not; the caller commits.
 * What it saves goes with the commit: nothing after it in `trx` may read its checkpoints.
 */
export async function applyInTransaction<DB>(
  trx: Transaction<DB>,
  request: BatchRequest<DB>,
  careful: boolean,
): Promise<AppliedBatch> {
  const [applied] = await applyAllInTransaction(trx, [request], careful);
  return applied ?? emptyApplied();
}

/**
 * {@link applyInTransaction} for several projections' batches (of distinct projection instances,
 * in lock order): their checkpoints locked and aggregates read in one round trip, then each
 * applied in turn. With `lockTimeoutMs`, a lock waited for longer fails the transaction
 * (`55P03`).
 */
export async function applyAllInTransaction<DB>(
  trx: Transaction<DB>,
  requests: readonly BatchRequest<DB>[],
  careful: boolean,
  lockTimeoutMs?: number,
): Promise<AppliedBatch[]> {
  const prepared = requests.map((request) => prepareBatch(trx, request));
  const timeout =
    lockTimeoutMs === undefined
      ? []
      : [sql`SELECT set_config('lock_timeout', ${`${lockTimeoutMs}ms`}, true)`.compile(trx)];
  const results = await pipelined(trx, [
    ...timeout,
    ...prepared.flatMap((one) => one?.statements ?? []),
  ]);
  const applied: AppliedBatch[] = [];
  let at = timeout.length;
  for (const one of prepared) {
    if (one === undefined) {
      applied.push(emptyApplied());
      continue;
    }
    const locked = lockedAndRead(results.slice(at, at + one.statements.length));
    at += one.statements.length;
    applied.push(await applyLocked(trx, one, locked, careful));
  }
  return applied;
}

const emptyApplied = (): AppliedBatch => ({
  result: emptyResult(),
  rewinds: [],
  resets: [],
  rewritten: [],
});

/** A batch by partition, its aggregates, and the statements that lock and read for it. */
function prepareBatch<DB>(trx: Transaction<DB>, request: BatchRequest<DB>) {
  const batches = byPartition(request.records);
  if (batches.length === 0) return undefined;
  const instance = instanceOf(request.projection.name, request.options.generation ?? 1);
  // Read as the checkpoints are locked: those the records' topics and keys name.
  const prefix = request.options.topicPrefix ?? '';
  const aggregates = aggregatesOf(request.records, (record) => aggregateOfRecord(record, prefix));
  const statements = lockAndReadStatements(trx, instance, batches, [...aggregates.values()]);
  return { request, batches, instance, aggregates, statements };
}

/** Applies a prepared batch whose checkpoints are locked. */
async function applyLocked<DB>(
  trx: Transaction<DB>,
  prepared: NonNullable<ReturnType<typeof prepareBatch<DB>>>,
  { checkpoints, known }: LockedAndRead,
  careful: boolean,
): Promise<AppliedBatch> {
  const { request, batches, instance, aggregates } = prepared;
  const { projection, deadLetters, options } = request;
  const applied = emptyApplied();
  const fresh: IncomingRecord[] = [];
  const below = new Set<IncomingRecord>();
  const advances: Advance[] = [];
  for (const batch of batches) {
    const checkpoint = checkpoints.get(batch.key) ?? { next: 0n, lastRecord: null };
    const taken = await takeRecords(trx, instance, batch, checkpoint, options, applied);
    if (taken === undefined) continue;
    for (const record of taken.records) {
      if (taken.below && record.offset < checkpoint.next) below.add(record);
      fresh.push(record);
    }
    if (taken.advance !== undefined) advances.push(taken.advance);
  }
  if (fresh.length === 0) return applied;
  await applyRecords(trx, projection, fresh, deadLetters, options, applied.result, {
    careful,
    advances,
    below,
    read: { aggregates, known },
    last: true,
  });
  return applied;
}

/**
 * Which of a partition's records the batch applies, and where its checkpoint moves; undefined
 * when it applies none (noted in `applied` as a rewind or a rewritten partition).
 */
async function takeRecords<DB>(
  trx: Transaction<DB>,
  instance: string,
  batch: { topic: string; partition: number; key: string; records: IncomingRecord[] },
  checkpoint: { next: bigint; lastRecord: string | null },
  options: ApplyOptions,
  applied: AppliedBatch,
): Promise<{ records: IncomingRecord[]; below: boolean; advance?: Advance } | undefined> {
  const first = batch.records[0];
  const last = batch.records.at(-1);
  if (first === undefined || last === undefined) return undefined;
  const at = { topic: batch.topic, partition: batch.partition };
  const advance = {
    ...at,
    offset: last.offset + 1n,
    lastRecord: fingerprint(last),
    from: first.offset,
  };
  const end = options.ends?.get(batch.key);
  if (end !== undefined && end < checkpoint.next) {
    // The partition ends below its checkpoint: its offsets went back (a recreated or restored
    // topic). Its records are new to this partition; the version guard keeps out the events
    // applied before.
    applied.resets.push({ ...at, from: checkpoint.next, to: advance.offset });
    return { records: batch.records, below: false, advance };
  }
  // Kafka's own position can be ahead of the checkpoint (a restored database, a reset group,
  // records Kafka no longer holds): the caller finds out which.
  if (first.offset > checkpoint.next) {
    applied.rewinds.push({ ...at, offset: checkpoint.next, first: first.offset });
    return undefined;
  }
  const before = batch.records.find((record) => record.offset === checkpoint.next - 1n);
  if (before !== undefined && checkpoint.lastRecord !== null) {
    const seen = fingerprint(before);
    if (seen !== checkpoint.lastRecord) {
      await setLastRecord(trx, instance, at, seen);
      applied.rewritten.push({ ...at, offset: checkpoint.next });
      return undefined;
    }
  }
  return {
    records: batch.records,
    below: true,
    ...(last.offset >= checkpoint.next ? { advance } : {}),
  };
}

import type { DomainEvent } from '@sluice/contracts';
import { errorMessage, SluiceError } from '@sluice/errors';
import { sql, type Kysely, type Transaction } from 'kysely';
import {
  aggregateKey,
  lockCheckpoints,
  parkRecords,
  partitionKey,
  readAggregates,
  saveProgress,
  setLastRecord,
  type Advance,
  type Park,
  type PartitionOffset,
} from './bookkeeping.js';
import { instanceOf, tableNamer } from './generations.js';
import type { Projection, TableNamer } from './projection.js';
import {
  claimCheckId,
  decode,
  fingerprint,
  storableKey,
  type Decoded,
  type IncomingRecord,
} from './record.js';

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
  /** Parked records an operator skipped, passed over in their turn. */
  skipped: number;
  /** Records below a checkpoint that had never been applied: the topic was recreated or rewritten. */
  belowCheckpoint: number;
  /** Per applied event: its `occurredAt` time, for latency metrics. */
  appliedAt: DomainEvent[];
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

/** A handler's failures of one event so far, remembered across attempts of its batch. */
export interface HandlerFailure {
  attempts: number;
  firstFailure: Date;
}

/** Options for {@link applyBatch}. */
export interface ApplyOptions {
  /** Turns old event versions into current ones before `apply`. */
  upcast?: (event: DomainEvent) => DomainEvent;
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
}

/** The longest pause between two attempts of a failing handler. */
export const MAX_RETRY_DELAY_MS = 2000;

/** Failure memories kept at most; the oldest go first. */
const MAX_REMEMBERED_FAILURES = 10_000;

/**
 * A handler failed and its event has attempts left: the batch was rolled back, and is to be
 * applied again after `delayMs` (no transaction or lock is held meanwhile).
 */
export class HandlerRetry extends SluiceError {
  constructor(
    readonly delayMs: number,
    cause: unknown,
  ) {
    super('handler_retry', `A handler failed; the batch is retried in ${delayMs} ms`, {
      cause,
      retriable: true,
    });
  }
}

/** A handler threw on the fast path: the batch is applied again one event at a time. */
class HandlerFailed extends Error {}

/** PostgreSQL aborted the transaction for a deadlock or a serialization conflict. */
export function isConflict(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  return code === '40P01' || code === '40001';
}

function aggregateTypeOf(topic: string, prefix: string): string | null {
  const base = `${prefix}outbox.event.`;
  return topic.startsWith(base) ? topic.slice(base.length) : null;
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
  options: ApplyOptions = {},
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

async function applyBatchOnce<DB>(
  db: Kysely<DB>,
  projection: Projection<DB>,
  records: readonly IncomingRecord[],
  deadLetters: DeadLetterSink,
  options: ApplyOptions,
  careful: boolean,
): Promise<AppliedBatch> {
  const result = emptyResult();
  const applied: AppliedBatch = { result, rewinds: [], resets: [], rewritten: [] };
  const batches = byPartition(records);
  if (batches.length === 0) return applied;
  const instance = instanceOf(projection.name, options.generation ?? 1);

  await db.transaction().execute(async (trx) => {
    const checkpoints = await lockCheckpoints(trx, instance, batches);
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
    if (fresh.length === 0) return;
    await applyRecords(trx, projection, fresh, deadLetters, options, result, {
      careful,
      advances,
      below,
    });
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
  const advance = { ...at, offset: last.offset + 1n, lastRecord: fingerprint(last) };
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

/** A claim-checked record's payload: the relay stored it in PostgreSQL under the event id. */
async function claimChecked<DB>(
  trx: Transaction<DB>,
  record: IncomingRecord,
  eventId: string,
): Promise<IncomingRecord> {
  const { rows } = await sql<{ payload: string }>`
    SELECT payload::text AS payload FROM sluice.claim_checks WHERE event_id = ${eventId}::uuid`.execute(
    trx,
  );
  return { ...record, value: rows[0]?.payload ?? null };
}

/** An item of a batch in order: a decoded record, or a parked record an operator skipped. */
type Item = Decoded | { skip: NonNullable<IncomingRecord['skipped']>; record: IncomingRecord };

/** What goes to the handler in order: an event, or a skipped record's turn. */
export type Ready =
  | { event: DomainEvent; record: IncomingRecord }
  | { skip: NonNullable<IncomingRecord['skipped']>; record: IncomingRecord };

async function decodeAll<DB>(
  trx: Transaction<DB>,
  records: readonly IncomingRecord[],
  options: ApplyOptions,
): Promise<Item[]> {
  const upcast = options.upcast ?? ((event: DomainEvent) => event);
  const items: Item[] = [];
  for (const record of records) {
    if (record.skipped !== undefined) {
      items.push({ skip: record.skipped, record });
      continue;
    }
    const claimId = claimCheckId(record);
    items.push(
      decode(claimId === undefined ? record : await claimChecked(trx, record, claimId), upcast),
    );
  }
  return items;
}

/** The aggregate an item belongs to, if it names one PostgreSQL can hold. */
function aggregateOf(item: Item, prefix: string): [type: string, id: string] | undefined {
  if ('skip' in item) return [item.skip.aggregateType, item.skip.aggregateId];
  if (item.ok) return [item.event.aggregateType, item.event.aggregateId];
  const type = aggregateTypeOf(item.record.topic, prefix);
  const id = storableKey(item.record.key);
  return type === null || id === null ? undefined : [type, id];
}

/**
 * The heart of a batch, also used to redrive parked events: decode, filter versions already
 * applied, park gaps, poison and what queues behind them, apply the rest, record versions,
 * dead-letter what cannot be applied (before the caller commits). Records in `below` lie below
 * their partition's checkpoint: only events never applied are taken from them.
 */
export async function applyRecords<DB>(
  trx: Transaction<DB>,
  projection: Projection<DB>,
  records: readonly IncomingRecord[],
  deadLetters: DeadLetterSink,
  options: ApplyOptions,
  result: BatchResult,
  batch: {
    careful: boolean;
    advances: readonly Advance[];
    below?: ReadonlySet<IncomingRecord>;
  } = { careful: true, advances: [] },
): Promise<void> {
  const instance = instanceOf(projection.name, options.generation ?? 1);
  const prefix = options.topicPrefix ?? '';
  const items = await decodeAll(trx, records, options);
  const aggregates = new Map<string, [type: string, id: string]>();
  for (const item of items) {
    const aggregate = aggregateOf(item, prefix);
    if (aggregate !== undefined) aggregates.set(aggregateKey(...aggregate), aggregate);
  }
  const { versions, parked } = await readAggregates(trx, instance, [...aggregates.values()]);
  const letters: DeadLetter[] = [];
  const toPark: Park[] = [];
  const ready: Ready[] = [];
  const park = (record: IncomingRecord, fields: Omit<Park, 'record'>) =>
    toPark.push({ record, ...fields });

  for (const item of items) {
    const aggregate = aggregateOf(item, prefix);
    const key = aggregate === undefined ? undefined : aggregateKey(...aggregate);
    if (batch.below?.has(item.record) === true) {
      // Below the checkpoint: applied, parked or dead-lettered before, unless the partition's
      // offsets were reused for events this projection never saw.
      const unseen =
        'event' in item &&
        item.ok &&
        key !== undefined &&
        !parked.has(key) &&
        item.event.aggregateVersion > (versions.get(key) ?? 0);
      if (!unseen) {
        result.duplicates += 1;
        continue;
      }
      result.belowCheckpoint += 1;
    }
    if ('skip' in item) {
      const { version } = item.skip;
      const applied = versions.get(key ?? '') ?? 0;
      if (version <= applied) result.duplicates += 1;
      else if (parked.has(key ?? '') || version > applied + 1) {
        if (key !== undefined) parked.add(key);
        park(item.record, { ...skippedFields(item.skip), reason: 'skipped', attempts: 0 });
      } else {
        versions.set(key ?? '', version);
        ready.push(item);
      }
      continue;
    }
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
      park(item.record, {
        aggregateType: aggregate?.[0] ?? null,
        aggregateId: aggregate?.[1] ?? null,
        version: item.event?.aggregateVersion ?? null,
        reason: item.errorClass,
        error: item.message,
        attempts: 1,
      });
      if (key !== undefined) parked.add(key);
      continue;
    }
    const { event } = item;
    const eventKey = aggregateKey(event.aggregateType, event.aggregateId);
    const applied = versions.get(eventKey) ?? 0;
    if (event.aggregateVersion <= applied) {
      result.duplicates += 1;
      continue;
    }
    if (parked.has(eventKey)) {
      park(item.record, { ...eventFields(event), reason: 'behind_parked', attempts: 0 });
      continue;
    }
    if (event.aggregateVersion > applied + 1) {
      result.gaps += 1;
      parked.add(eventKey);
      park(item.record, {
        ...eventFields(event),
        reason: 'version_gap',
        error: `expected version ${applied + 1}, got ${event.aggregateVersion}`,
        attempts: 0,
      });
      continue;
    }
    versions.set(eventKey, event.aggregateVersion);
    ready.push(item);
  }

  await applyEvents(trx, projection, ready, {
    careful: batch.careful,
    maxAttempts: options.maxAttempts ?? 3,
    retryDelayMs: options.retryDelayMs ?? 50,
    table: tableNamer(options.generation ?? 1),
    failures: options.failures,
    onPoison(item, failure) {
      if ('skip' in item) {
        park(item.record, { ...skippedFields(item.skip), reason: 'skipped', attempts: 0 });
        return;
      }
      const { event } = item;
      if (failure === 'behind') {
        park(item.record, { ...eventFields(event), reason: 'behind_parked', attempts: 0 });
        return;
      }
      versions.set(
        aggregateKey(event.aggregateType, event.aggregateId),
        event.aggregateVersion - 1,
      );
      const message = errorMessage(failure.error);
      letters.push({
        record: item.record,
        errorClass: 'handler_failed',
        message,
        attempts: failure.attempts,
        firstFailure: failure.firstFailure,
        lastFailure: new Date(),
      });
      park(item.record, {
        ...eventFields(event),
        reason: 'handler_failed',
        error: message,
        attempts: failure.attempts,
      });
    },
    onApplied(item) {
      if ('skip' in item) {
        result.skipped += 1;
        return;
      }
      result.applied += 1;
      result.appliedAt.push(item.event);
    },
  });

  await parkRecords(trx, instance, toPark);
  result.parked += toPark.length;
  const raised = [...versions]
    .filter(([, version]) => version > 0)
    .map(([key, version]) => {
      const [type, id] = aggregates.get(key) ?? ['', ''];
      return { type, id, version };
    });
  await saveProgress(trx, instance, raised, batch.advances);
  if (letters.length > 0) {
    // Before commit: if the commit fails the batch comes again and the letter is repeated,
    // never lost.
    await deadLetters.send(projection.name, letters);
    result.deadLettered += letters.length;
  }
}

const eventFields = (event: DomainEvent) => ({
  aggregateType: event.aggregateType,
  aggregateId: event.aggregateId,
  version: event.aggregateVersion,
});

const skippedFields = (skip: NonNullable<IncomingRecord['skipped']>) => ({
  aggregateType: skip.aggregateType,
  aggregateId: skip.aggregateId,
  version: skip.version,
});

const readyKey = (item: Ready): string =>
  'skip' in item
    ? aggregateKey(item.skip.aggregateType, item.skip.aggregateId)
    : aggregateKey(item.event.aggregateType, item.event.aggregateId);

/** One more failure of `eventId`'s handler, remembered for the next attempt. */
function remember(
  failures: Map<string, HandlerFailure> | undefined,
  eventId: string,
): HandlerFailure {
  const known = failures?.get(eventId);
  const failure = {
    attempts: (known?.attempts ?? 0) + 1,
    firstFailure: known?.firstFailure ?? new Date(),
  };
  if (failures !== undefined) {
    failures.delete(eventId);
    failures.set(eventId, failure);
    const oldest = failures.keys().next();
    if (failures.size > MAX_REMEMBERED_FAILURES && oldest.done !== true)
      failures.delete(oldest.value);
  }
  return failure;
}

/**
 * Applies the ready events in one call; or carefully, one at a time, each in a savepoint, so a
 * poison event is isolated and the rest still apply. A failing event with attempts left makes
 * the whole batch roll back ({@link HandlerRetry}): its pause happens outside the transaction.
 */
async function applyEvents<DB>(
  trx: Transaction<DB>,
  projection: Projection<DB>,
  ready: readonly Ready[],
  options: {
    careful: boolean;
    maxAttempts: number;
    retryDelayMs: number;
    table: TableNamer;
    failures: Map<string, HandlerFailure> | undefined;
    /** A handler kept failing on `item`, or `item` is queued behind such a failure. */
    onPoison(
      item: Ready,
      failure: 'behind' | { error: unknown; attempts: number; firstFailure: Date },
    ): void;
    onApplied(item: Ready): void;
  },
): Promise<void> {
  if (ready.length === 0) return;
  const context = { trx, table: options.table };
  if (!options.careful) {
    const events = ready.flatMap((item) => ('event' in item ? [item.event] : []));
    try {
      if (events.length > 0) await projection.apply(events, context);
    } catch (error) {
      // A conflict aborted the whole transaction, whichever event met it: the batch runs again.
      throw isConflict(error) ? error : new HandlerFailed(errorMessage(error));
    }
    for (const item of ready) options.onApplied(item);
    return;
  }
  /** Aggregates behind a poison event or an event to retry: nothing after it applies before it. */
  const blocked = new Set<string>();
  let retry: { delayMs: number; cause: unknown } | undefined;
  for (const item of ready) {
    const key = readyKey(item);
    if (blocked.has(key)) {
      options.onPoison(item, 'behind');
      continue;
    }
    if ('skip' in item) {
      options.onApplied(item);
      continue;
    }
    await sql`SAVEPOINT sluice_event`.execute(trx);
    try {
      await projection.apply([item.event], context);
      await sql`RELEASE SAVEPOINT sluice_event`.execute(trx);
      options.failures?.delete(item.event.id);
      options.onApplied(item);
    } catch (error) {
      if (isConflict(error)) throw error;
      await sql`ROLLBACK TO SAVEPOINT sluice_event`.execute(trx);
      blocked.add(key);
      const failure = remember(options.failures, item.event.id);
      if (options.failures === undefined || failure.attempts >= options.maxAttempts) {
        // Remembered still: if another event's retry rolls this batch back, this one is not
        // given a fresh round of attempts.
        options.onPoison(item, { error, ...failure });
        continue;
      }
      const delayMs = Math.min(
        options.retryDelayMs * 2 ** (failure.attempts - 1),
        MAX_RETRY_DELAY_MS,
      );
      retry = { delayMs: Math.max(retry?.delayMs ?? 0, delayMs), cause: error };
    }
  }
  if (retry !== undefined) throw new HandlerRetry(retry.delayMs, retry.cause);
}

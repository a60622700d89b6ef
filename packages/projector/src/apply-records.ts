import type { DomainEvent } from '@sluice/contracts';
import { errorMessage, SluiceError } from '@sluice/errors';
import { CompiledQuery, type Transaction } from 'kysely';
import { getClaimCheck } from '@sluice/outbox/claim-checks';
import { applyEvents } from './apply-events.js';
import type { ApplyOptions, BatchResult } from './batch.js';
import {
  aggregateKey,
  aggregatesOf,
  readAggregates,
  saveProgress,
  type Advance,
  type KnownAggregates,
} from './bookkeeping.js';
import {
  aggregateOf,
  classify,
  eventFields,
  skippedFields,
  type Classified,
  type Item,
  type Ready,
} from './classify.js';
import { forgetWaiting } from './erasure.js';
import { instanceOf, tableNamer } from './generations.js';
import { parkRecords } from './parked-records.js';
import { OpenedValues } from './personal-data.js';
import { outcomesOf } from './process-spans.js';
import type { Projection } from './projection.js';
import {
  claimCheckId,
  decode,
  type BatchSql,
  type Decoded,
  type DeadLetterSink,
  type IncomingRecord,
  type PayloadValidator,
  type Reveal,
} from './records.js';

/** `trx` as a {@link Reveal} runs SQL. */
const batchSql = <DB>(trx: Transaction<DB>): BatchSql => ({
  query: (text, values = []) => trx.executeQuery(CompiledQuery.raw(text, values)),
});

/** A claim-checked record's payload: the relay stored it in PostgreSQL under the event id. */
async function claimChecked<DB>(
  trx: Transaction<DB>,
  record: IncomingRecord,
  eventId: string,
): Promise<IncomingRecord> {
  return { ...record, value: (await getClaimCheck(batchSql(trx), eventId)) ?? null };
}

/**
 * A decoded event with its personal fields opened; the record stays as published, so parked
 * rows and dead letters keep them sealed. A SluiceError not marked retriable is the event's own
 * (it is set aside as not decoding); anything else (a master key missing, the database) fails
 * the batch, which rolls back and is retried.
 */
async function revealed(sql: BatchSql, item: Decoded, reveal: Reveal): Promise<Decoded> {
  if (!item.ok) return item;
  try {
    return { ...item, event: await reveal(item.event, sql) };
  } catch (error) {
    if (!(error instanceof SluiceError) || error.retriable) throw error;
    return {
      ok: false,
      record: item.record,
      errorClass: error.code,
      message: errorMessage(error),
      event: item.event,
    };
  }
}

/** Decodes records, taking claim-checked payloads from PostgreSQL; skipped ones stay as they are. */
async function decodeAll<DB>(
  trx: Transaction<DB>,
  records: readonly IncomingRecord[],
  catalog: PayloadValidator,
  options: ApplyOptions,
): Promise<Item[]> {
  const upcast = options.upcast ?? ((event: DomainEvent) => event);
  // One for the whole batch: what the reveal hook keeps per `sql` lives for this transaction.
  const sql = batchSql(trx);
  const items: Item[] = [];
  for (const record of records) {
    if (record.skipped !== undefined) {
      items.push({ skip: record.skipped, record });
      continue;
    }
    const claimId = claimCheckId(record);
    const claimed = claimId === undefined ? record : await claimChecked(trx, record, claimId);
    items.push(decode(claimed, catalog, upcast));
  }
  const { reveal } = options;
  if (reveal === undefined) return items;
  // Side by side, so that a hook can read what all of them need at once (`@sluice/privacy`
  // reads the batch's subject keys in one statement).
  const opening = items.map((item): Promise<Item> =>
    'skip' in item ? Promise.resolve(item) : revealed(sql, item, reveal),
  );
  return Promise.all(opening);
}

/**
 * The heart of a batch, also used to redrive parked events: decode → classify (filter versions
 * already applied, park gaps, poison and what queues behind them) → apply the ready events →
 * record versions, parked records and checkpoints, and dead-letter what cannot be applied
 * (before the caller commits). Records in `below` lie below their partition's checkpoint.
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
    /** Aggregates already read with the checkpoints (`lockAndReadStatements`), and what they hold. */
    read?: { aggregates: ReadonlyMap<string, unknown>; known: KnownAggregates };
    /** Nothing after this in the transaction reads versions or checkpoints: saved at commit. */
    last?: boolean;
  } = { careful: true, advances: [] },
): Promise<void> {
  const instance = instanceOf(projection.name, options.generation ?? 1);
  const topicPrefix = options.topicPrefix ?? '';
  const opened = new OpenedValues();
  const { reveal, ...rest } = options;
  const revealing = opened.revealFor(projection, reveal);
  const decodeOptions = revealing === undefined ? rest : { ...rest, reveal: revealing };
  const items = await decodeAll(trx, records, projection.catalog, decodeOptions);
  const aggregates = aggregatesOf(items, (item) => aggregateOf(item, topicPrefix));
  const known = await readAggregates(trx, instance, [...aggregates.values()], batch.read);
  const sorted = classify(items, known, {
    topicPrefix,
    now: new Date(),
    ...(batch.below === undefined ? {} : { below: batch.below }),
  });
  result.duplicates += sorted.duplicates;
  result.gaps += sorted.gaps;
  result.belowCheckpoint += sorted.belowCheckpoint;
  const applied = options.tracer === undefined ? undefined : new Set<IncomingRecord>();
  await applyEvents(trx, projection, sorted.ready, {
    careful: batch.careful,
    maxAttempts: options.maxAttempts ?? 3,
    retryDelayMs: options.retryDelayMs ?? 50,
    table: tableNamer(options.generation ?? 1),
    failures: options.failures,
    onPoison: (item, failure) => poisoned(sorted, item, failure, opened),
    onApplied(item) {
      applied?.add(item.record);
      if ('skip' in item) {
        result.skipped += 1;
        return;
      }
      result.applied += 1;
      result.appliedAt.push(item.event);
    },
  }).catch((error: unknown) => {
    // What the consumer logs, or retries after a pause: without the batch's personal data.
    throw opened.redactError(error);
  });
  if (applied !== undefined) result.outcomes = outcomesOf(records, sorted, applied);
  await forgetWaiting(trx, projection, items, sorted.parks, tableNamer(options.generation ?? 1));
  await parkRecords(trx, instance, sorted.parks);
  result.parked += sorted.parks.length;
  const raised = [...sorted.versions]
    .filter(([key, version]) => version > 0 && version !== known.versions.get(key))
    .map(([key, version]) => {
      const [type, id] = aggregates.get(key) ?? ['', ''];
      return { type, id, version };
    });
  const journey =
    options.recordBatches === false
      ? undefined
      : { projection: projection.name, generation: options.generation ?? 1 };
  await saveProgress(
    trx,
    instance,
    raised,
    batch.advances,
    journey,
    batch.last === true ? 'atCommit' : 'now',
  );
  if (sorted.letters.length > 0) {
    // Before commit: if the commit fails the batch comes again and the letter is repeated,
    // never lost.
    await deadLetters.send(projection.name, sorted.letters);
    result.deadLettered += sorted.letters.length;
  }
}

/**
 * A ready item that did not apply: parked (and dead-lettered when its own handler failed, with
 * the clear values opened in it redacted from the error).
 */
function poisoned(
  sorted: Classified,
  item: Ready,
  failure: 'behind' | { error: unknown; attempts: number; firstFailure: Date },
  opened: OpenedValues,
): void {
  if ('skip' in item) {
    sorted.parks.push({
      record: item.record,
      ...skippedFields(item.skip),
      reason: 'skipped',
      attempts: 0,
    });
    return;
  }
  const { event, record } = item;
  if (failure === 'behind') {
    sorted.parks.push({ record, ...eventFields(event), reason: 'behind_parked', attempts: 0 });
    return;
  }
  sorted.versions.set(
    aggregateKey(event.aggregateType, event.aggregateId),
    event.aggregateVersion - 1,
  );
  // The event's personal data stays out of the parked row, the dead letter and the logs.
  const message = opened.redactorOf(event)(errorMessage(failure.error));
  sorted.letters.push({
    record,
    errorClass: 'handler_failed',
    message,
    attempts: failure.attempts,
    firstFailure: failure.firstFailure,
    lastFailure: new Date(),
  });
  sorted.parks.push({
    record,
    ...eventFields(event),
    reason: 'handler_failed',
    error: message,
    attempts: failure.attempts,
  });
}

import { errorMessage, SluiceError } from '@sluice/errors';
import { sql, type Transaction } from 'kysely';
import { aggregateKey } from './bookkeeping.js';
import type { Ready } from './classify.js';
import type { Projection, TableNamer } from './projection.js';

/** A handler's failures of one event so far, remembered across attempts of its batch. */
export interface HandlerFailure {
  attempts: number;
  firstFailure: Date;
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

/** A handler threw on the fast path: the batch is to be applied again one event at a time. */
export class HandlerFailed extends Error {}

/** PostgreSQL aborted the transaction for a deadlock or a serialization conflict. */
export function isConflict(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  return code === '40P01' || code === '40001';
}

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

const readyKey = (item: Ready): string =>
  'skip' in item
    ? aggregateKey(item.skip.aggregateType, item.skip.aggregateId)
    : aggregateKey(item.event.aggregateType, item.event.aggregateId);

/** How {@link applyEvents} runs, and what it tells. */
export interface ApplyEventsOptions {
  /** One event at a time, each in a savepoint; otherwise all in one call. */
  careful: boolean;
  maxAttempts: number;
  retryDelayMs: number;
  table: TableNamer;
  /** Failures by event id, kept between attempts; without it a failing event is poison at once. */
  failures: Map<string, HandlerFailure> | undefined;
  /** A handler kept failing on `item`, or `item` is queued behind such a failure. */
  onPoison(
    item: Ready,
    failure: 'behind' | { error: unknown; attempts: number; firstFailure: Date },
  ): void;
  onApplied(item: Ready): void;
}

/**
 * Applies the ready events in one call; or carefully, one at a time, each in a savepoint, so a
 * poison event is isolated and the rest still apply. A failing event with attempts left makes
 * the whole batch roll back ({@link HandlerRetry}): its pause happens outside the transaction.
 *
 * @throws HandlerFailed on the fast path, HandlerRetry on the careful one.
 */
export async function applyEvents<DB>(
  trx: Transaction<DB>,
  projection: Projection<DB>,
  ready: readonly Ready[],
  options: ApplyEventsOptions,
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
    } else if ('skip' in item) {
      options.onApplied(item);
    } else {
      const failed = await applyOne(trx, projection, item, context, options);
      if (failed === undefined) continue;
      blocked.add(key);
      if (failed.delayMs !== undefined)
        retry = { delayMs: Math.max(retry?.delayMs ?? 0, failed.delayMs), cause: failed.error };
    }
  }
  if (retry !== undefined) throw new HandlerRetry(retry.delayMs, retry.cause);
}

/** Applies one event in a savepoint; what failed, and when to retry if it has attempts left. */
async function applyOne<DB>(
  trx: Transaction<DB>,
  projection: Projection<DB>,
  item: Extract<Ready, { event: unknown }>,
  context: { trx: Transaction<DB>; table: TableNamer },
  options: ApplyEventsOptions,
): Promise<{ error: unknown; delayMs?: number } | undefined> {
  await sql`SAVEPOINT sluice_event`.execute(trx);
  try {
    await projection.apply([item.event], context);
    await sql`RELEASE SAVEPOINT sluice_event`.execute(trx);
    options.failures?.delete(item.event.id);
    options.onApplied(item);
    return undefined;
  } catch (error) {
    if (isConflict(error)) throw error;
    await sql`ROLLBACK TO SAVEPOINT sluice_event`.execute(trx);
    const failure = remember(options.failures, item.event.id);
    if (options.failures === undefined || failure.attempts >= options.maxAttempts) {
      // Remembered still: if another event's retry rolls this batch back, this one is not
      // given a fresh round of attempts.
      options.onPoison(item, { error, ...failure });
      return { error };
    }
    const delayMs = options.retryDelayMs * 2 ** (failure.attempts - 1);
    return { error, delayMs: Math.min(delayMs, MAX_RETRY_DELAY_MS) };
  }
}

import { SluiceError } from '@sluice/errors';
import type { Kysely, Transaction } from 'kysely';
import { applyRecords } from './apply-records.js';
import { processSpans } from './process-spans.js';
import { emptyResult, type ApplyOptions, type BatchResult } from './batch.js';
import { audit, type OperatorRequest } from './audit.js';
import { saveProgress } from './bookkeeping.js';
import { parkedAhead, parkedStatus, skipRecord, unpark } from './parked-records.js';
import { activeGeneration, instanceOf } from './generations.js';
import type { Projection } from './projection.js';
import type { DeadLetterSink } from './records.js';
import type { ProjectorErrorCode } from './errors.js';

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

/** How many records of an aggregate are parked, and whether it waits on missing versions. */
async function aggregateStatus<DB>(
  trx: Transaction<DB>,
  instance: string,
  aggregate: { type: string; id: string },
): Promise<Omit<ParkedOutcome, 'result'>> {
  const { applied, parked, head } = await parkedStatus(trx, instance, aggregate);
  return {
    stillParked: parked,
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

/** Runs an operator's transaction, then draws the process spans of what it redrove. */
async function redriving<T extends ParkedOutcome | undefined>(
  projection: string,
  options: ApplyOptions,
  run: () => Promise<T>,
): Promise<T> {
  const startedAt = Date.now();
  const outcome = await run();
  const outcomes = outcome?.result.outcomes;
  if (options.tracer !== undefined && outcomes !== undefined)
    processSpans(options.tracer, projection, outcomes, { startedAt, redrive: true });
  return outcome;
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
  options: ApplyOptions,
  request: OperatorRequest = { actor: 'system' },
): Promise<ParkedOutcome> {
  return redriving(projection.name, options, () =>
    db.transaction().execute(async (trx) => {
      const generation = await activeGeneration(trx, projection.name);
      const outcome = await redriveIn(trx, projection, generation, aggregate, deadLetters, options);
      await audited(trx, projection, request, 'redrive', aggregate, summary(outcome));
      return outcome;
    }),
  );
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
  options: ApplyOptions,
  request: OperatorRequest = { actor: 'system' },
): Promise<ParkedOutcome | undefined> {
  return redriving(projection.name, options, () =>
    db.transaction().execute(async (trx) => {
      const generation = await activeGeneration(trx, projection.name);
      const instance = instanceOf(projection.name, generation);
      const found = await skipRecord(trx, instance, record);
      if (found === undefined) return undefined;
      const target = { ...record, aggregateVersion: found.version };
      if (found.aggregateType === null || found.aggregateId === null) {
        const outcome = { result: emptyResult(), stillParked: 0, gap: null };
        await audited(trx, projection, request, 'skip', target, summary(outcome));
        return outcome;
      }
      const aggregate = { type: found.aggregateType, id: found.aggregateId };
      // Only a record at the head of its aggregate's queue lets the others move; one further back
      // waits for its turn, and the records ahead of it are left as they are.
      const outcome =
        (await parkedAhead(trx, instance, aggregate, record)) === 0
          ? await redriveIn(trx, projection, generation, aggregate, deadLetters, options)
          : { result: emptyResult(), ...(await aggregateStatus(trx, instance, aggregate)) };
      await audited(trx, projection, request, 'skip', target, summary(outcome));
      return outcome;
    }),
  );
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
  options: ApplyOptions,
  request: OperatorRequest = { actor: 'system' },
): Promise<ParkedOutcome & { accepted: { from: number; to: number } }> {
  return redriving(projection.name, options, () =>
    db.transaction().execute(async (trx) => {
      const generation = await activeGeneration(trx, projection.name);
      const instance = instanceOf(projection.name, generation);
      const { gap } = await aggregateStatus(trx, instance, aggregate);
      if (gap === null) {
        throw new SluiceError<ProjectorErrorCode>(
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
    }),
  );
}

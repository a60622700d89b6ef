import type { Kysely } from 'kysely';
import { HandlerFailed, HandlerRetry, isConflict } from './apply-events.js';
import {
  applyAllInTransaction,
  traceBatch,
  type AppliedBatch,
  type BatchRequest,
} from './batch.js';
import { instanceOf } from './generations.js';

/**
 * Batches of several projections that arrive together (the batches one fetch of a shared
 * consumer group hands to each projection) applied in one transaction: their checkpoints locked
 * and aggregates read in one round trip, one commit and one connection for all of them instead
 * of one each. Each projection still locks and writes only its own checkpoints and versions, and
 * gets its own result. If anything in the transaction fails (a handler, a conflict, the
 * database), it rolls back and each batch is applied alone, as it would have been, so one
 * projection's failure reaches only itself; a failure of the database is reported for each of
 * them (`failed`), as it would have been.
 */
export interface BatchGroup<DB> {
  apply(request: BatchRequest<DB>): Promise<AppliedBatch>;
}

/**
 * Batches of more records go alone: a projection catching up applies them in parallel with the
 * others' (both cores busy), where a shared transaction would apply one after the other.
 */
const MAX_RECORDS_TOGETHER = 500;

/**
 * A lock waited for longer fails the shared transaction, and each batch is applied alone: the
 * others do not wait with the one whose checkpoints or tables are locked (a rebalance, a swap, a
 * view table locked away).
 */
const LOCK_TIMEOUT_MS = 200;

interface Waiting<DB> {
  request: BatchRequest<DB>;
  instance: string;
  resolve: (applied: AppliedBatch) => void;
  reject: (error: unknown) => void;
}

/**
 * Whether a handler's failure (applied again alone, event by event), a conflict (again after a
 * pause) or a lock waited for too long failed the batches: what applying each alone deals with,
 * silently.
 */
const dealtWithAlone = (error: unknown): boolean =>
  error instanceof HandlerFailed ||
  error instanceof HandlerRetry ||
  isConflict(error) ||
  (error as { code?: unknown } | undefined)?.code === '55P03';

/**
 * Gathers the batches asked for within one turn of the event loop (a fetch's batches reach every
 * projection's consumer in the same turn) and applies them together; `alone` applies one batch
 * in a transaction of its own (with the caller's retries).
 */
export function createBatchGroup<DB>(
  db: Kysely<DB>,
  alone: (request: BatchRequest<DB>) => Promise<AppliedBatch>,
  failed: (request: BatchRequest<DB>, error: unknown) => void,
): BatchGroup<DB> {
  let waiting: Waiting<DB>[] = [];

  const runAlone = (entry: Waiting<DB>) => alone(entry.request).then(entry.resolve, entry.reject);

  async function runTogether(entries: Waiting<DB>[]): Promise<void> {
    // One lock order for every process: by projection instance.
    entries.sort((a, b) => (a.instance < b.instance ? -1 : a.instance > b.instance ? 1 : 0));
    const startedAt = Date.now();
    let committingAt = startedAt;
    let results: AppliedBatch[];
    try {
      results = await db.transaction().execute(async (trx) => {
        const requests = entries.map((entry) => entry.request);
        const applied = await applyAllInTransaction(trx, requests, false, LOCK_TIMEOUT_MS);
        committingAt = Date.now();
        return applied;
      });
    } catch (error) {
      // Nothing of it committed: each batch on its own, where a handler's failure is its own.
      // Anything else (the connection cut, the database away) failed every batch of it.
      if (!dealtWithAlone(error)) for (const entry of entries) failed(entry.request, error);
      await Promise.all(entries.map(runAlone));
      return;
    }
    entries.forEach((entry, index) => {
      const applied = results[index] as AppliedBatch;
      try {
        traceBatch(entry.request, applied, { startedAt, committingAt });
        entry.resolve(applied);
      } catch (error) {
        entry.reject(error);
      }
    });
  }

  function flush(): void {
    const entries = waiting;
    waiting = [];
    // A projection's second batch in hand (two partitions catching up) goes alone.
    const together = new Map<string, Waiting<DB>>();
    for (const entry of entries) {
      const large = entry.request.records.length > MAX_RECORDS_TOGETHER;
      if (large || together.has(entry.instance)) void runAlone(entry);
      else together.set(entry.instance, entry);
    }
    const group = [...together.values()];
    if (group.length === 1) void runAlone(group[0] as Waiting<DB>);
    else if (group.length > 1) void runTogether(group);
  }

  return {
    apply(request) {
      return new Promise((resolve, reject) => {
        const { projection, options } = request;
        const instance = instanceOf(projection.name, options.generation ?? 1);
        if (waiting.length === 0) setImmediate(flush);
        waiting.push({ request, instance, resolve, reject });
      });
    },
  };
}

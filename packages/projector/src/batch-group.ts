import type { Kysely } from 'kysely';
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
 * gets its own result. If anything in the
 * transaction fails (a handler, a conflict, the database), it rolls back and each batch is
 * applied alone, as it would have been, so one projection's failure reaches only itself.
 */
export interface BatchGroup<DB> {
  apply(request: BatchRequest<DB>): Promise<AppliedBatch>;
}

/**
 * Batches of more records go alone: a projection catching up applies them in parallel with the
 * others' (both cores busy), where a shared transaction would apply one after the other.
 */
const MAX_RECORDS_TOGETHER = 500;

interface Waiting<DB> {
  request: BatchRequest<DB>;
  instance: string;
  resolve: (applied: AppliedBatch) => void;
  reject: (error: unknown) => void;
}

/**
 * Gathers the batches asked for within one turn of the event loop (a fetch's batches reach every
 * projection's consumer in the same turn) and applies them together; `alone` applies one batch
 * in a transaction of its own (with the caller's retries).
 */
export function createBatchGroup<DB>(
  db: Kysely<DB>,
  alone: (request: BatchRequest<DB>) => Promise<AppliedBatch>,
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
        const applied = await applyAllInTransaction(trx, requests, false);
        committingAt = Date.now();
        return applied;
      });
    } catch {
      // Nothing of it committed: each batch on its own, where its failure is its own.
      await Promise.all(entries.map(runAlone));
      return;
    }
    entries.forEach((entry, index) => {
      const applied = results[index] as AppliedBatch;
      traceBatch(entry.request, applied, { startedAt, committingAt });
      entry.resolve(applied);
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

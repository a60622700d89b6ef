import { sql, type Kysely } from 'kysely';

/** Options for {@link purgeAppliedBatches}. */
export interface AppliedBatchesRetention {
  /** Rows older than this many hours are deleted. */
  retentionHours: number;
  /** Milliseconds between sweeps. Default 60000. */
  intervalMs?: number;
  /** Rows one statement deletes at most. Default 5000. */
  batchRows?: number;
  /** A sweep failed; the next one tries again. */
  onFailed?: (error: unknown) => void;
}

/**
 * Deletes `sluice.projection_applied_batches` rows older than `retentionHours` every
 * `intervalMs`, `batchRows` at a time (short statements, short locks). Returns the stop.
 */
export function purgeAppliedBatches<DB>(
  db: Kysely<DB>,
  options: AppliedBatchesRetention,
): () => Promise<void> {
  const batchRows = options.batchRows ?? 5000;
  let stopped = false;
  let sweeping: Promise<void> | undefined;
  const sweep = async () => {
    try {
      for (;;) {
        const result = await sql`
          DELETE FROM sluice.projection_applied_batches WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM sluice.projection_applied_batches
             WHERE applied_at < now() - make_interval(hours => ${options.retentionHours}::int)
             LIMIT ${batchRows}::int))`.execute(db);
        if (stopped || Number(result.numAffectedRows ?? 0n) < batchRows) return;
      }
    } catch (error) {
      options.onFailed?.(error);
    } finally {
      sweeping = undefined;
    }
  };
  // A sweep still running when the next is due (a slow database) is not doubled.
  const timer = setInterval(() => {
    sweeping ??= sweep();
  }, options.intervalMs ?? 60_000);
  timer.unref();
  return async () => {
    stopped = true;
    clearInterval(timer);
    await sweeping;
  };
}

// sluice.published_events: where the relay published each event, for the event journey. One
// row per acknowledged send, topic and partition: the events' ids in offset order from the
// send's base offset, with the commit position and time of their transactions. A record of
// publishing, written after Kafka's acknowledgement and never a condition of it. UNLOGGED: it
// writes no WAL and the relay's own slot has nothing of it to decode; a PostgreSQL crash (not a
// clean restart) empties it, and replicas do not have it.
import type pg from 'pg';
import type { PublishedRecord } from './event-sink.js';

/**
 * `event_ids`: the ids joined by commas, 36 characters each, so the id found at character
 * `strpos` is at offset `base_offset + (strpos - 1) / 37`. `commit_lsns`: runs of `count:lsn`
 * joined by commas (consecutive events share their transaction's); `committed_at`: each run's
 * commit time in Unix milliseconds, empty when unknown, joined by commas. `event_ids` is stored
 * uncompressed: ids do not compress, so writes and reads skip the attempt. A table of the
 * earlier shape (one row per event) is dropped.
 */
export const PUBLISHED_EVENTS_TABLE = `
  DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'sluice'
                  AND table_name = 'published_events' AND column_name = 'event_id') THEN
      DROP TABLE sluice.published_events;
    END IF;
  END $$;
  CREATE UNLOGGED TABLE IF NOT EXISTS sluice.published_events (
    topic text NOT NULL,
    partition integer NOT NULL,
    base_offset bigint NOT NULL,
    event_ids text NOT NULL,
    commit_lsns text NOT NULL,
    committed_at text NOT NULL,
    published_at timestamptz NOT NULL
  );
  ALTER TABLE sluice.published_events ALTER COLUMN event_ids SET STORAGE EXTERNAL;
  CREATE INDEX IF NOT EXISTS published_events_topic_published_at
    ON sluice.published_events (topic, published_at);
  CREATE INDEX IF NOT EXISTS published_events_published_at
    ON sluice.published_events USING brin (published_at)`;

const INSERT = `
  INSERT INTO sluice.published_events
         (topic, partition, base_offset, event_ids, commit_lsns, committed_at, published_at)
  SELECT t, p, o, e, l, c, to_timestamp(a / 1000.0)
    FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                $7::float8[]) AS x(t, p, o, e, l, c, a)`;

const PURGE = `
  DELETE FROM sluice.published_events WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM sluice.published_events
     WHERE published_at < now() - make_interval(hours => $1) LIMIT $2))`;

/** Options for {@link createPublishedEventsRecorder}. */
export interface PublishedEventsOptions {
  pool: pg.Pool;
  /** Rows older than this many hours are deleted; 0 records nothing. */
  retentionHours: number;
  /** Records waiting for a write beyond this are dropped (and reported). Default 50000. */
  maxPendingRecords?: number;
  /** Milliseconds between retention sweeps. Default 60000. */
  purgeIntervalMs?: number;
  /** Rows (sends per partition) one retention statement deletes at most. Default 5000. */
  purgeBatchRows?: number;
  /** A write failed: its records are not recorded (never retried). */
  onWriteFailed?: (error: unknown, records: number) => void;
  /** Records dropped because writes fell behind. */
  onDropped?: (records: number) => void;
  /** A retention sweep failed; the next one tries again. */
  onPurgeFailed?: (error: unknown) => void;
}

/** Writes acknowledged records to `sluice.published_events`, and deletes old ones. */
export interface PublishedEventsRecorder {
  /** Queues `records`, published at `at`; returns at once. */
  record(records: readonly PublishedRecord[], at: Date): void;
  /** Stops the sweeps and waits for the write under way. */
  close(): Promise<void>;
}

/** The rows of the sends waiting for a write, column by column, and how many events they hold. */
interface Columns {
  events: number;
  topics: string[];
  partitions: number[];
  baseOffsets: string[];
  ids: string[];
  lsns: string[];
  committed: string[];
  /** Unix milliseconds: cheaper to send and to parse than timestamps as text. */
  published: number[];
}

const emptyColumns = (): Columns => ({
  events: 0,
  topics: [],
  partitions: [],
  baseOffsets: [],
  ids: [],
  lsns: [],
  committed: [],
  published: [],
});

/**
 * `{a,b,…}`, each value in double quotes when `quoted`: no value here has a quote or a
 * backslash (uuids, numbers, LSNs, commas, and topic names, which Kafka limits to
 * `[A-Za-z0-9._-]`), and joining them costs far less than node-postgres quoting each.
 */
function arrayLiteral(values: readonly (string | number)[], quoted = false): string {
  return quoted ? `{"${values.join('","')}"}` : `{${values.join(',')}}`;
}

/** One send's records of one partition, in offset order, and their transactions' runs. */
interface PartitionRun {
  topic: string;
  partition: number;
  baseOffset: string;
  ids: string[];
  /** Per run of consecutive records of one transaction: how many, its LSN, its commit time. */
  counts: number[];
  lsns: string[];
  /** Unix milliseconds; NaN when unknown. */
  committed: number[];
}

/** Groups a send's records by topic and partition, run-length encoding commit LSN and time. */
function partitionRuns(records: readonly PublishedRecord[]): PartitionRun[] {
  const byTopic = new Map<string, Map<number, PartitionRun>>();
  const runs: PartitionRun[] = [];
  for (const record of records) {
    const { topic, partition, commitLsn } = record;
    const committed = record.commitTime?.getTime() ?? NaN;
    let partitions = byTopic.get(topic);
    if (partitions === undefined)
      byTopic.set(topic, (partitions = new Map<number, PartitionRun>()));
    let run = partitions.get(partition);
    if (run === undefined) {
      run = {
        topic,
        partition,
        baseOffset: record.offset,
        ids: [],
        counts: [],
        lsns: [],
        committed: [],
      };
      partitions.set(partition, run);
      runs.push(run);
    }
    run.ids.push(record.eventId);
    const last = run.lsns.length - 1;
    if (run.lsns[last] === commitLsn && Object.is(run.committed[last], committed)) {
      run.counts[last] = (run.counts[last] ?? 0) + 1;
    } else {
      run.counts.push(1);
      run.lsns.push(commitLsn);
      run.committed.push(committed);
    }
  }
  return runs;
}

/**
 * Records where each event was published: one INSERT per acknowledged send (one row per topic
 * and partition), one at a time on one pooled connection, so it never holds back the relay;
 * sends acknowledged while a write is under way go out together in the next one. A failed write
 * is reported and dropped. Every `purgeIntervalMs` it deletes rows older than `retentionHours`,
 * `purgeBatchRows` at a time. With `retentionHours: 0` it records and deletes nothing.
 */
export function createPublishedEventsRecorder(
  options: PublishedEventsOptions,
): PublishedEventsRecorder {
  if (options.retentionHours <= 0) return { record: () => undefined, close: async () => {} };
  const maxPending = options.maxPendingRecords ?? 50_000;
  let pending = emptyColumns();
  let writing: Promise<void> | undefined;

  const write = async (): Promise<void> => {
    while (pending.events > 0) {
      const batch = pending;
      pending = emptyColumns();
      const values = [
        arrayLiteral(batch.topics),
        arrayLiteral(batch.partitions),
        arrayLiteral(batch.baseOffsets),
        arrayLiteral(batch.ids, true),
        arrayLiteral(batch.lsns, true),
        arrayLiteral(batch.committed, true),
        arrayLiteral(batch.published),
      ];
      await options.pool
        .query(INSERT, values)
        .catch((error: unknown) => options.onWriteFailed?.(error, batch.events));
    }
    writing = undefined;
  };

  const purger = startPurging(options);
  return {
    record(records, at) {
      if (pending.events + records.length > maxPending) {
        options.onDropped?.(records.length);
        return;
      }
      const time = at.getTime();
      for (const run of partitionRuns(records)) {
        pending.topics.push(run.topic);
        pending.partitions.push(run.partition);
        pending.baseOffsets.push(run.baseOffset);
        pending.ids.push(run.ids.join(','));
        pending.lsns.push(run.lsns.map((lsn, i) => `${run.counts[i]}:${lsn}`).join(','));
        pending.committed.push(run.committed.map((ms) => (Number.isNaN(ms) ? '' : ms)).join(','));
        pending.published.push(time);
      }
      pending.events += records.length;
      if (records.length > 0) writing ??= write();
    },
    async close() {
      await purger.stop();
      await writing;
    },
  };
}

/** Deletes rows past retention every `purgeIntervalMs`, in batches, until none is left. */
function startPurging(options: PublishedEventsOptions): { stop(): Promise<void> } {
  const batchRows = options.purgeBatchRows ?? 5000;
  let stopped = false;
  let sweeping: Promise<void> | undefined;
  const sweep = async () => {
    try {
      for (;;) {
        const { rowCount } = await options.pool.query(PURGE, [options.retentionHours, batchRows]);
        if (stopped || (rowCount ?? 0) < batchRows) return;
      }
    } catch (error) {
      options.onPurgeFailed?.(error);
    } finally {
      sweeping = undefined;
    }
  };
  // A sweep still running when the next is due (a slow database) is not doubled.
  const timer = setInterval(() => {
    sweeping ??= sweep();
  }, options.purgeIntervalMs ?? 60_000);
  timer.unref();
  return {
    async stop() {
      stopped = true;
      clearInterval(timer);
      await sweeping;
    },
  };
}

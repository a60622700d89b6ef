// sluice.published_events: where the relay published each event (topic, partition, offset, when)
// and the commit position and time of its transaction, for the event journey. A record of
// publishing, written after Kafka's acknowledgement and never a condition of it. UNLOGGED: it
// writes no WAL, so it costs a third less and the relay's own slot has nothing of it to decode;
// a PostgreSQL crash (not a clean restart) empties it, and replicas do not have it.
import type pg from 'pg';
import type { PublishedRecord } from './event-sink.js';

export const PUBLISHED_EVENTS_TABLE = `
  CREATE UNLOGGED TABLE IF NOT EXISTS sluice.published_events (
    event_id uuid NOT NULL,
    topic text NOT NULL,
    partition integer NOT NULL,
    record_offset bigint NOT NULL,
    commit_lsn pg_lsn NOT NULL,
    committed_at timestamptz,
    published_at timestamptz NOT NULL
  );
  CREATE INDEX IF NOT EXISTS published_events_event_id ON sluice.published_events (event_id);
  CREATE INDEX IF NOT EXISTS published_events_published_at
    ON sluice.published_events USING brin (published_at)`;

const INSERT = `
  INSERT INTO sluice.published_events
         (event_id, topic, partition, record_offset, commit_lsn, committed_at, published_at)
  SELECT e, t, p, o, l, to_timestamp(c / 1000.0), to_timestamp(a / 1000.0)
    FROM unnest($1::uuid[], $2::text[], $3::int[], $4::bigint[], $5::pg_lsn[], $6::float8[],
                $7::float8[]) AS x(e, t, p, o, l, c, a)`;

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
  /** Rows one retention statement deletes at most. Default 5000. */
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

interface Columns {
  ids: string[];
  topics: string[];
  partitions: number[];
  offsets: string[];
  lsns: string[];
  /** Unix milliseconds: cheaper to send and to parse than timestamps as text. */
  committed: (number | null)[];
  published: number[];
}

const emptyColumns = (): Columns => ({
  ids: [],
  topics: [],
  partitions: [],
  offsets: [],
  lsns: [],
  committed: [],
  published: [],
});

/**
 * `{a,b,…}`: no value here needs quoting (uuids, numbers, LSNs, and topic names, which Kafka
 * limits to `[A-Za-z0-9._-]`), and joining them costs far less than node-postgres quoting each.
 */
function arrayLiteral(values: readonly (string | number | null)[]): string {
  return `{${values.map((value) => value ?? 'NULL').join(',')}}`;
}

/**
 * Records where each event was published: one INSERT per acknowledged send, one at a time on
 * one pooled connection, so it never holds back the relay; sends acknowledged while a write is
 * under way go out together in the next one. A failed write is reported and dropped. Every
 * `purgeIntervalMs` it deletes rows older than `retentionHours`, `purgeBatchRows` at a time.
 * With `retentionHours: 0` it records and deletes nothing.
 */
export function createPublishedEventsRecorder(
  options: PublishedEventsOptions,
): PublishedEventsRecorder {
  if (options.retentionHours <= 0) return { record: () => undefined, close: async () => {} };
  const maxPending = options.maxPendingRecords ?? 50_000;
  let pending = emptyColumns();
  let writing: Promise<void> | undefined;

  const write = async (): Promise<void> => {
    while (pending.ids.length > 0) {
      const batch = pending;
      pending = emptyColumns();
      const { ids, topics, partitions, offsets, lsns, committed, published } = batch;
      const columns = [ids, topics, partitions, offsets, lsns, committed, published];
      await options.pool
        .query(INSERT, columns.map(arrayLiteral))
        .catch((error: unknown) => options.onWriteFailed?.(error, ids.length));
    }
    writing = undefined;
  };

  const purger = startPurging(options);
  return {
    record(records, at) {
      if (pending.ids.length + records.length > maxPending) {
        options.onDropped?.(records.length);
        return;
      }
      const time = at.getTime();
      for (const record of records) {
        pending.ids.push(record.eventId);
        pending.topics.push(record.topic);
        pending.partitions.push(record.partition);
        pending.offsets.push(record.offset);
        pending.lsns.push(record.commitLsn);
        pending.committed.push(record.commitTime?.getTime() ?? null);
        pending.published.push(time);
      }
      writing ??= write();
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

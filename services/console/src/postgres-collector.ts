// Reads the slot, the outbox's newest rows and the projector's bookkeeping: cheap queries only
// (indexes, LIMITs; never a count over the outbox), each sample.
import { errorMessage } from '@sluice/errors';
import type pg from 'pg';
import type {
  CheckpointReading,
  DatabaseReading,
  GenerationReading,
  OutboxReading,
  ProjectionReading,
  SlotReading,
} from './sample.js';

/** Where the collector reads. */
export interface PostgresCollectorOptions {
  pool: pg.Pool;
  slot: string;
  outbox: { schema: string; table: string };
}

/** Counts of outbox rows stop here: a screen shows "10000" for anything larger. */
const COUNT_CAP = 10_000;
/** Parked records walked to count a projection's parked aggregates without its projector. */
const PARKED_ROWS_WALKED = 1000;
const OUTBOX_WINDOW_SECONDS = 10;

const numberOrNull = (value: string | null) => (value === null ? null : Number(value));

const SLOT_SQL = `
  SELECT pg_current_wal_lsn()::text AS current_lsn, s.slot_name, s.wal_status,
         s.safe_wal_size::text AS safe_wal_size, s.confirmed_flush_lsn::text AS confirmed_lsn,
         pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::text AS lag_bytes,
         extract(epoch FROM clock_timestamp() - r.reply_time)::float8 AS reply_age
    FROM (VALUES (1)) AS one
    LEFT JOIN pg_replication_slots s ON s.slot_name = $1
    LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid`;

async function readSlot(pool: pg.Pool, name: string): Promise<SlotReading> {
  const { rows } = await pool.query<{
    current_lsn: string;
    slot_name: string | null;
    wal_status: string | null;
    safe_wal_size: string | null;
    confirmed_lsn: string | null;
    lag_bytes: string | null;
    reply_age: number | null;
  }>(SLOT_SQL, [name]);
  const row = rows[0];
  if (row === undefined) throw new Error('pg_current_wal_lsn() returned no row');
  return {
    name,
    exists: row.slot_name !== null,
    walStatus: row.wal_status,
    safeWalSizeBytes: numberOrNull(row.safe_wal_size),
    confirmedLsn: row.confirmed_lsn,
    currentLsn: row.current_lsn,
    lagBytes: numberOrNull(row.lag_bytes),
    replyAgeSeconds: row.reply_age,
  };
}

const quote = (name: string) => `"${name.replaceAll('"', '""')}"`;

async function readOutbox(
  pool: pg.Pool,
  outbox: { schema: string; table: string },
  unpublishedSeconds: number | undefined,
): Promise<OutboxReading> {
  const table = `${quote(outbox.schema)}.${quote(outbox.table)}`;
  // Both counts walk outbox_occurred_at backwards from now, and stop at the cap.
  const since = (seconds: string) =>
    `(SELECT count(*) FROM (SELECT 1 FROM ${table}
       WHERE occurred_at > now() - make_interval(secs => ${seconds}) LIMIT ${COUNT_CAP}) AS r)`;
  const { rows } = await pool.query<{
    newest: Date | null;
    recent: string;
    unpublished: string | null;
  }>(
    `SELECT (SELECT max(occurred_at) FROM ${table}) AS newest,
            ${since('$1')} AS recent,
            CASE WHEN $2::float8 > 0 THEN ${since('$2')} ELSE 0 END AS unpublished`,
    [OUTBOX_WINDOW_SECONDS, unpublishedSeconds ?? 0],
  );
  const row = rows[0];
  return {
    newestAt: row?.newest?.getTime() ?? null,
    recentRows: Number(row?.recent ?? 0),
    windowSeconds: OUTBOX_WINDOW_SECONDS,
    unpublished: unpublishedSeconds === undefined ? null : Number(row?.unpublished ?? 0),
  };
}

async function readProjections(pool: pg.Pool): Promise<ProjectionReading[]> {
  const generations = await pool.query<GenerationReading & { projection: string }>(
    `SELECT projection, generation, instance, state FROM sluice.projection_generations
      WHERE state IN ('active', 'building') ORDER BY projection, generation`,
  );
  const instances = generations.rows.map((row) => row.instance);
  const [checkpoints, parked] = await Promise.all([
    pool.query<{ instance: string; topic: string; partition: number; next_offset: string }>(
      `SELECT projection AS instance, topic, partition, next_offset::text
         FROM sluice.projection_checkpoints WHERE projection = ANY($1::text[])`,
      [instances],
    ),
    // Distinct aggregates among the first PARKED_ROWS_WALKED entries of parked_events_aggregate
    // (an index-only walk); the projectors' sluice_projector_parked_aggregates is preferred.
    pool.query<{ instance: string; aggregates: string }>(
      `SELECT i.instance, (SELECT count(*) FROM (SELECT DISTINCT aggregate_type, aggregate_id FROM (
                SELECT aggregate_type, aggregate_id FROM sluice.parked_events p
                 WHERE p.projection = i.instance ORDER BY aggregate_type, aggregate_id
                 LIMIT ${PARKED_ROWS_WALKED}) AS w) AS a)::text AS aggregates
         FROM unnest($1::text[]) AS i(instance)`,
      [instances],
    ),
  ]);
  const byProjection = new Map<string, ProjectionReading>();
  for (const { projection, generation, instance, state } of generations.rows) {
    const reading = byProjection.get(projection) ?? {
      projection,
      generations: [],
      checkpoints: [],
      parkedAggregates: 0,
    };
    reading.generations.push({ generation, instance, state });
    reading.checkpoints.push(...checkpointsOf(checkpoints.rows, instance));
    const count = parked.rows.find((row) => row.instance === instance)?.aggregates;
    reading.parkedAggregates += Number(count ?? 0);
    byProjection.set(projection, reading);
  }
  return [...byProjection.values()];
}

function checkpointsOf(
  rows: readonly { instance: string; topic: string; partition: number; next_offset: string }[],
  instance: string,
): CheckpointReading[] {
  return rows
    .filter((row) => row.instance === instance)
    .map((row) => ({
      instance,
      topic: row.topic,
      partition: row.partition,
      nextOffset: Number(row.next_offset),
    }));
}

/** `reading`, or `fallback` while its tables do not exist yet (nothing migrated them). */
async function unlessMissing<T, F>(reading: Promise<T>, fallback: F): Promise<T | F> {
  try {
    return await reading;
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (code === '42P01' || code === '3F000') return fallback;
    throw error;
  }
}

/**
 * Reads PostgreSQL's part of a sample; a failure is reported in `error`, never thrown.
 * `unpublishedSeconds`: the relay's oldest unpublished transaction's age, when known.
 */
export async function collectPostgres(
  options: PostgresCollectorOptions,
  unpublishedSeconds: number | undefined,
): Promise<DatabaseReading> {
  const { pool } = options;
  try {
    const [slot, outbox, projections] = await Promise.all([
      readSlot(pool, options.slot),
      unlessMissing(readOutbox(pool, options.outbox, unpublishedSeconds), undefined),
      unlessMissing(readProjections(pool), []),
    ]);
    return { slot, ...(outbox === undefined ? {} : { outbox }), projections };
  } catch (error) {
    return { error: errorMessage(error), projections: [] };
  }
}

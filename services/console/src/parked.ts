// GET /api/parked and GET /api/audit: reads of sluice.parked_events and sluice.operator_audit,
// bounded by LIMITs and walked along their indexes.
import type pg from 'pg';
import type { ParkedRow } from './masking.js';
import type { AuditItem, ParkedGroup } from './bodies.js';

/** The filters of `GET /api/parked`. */
export interface ParkedFilter {
  projection?: string;
  aggregateType?: string;
  aggregateId?: string;
  errorClass?: string;
  limit: number;
}

/** Parked records of these many matching rows at most are grouped: a screen stays cheap. */
export const GROUPED_ROWS_CAP = 1000;

/** Where the reads go: a pool, or one connection's transaction. */
type Reader = Pick<pg.ClientBase, 'query'>;

/** Instance → projection name: the generations whose parked records a filter may show. */
type Instances = Map<string, string>;

async function instancesOf(db: Reader, projection: string | undefined): Promise<Instances> {
  const { rows } = await db.query<{ projection: string; instance: string }>(
    `SELECT projection, instance FROM sluice.projection_generations
      WHERE state IN ('active', 'building') AND ($1::text IS NULL OR projection = $1)`,
    [projection ?? null],
  );
  return new Map(rows.map((row) => [row.instance, row.projection]));
}

/**
 * The matching records' query over `columns`, walking the primary key in order (no join: a
 * join makes the planner sort every parked record).
 */
function matchingSql(filter: ParkedFilter, columns: string, limit: number) {
  const values: unknown[] = [];
  const conditions = ['p.projection = ANY($1::text[])'];
  const add = (column: string, value: string | undefined) => {
    if (value === undefined) return;
    values.push(value);
    conditions.push(`${column} = $${values.length + 1}`);
  };
  add('p.aggregate_type', filter.aggregateType);
  add('p.aggregate_id', filter.aggregateId);
  add('p.reason', filter.errorClass);
  const sql = `SELECT ${columns} FROM sluice.parked_events p WHERE ${conditions.join(' AND ')}
                ORDER BY p.projection, p.topic, p.partition, p.record_offset LIMIT ${Math.trunc(limit)}`;
  return { sql, values };
}

/** The parked records that match, at most `limit`, in key order. */
async function parkedRows(
  db: Reader,
  filter: ParkedFilter,
  instances: Instances,
): Promise<ParkedRow[]> {
  const query = matchingSql(
    filter,
    `p.projection, p.topic, p.partition, p.record_offset::text, p.aggregate_type, p.aggregate_id,
     p.aggregate_version::text, p.record_key, p.record_value, p.record_headers, p.reason, p.error,
     p.attempts, p.first_failed_at`,
    filter.limit,
  );
  const { rows } = await db.query<ParkedRow>(query.sql, [[...instances.keys()], ...query.values]);
  return rows.map((row) => ({
    ...row,
    projection: instances.get(row.projection) ?? row.projection,
  }));
}

/**
 * The groups of the first {@link GROUPED_ROWS_CAP} matching records (in key order), oldest
 * first, at most `limit`.
 */
async function parkedGroups(
  db: Reader,
  filter: ParkedFilter,
  instances: Instances,
): Promise<ParkedGroup[]> {
  const matching = matchingSql(
    filter,
    'p.projection, p.aggregate_type, p.aggregate_id, p.reason, p.first_failed_at',
    GROUPED_ROWS_CAP,
  );
  const { rows } = await db.query<{
    projection: string;
    aggregate_type: string | null;
    aggregate_id: string | null;
    reason: string;
    count: string;
    first_parked_at: Date;
  }>(
    `SELECT projection, aggregate_type, aggregate_id, reason, count(*)::text AS count,
            min(first_failed_at) AS first_parked_at
       FROM (${matching.sql}) AS matching
      GROUP BY projection, aggregate_type, aggregate_id, reason
      ORDER BY min(first_failed_at), projection, aggregate_type, aggregate_id
      LIMIT ${Math.trunc(filter.limit)}`,
    [[...instances.keys()], ...matching.values],
  );
  return rows.map((row) => ({
    projection: instances.get(row.projection) ?? row.projection,
    aggregateType: row.aggregate_type,
    aggregateId: row.aggregate_id,
    errorClass: row.reason,
    count: Number(row.count),
    firstParkedAt: row.first_parked_at.toISOString(),
  }));
}

/** A page of `GET /api/parked`: its groups and its records, read from one snapshot. */
export async function parkedPage(pool: pg.Pool, filter: ParkedFilter) {
  const client = await pool.connect();
  // A connection that fails while checked out emits 'error' on its client, which unheard ends
  // the process; the failure reaches this page through its query instead.
  const heard = () => undefined;
  client.on('error', heard);
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const page = await readParkedPage(client, filter);
    await client.query('COMMIT');
    client.off('error', heard);
    client.release();
    return page;
  } catch (error) {
    // A connection left inside a transaction must not go back to the pool.
    client.release(true);
    throw error;
  }
}

/** The page's reads, one after another, on `db` (a transaction's client, or a pool in benches). */
export async function readParkedPage(db: Reader, filter: ParkedFilter) {
  const instances = await instancesOf(db, filter.projection);
  const groups = await parkedGroups(db, filter, instances);
  const rows = await parkedRows(db, filter, instances);
  return { groups, rows };
}

/** The newest `limit` operator actions (walks the primary key backwards). */
export async function auditItems(pool: pg.Pool, limit: number): Promise<AuditItem[]> {
  const { rows } = await pool.query<{
    at: Date;
    actor: string;
    action: string;
    projection: string | null;
    target: unknown;
    reason: string | null;
    outcome: unknown;
  }>(
    `SELECT at, actor, action, projection, target, reason, outcome
       FROM sluice.operator_audit ORDER BY id DESC LIMIT ${Math.trunc(limit)}`,
  );
  return rows.map((row) => ({
    at: row.at.toISOString(),
    actor: row.actor,
    action: row.action,
    ...(row.projection === null ? {} : { projection: row.projection }),
    ...(row.target === null ? {} : { target: row.target }),
    ...(row.reason === null ? {} : { reason: row.reason }),
    outcome: row.outcome,
  }));
}

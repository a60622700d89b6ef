// The event journey's reads: the outbox (what was committed), sluice.published_events (where
// the relay published it: one row per send and partition), and the projector's bookkeeping
// (active generations, checkpoints, parked events, applied batches). Each is one statement along
// an index, bounded by the events found (at most JOURNEY_LIMIT).
import type pg from 'pg';

/** Most events one journey shows. */
export const JOURNEY_LIMIT = 200;

/** An outbox row that matched the query. */
export interface CommittedRow {
  id: string;
  type: string;
  aggregate_type: string;
  aggregate_id: string;
  aggregate_version: string;
  correlation_id: string | null;
  traceparent: string | null;
  occurred_at: Date;
}

/** Where the relay first published an event. */
export interface PublishedRow {
  event_id: string;
  topic: string;
  partition: number;
  record_offset: string;
  commit_lsn: string;
  committed_at: Date | null;
  published_at: Date;
}

/** A projection's active generation and how far it got in one partition of a topic. */
export interface CheckpointRow {
  projection: string;
  generation: number;
  instance: string;
  topic: string;
  partition: number;
  next_offset: string;
}

/** A parked record of one of the events (by aggregate version, or by offset when undecodable). */
export interface ParkedRow {
  instance: string;
  topic: string;
  partition: number;
  record_offset: string;
  aggregate_type: string | null;
  aggregate_id: string | null;
  aggregate_version: string | null;
  reason: string;
  error: string | null;
}

const quote = (name: string) => `"${name.replaceAll('"', '""')}"`;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Outbox rows whose event id, aggregate id, correlation id or trace id is `q`, in aggregate and
 * version order. The aggregate id is looked up under each aggregate type (a loose scan of the
 * outbox's unique index); correlation and trace ids are searched among rows of the last
 * `searchHours` (the outbox_occurred_at index), having no index of their own.
 */
export async function committedRows(
  pool: pg.Pool,
  outbox: { schema: string; table: string },
  q: string,
  searchHours: number,
): Promise<CommittedRow[]> {
  const table = `${quote(outbox.schema)}.${quote(outbox.table)}`;
  const columns = `o.id::text, o.type, o.aggregate_type, o.aggregate_id, o.aggregate_version::text,
    o.metadata->>'correlation_id' AS correlation_id, o.metadata->>'traceparent' AS traceparent,
    o.occurred_at`;
  const { rows } = await pool.query<CommittedRow>(
    `WITH RECURSIVE types(t) AS (
       SELECT min(aggregate_type) FROM ${table}
       UNION ALL
       SELECT (SELECT min(aggregate_type) FROM ${table} WHERE aggregate_type > types.t)
         FROM types WHERE types.t IS NOT NULL
     ), matched AS (
       SELECT ${columns} FROM ${table} o WHERE o.id = $2::uuid
       UNION
       SELECT ${columns} FROM types JOIN ${table} o ON o.aggregate_type = types.t AND o.aggregate_id = $1
       UNION
       SELECT ${columns} FROM ${table} o
        WHERE o.occurred_at > now() - make_interval(hours => $3::int)
          AND (o.metadata->>'correlation_id' = $1
               OR split_part(o.metadata->>'traceparent', '-', 2) = lower($1))
     )
     SELECT * FROM matched m
      ORDER BY m.aggregate_type, m.aggregate_id, m.aggregate_version::bigint
      LIMIT ${JOURNEY_LIMIT}`,
    [q, UUID.test(q) ? q : null, searchHours],
  );
  return rows;
}

/** An event to find in the relay's record: its id, its topic, when it was committed. */
export interface PublishedProbe {
  id: string;
  topic: string;
  occurredAt: Date;
}

/** How long after its commit an event's send is looked for. */
const PUBLISHED_WITHIN = '1 hour';
/** How many sends of its topic, from its commit on, are looked through for an event. */
const PUBLISHED_SCAN_ROWS = 5000;

/**
 * Where each event was first published, on its topic: the first send row of the topic, from the
 * event's commit time on (less 100 ms for the relay's clock), whose ids hold it; its offset is
 * the row's base offset plus the id's place. The search stops an hour after the commit or after
 * 5000 send rows of the topic, whichever comes first: an event published later than that (a
 * relay down for long, or a backlog of more than 5000 sends ahead of it) is not found, and its
 * journey says `published: null`, as for an event not published yet or not recorded.
 */
export async function publishedRows(
  pool: pg.Pool,
  events: readonly PublishedProbe[],
): Promise<PublishedRow[]> {
  if (events.length === 0) return [];
  const { rows } = await pool.query<SendRow>(
    `SELECT k.id AS event_id, p.topic, p.partition, p.base_offset::text,
            (strpos(p.event_ids, k.id) - 1) / 37 AS position, p.commit_lsns, p.committed_at,
            p.published_at
       FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS k(id, topic, occurred_at)
      CROSS JOIN LATERAL (
        SELECT * FROM (
          SELECT * FROM sluice.published_events p
           WHERE p.topic = k.topic AND p.published_at >= k.occurred_at - interval '100 milliseconds'
             AND p.published_at < k.occurred_at + interval '${PUBLISHED_WITHIN}'
           ORDER BY p.published_at LIMIT ${PUBLISHED_SCAN_ROWS}) p
         WHERE strpos(p.event_ids, k.id) > 0
         LIMIT 1) p`,
    [events.map((e) => e.id), events.map((e) => e.topic), events.map((e) => e.occurredAt)],
  );
  return rows.map(publishedRow);
}

/** A send row holding an event, and where among its ids the event is. */
interface SendRow {
  event_id: string;
  topic: string;
  partition: number;
  base_offset: string;
  position: number;
  commit_lsns: string;
  committed_at: string;
  published_at: Date;
}

/** The event's offset, and its transaction's LSN and time from the row's runs. */
function publishedRow(row: SendRow): PublishedRow {
  const runs = row.commit_lsns.split(',');
  const times = row.committed_at.split(',');
  let run = 0;
  for (let first = 0; run < runs.length - 1; run += 1) {
    first += Number.parseInt(runs[run] ?? '', 10);
    if (first > row.position) break;
  }
  const lsn = runs[run] ?? '';
  const time = times[run] ?? '';
  return {
    event_id: row.event_id,
    topic: row.topic,
    partition: row.partition,
    record_offset: (BigInt(row.base_offset) + BigInt(row.position)).toString(),
    commit_lsn: lsn.slice(lsn.indexOf(':') + 1),
    committed_at: time === '' ? null : new Date(Number(time)),
    published_at: row.published_at,
  };
}

/** The checkpoints of the active generations that consume any of `topics`. */
export async function checkpointRows(
  pool: pg.Pool,
  topics: readonly string[],
): Promise<CheckpointRow[]> {
  const { rows } = await pool.query<CheckpointRow>(
    `SELECT g.projection, g.generation, g.instance, c.topic, c.partition, c.next_offset::text
       FROM sluice.projection_generations g
       JOIN sluice.projection_checkpoints c ON c.projection = g.instance
      WHERE g.state = 'active' AND c.topic = ANY($1::text[])
      ORDER BY g.projection`,
    [topics],
  );
  return rows;
}

/** Parked records of the given instances that hold one of the events. */
export async function parkedRows(
  pool: pg.Pool,
  instances: readonly string[],
  events: { type: string; id: string; topic: string; partition: number; offset: string }[],
): Promise<ParkedRow[]> {
  const select = `SELECT p.projection AS instance, p.topic, p.partition, p.record_offset::text,
    p.aggregate_type, p.aggregate_id, p.aggregate_version::text, p.reason, p.error
    FROM sluice.parked_events p`;
  const { rows } = await pool.query<ParkedRow>(
    `${select} JOIN unnest($2::text[], $3::text[]) AS k(t, i)
                 ON p.aggregate_type = k.t AND p.aggregate_id = k.i
      WHERE p.projection = ANY($1::text[])
     UNION
     ${select} JOIN unnest($4::text[], $5::int[], $6::bigint[]) AS k(t, n, o)
                 ON p.topic = k.t AND p.partition = k.n AND p.record_offset = k.o
      WHERE p.projection = ANY($1::text[])`,
    [
      instances,
      events.map((e) => e.type),
      events.map((e) => e.id),
      events.map((e) => e.topic),
      events.map((e) => e.partition),
      events.map((e) => e.offset),
    ],
  );
  return rows;
}

/** A record a projection may have applied: its generation and where the record is. */
export interface AppliedProbe {
  projection: string;
  generation: number;
  topic: string;
  partition: number;
  offset: string;
}

/**
 * When each probe's record was applied: the first applied batch of its generation that ends at
 * or after the offset, if it also starts at or before it (a partition's batches follow each
 * other). Index of the probe → time.
 */
export async function appliedTimes(
  pool: pg.Pool,
  probes: readonly AppliedProbe[],
): Promise<Map<number, Date>> {
  if (probes.length === 0) return new Map();
  const { rows } = await pool.query<{ n: string; applied_at: Date }>(
    `SELECT k.n, b.applied_at
       FROM unnest($1::text[], $2::int[], $3::text[], $4::int[], $5::bigint[])
            WITH ORDINALITY AS k(projection, generation, topic, partition, record_offset, n)
      CROSS JOIN LATERAL (
        SELECT b.applied_at, b.from_offset FROM sluice.projection_applied_batches b
         WHERE b.topic = k.topic AND b.partition = k.partition AND b.to_offset >= k.record_offset
           AND b.projection = k.projection AND b.generation = k.generation
         ORDER BY b.to_offset LIMIT 1) b
      WHERE b.from_offset <= k.record_offset`,
    [
      probes.map((p) => p.projection),
      probes.map((p) => p.generation),
      probes.map((p) => p.topic),
      probes.map((p) => p.partition),
      probes.map((p) => p.offset),
    ],
  );
  return new Map(rows.map((row) => [Number(row.n) - 1, row.applied_at]));
}

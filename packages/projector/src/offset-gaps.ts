import { sql, type Kysely } from 'kysely';
import { audit, type OperatorRequest } from './audit.js';
import { moveCheckpoint } from './bookkeeping.js';

/**
 * Offsets a partition's checkpoint needed that Kafka no longer held (retention, deleted records):
 * the events there never reached the generation. Until an operator accepts it, a gap makes the
 * projector unready (active generation) or holds back the swap (a rebuild).
 */
export interface OffsetGap {
  projection: string;
  generation: number;
  topic: string;
  partition: number;
  /** The checkpoint when the gap was found. */
  fromOffset: string;
  /** The partition's first offset then: where the generation went on. */
  toOffset: string;
  detectedAt: Date;
  acceptedAt: Date | null;
  acceptedBy: string | null;
}

/**
 * Records that offsets `from` up to `to` are gone and moves the checkpoint to `to`, if it still
 * stands at `from`. False when another process moved it meanwhile.
 */
export async function recordOffsetGap<DB>(
  db: Kysely<DB>,
  instance: string,
  at: { topic: string; partition: number },
  from: bigint,
  to: bigint,
): Promise<boolean> {
  return db.transaction().execute(async (trx) => {
    if (!(await moveCheckpoint(trx, instance, at, from, to))) return false;
    await sql`
      INSERT INTO sluice.projection_offset_gaps (projection, topic, partition, from_offset, to_offset)
      VALUES (${instance}, ${at.topic}, ${at.partition}, ${from.toString()}::bigint, ${to.toString()}::bigint)
      ON CONFLICT DO NOTHING`.execute(trx);
    return true;
  });
}

interface GapRow {
  projection: string;
  generation: number;
  topic: string;
  partition: number;
  from_offset: string;
  to_offset: string;
  detected_at: Date;
  accepted_at: Date | null;
  accepted_by: string | null;
}

/** Offset gaps of generations still in use, of `projection` or of all; unaccepted ones first. */
export async function listOffsetGaps<DB>(
  db: Kysely<DB>,
  projection?: string,
): Promise<OffsetGap[]> {
  const { rows } = await sql<GapRow>`
    SELECT g.projection, g.generation, o.topic, o.partition, o.from_offset::text, o.to_offset::text,
           o.detected_at, o.accepted_at, o.accepted_by
      FROM sluice.projection_offset_gaps o
      JOIN sluice.projection_generations g ON g.instance = o.projection
     WHERE g.state IN ('active', 'building')
       AND ${projection === undefined ? sql`true` : sql`g.projection = ${projection}`}
     ORDER BY o.accepted_at IS NOT NULL, o.detected_at, o.topic, o.partition`.execute(db);
  return rows.map((row) => ({
    projection: row.projection,
    generation: row.generation,
    topic: row.topic,
    partition: row.partition,
    fromOffset: row.from_offset,
    toOffset: row.to_offset,
    detectedAt: row.detected_at,
    acceptedAt: row.accepted_at,
    acceptedBy: row.accepted_by,
  }));
}

/** Accepts every unaccepted offset gap of a projection's generations in use; returns how many. */
export async function acceptOffsetGaps<DB>(
  db: Kysely<DB>,
  projection: string,
  request: OperatorRequest,
): Promise<number> {
  return db.transaction().execute(async (trx) => {
    const { rows } = await sql<{ topic: string; partition: number; generation: number }>`
      UPDATE sluice.projection_offset_gaps o
         SET accepted_at = now(), accepted_by = ${request.actor}, accepted_reason = ${request.reason ?? null}
        FROM sluice.projection_generations g
       WHERE g.instance = o.projection AND g.projection = ${projection}
         AND g.state IN ('active', 'building') AND o.accepted_at IS NULL
      RETURNING o.topic, o.partition, g.generation`.execute(trx);
    await audit(trx, {
      actor: request.actor,
      action: 'accept_offset_gaps',
      projection,
      target: rows,
      reason: request.reason ?? null,
      outcome: { accepted: rows.length },
    });
    return rows.length;
  });
}

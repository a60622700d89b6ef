import { sql, type Kysely } from 'kysely';
import type { Consumed } from './generation-sync.js';

/** Why a projector is not ready. */
export interface HealthProblem {
  code: 'consumer_stopped' | 'stalled' | 'offset_gap' | 'joining';
  projection: string;
  detail: string;
}

/**
 * Consumers stopped for good, whose batches have failed for `stalledAfterMs` without a success,
 * with a batch applying for that long, or with a fetch Kafka has not answered for that long.
 */
export function consumerProblems(
  consumed: Iterable<Consumed>,
  stalledAfterMs: number,
): HealthProblem[] {
  const problems: HealthProblem[] = [];
  const now = Date.now();
  for (const { projection, generation, consumer } of consumed) {
    const health = consumer.health();
    const name = `${projection} generation ${generation}`;
    if (health.crashed !== undefined) {
      problems.push({
        code: 'consumer_stopped',
        projection,
        detail: `The consumer of ${name} stopped (${errorKind(health.crashed)}); the log has the cause`,
      });
      continue;
    }
    // In this order, the first that has lasted `stalledAfterMs`.
    const stalls: [since: number | undefined, detail: (seconds: number) => string][] = [
      [
        health.failingSince,
        (s) =>
          `Batches of ${name} have failed for ${s} s (${errorKind(health.lastError)}); the log has the cause`,
      ],
      [
        health.applyingSince,
        (s) =>
          `A batch of ${name} has been applying for ${s} s: it waits on a lock, a handler or the database`,
      ],
      [health.fetchOverdueSince, (s) => `Kafka has not answered the fetches of ${name} for ${s} s`],
    ];
    for (const [since, detail] of stalls) {
      if (since === undefined || now - since < stalledAfterMs) continue;
      problems.push({
        code: 'stalled',
        projection,
        detail: detail(Math.round((now - since) / 1000)),
      });
      break;
    }
  }
  return problems;
}

/**
 * What kind of error `error` is, for a probe's body: a code (Sluice's, PostgreSQL's SQLSTATE,
 * Node's), Kafka's error type, or the error's name. Never its message, which may name hosts,
 * roles, certificates or event data.
 */
function errorKind(error: unknown): string {
  if (!(error instanceof Error)) return 'unknown';
  const { code, type } = error as { code?: unknown; type?: unknown };
  if (typeof code === 'string' && code !== '') return code;
  if (typeof type === 'string' && type !== '') return type;
  return error.name;
}

/** Active generations of `projections` with offset gaps no operator accepted yet. */
export async function gapProblems<DB>(
  db: Kysely<DB>,
  projections: readonly string[],
): Promise<HealthProblem[]> {
  const { rows } = await sql<{ projection: string; n: string }>`
    SELECT g.projection, count(*)::text AS n FROM sluice.projection_offset_gaps o
      JOIN sluice.projection_generations g ON g.instance = o.projection
     WHERE g.state = 'active' AND o.accepted_at IS NULL AND g.projection = ANY(${projections}::text[])
     GROUP BY g.projection`.execute(db);
  return rows.map((row) => ({
    code: 'offset_gap' as const,
    projection: row.projection,
    detail: `${row.n} partition offset gap(s): Kafka no longer held records ${row.projection} had not applied; see GET /offset-gaps, then accept them or rebuild`,
  }));
}

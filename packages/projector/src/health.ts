import { errorMessage } from '@sluice/errors';
import { sql, type Kysely } from 'kysely';
import type { Consumed } from './generation-sync.js';

/** Why a projector is not ready. */
export interface HealthProblem {
  code: 'consumer_stopped' | 'stalled' | 'offset_gap' | 'joining';
  projection: string;
  detail: string;
}

/** Consumers stopped for good, or whose batches have failed for `stalledAfterMs` without a success. */
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
        detail: `The consumer of ${name} stopped: ${errorMessage(health.crashed)}`,
      });
    } else if (health.failingSince !== undefined && now - health.failingSince >= stalledAfterMs) {
      const seconds = Math.round((now - health.failingSince) / 1000);
      problems.push({
        code: 'stalled',
        projection,
        detail: `Batches of ${name} have failed for ${seconds} s: ${errorMessage(health.lastError)}`,
      });
    }
  }
  return problems;
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

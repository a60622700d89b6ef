import { sql, type Kysely } from 'kysely';

/**
 * The last version `projection` applied of each aggregate in `ids` of `aggregateType`, as its
 * active generation records it (the one readers see: the projection's first generation until a
 * rebuild replaced it). An aggregate it has not applied yet is absent from the map. For waiting
 * until a read model includes a write, without reading the projector's bookkeeping directly.
 *
 * @example
 * const applied = await appliedVersions(db, 'cart_summary', 'cart', [cartId]);
 * const caughtUp = (applied.get(cartId) ?? 0) >= writtenVersion;
 */
export async function appliedVersions<DB>(
  db: Kysely<DB>,
  projection: string,
  aggregateType: string,
  ids: readonly string[],
): Promise<Map<string, number>> {
  const { rows } = await sql<{ aggregate_id: string; version: string }>`
    SELECT aggregate_id, version::text FROM sluice.projection_versions
     WHERE projection = COALESCE((SELECT instance FROM sluice.projection_generations
                                   WHERE projection = ${projection} AND state = 'active'), ${projection})
       AND aggregate_type = ${aggregateType}
       AND aggregate_id = ANY(${ids}::text[])`.execute(db);
  return new Map(rows.map((row) => [row.aggregate_id, Number(row.version)]));
}

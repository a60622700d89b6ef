import { arrayLiteral, atCommit } from '@sluice/database/statements';
import { sql, type CompiledQuery, type Kysely, type QueryResult, type Transaction } from 'kysely';

/** Identifies a topic-partition (in a batch, the apply queue). */
export const partitionKey = (topic: string, partition: number): string =>
  `${topic}\u0000${partition}`;

/** Identifies an aggregate within a batch. */
export const aggregateKey = (type: string, id: string): string => `${type}\u0000${id}`;

/** A partition's position: where its consumer must be, or where its checkpoint moves. */
export interface PartitionOffset {
  topic: string;
  partition: number;
  offset: bigint;
}

/**
 * The stored checkpoints of those of `assignment`'s partitions (topic → partitions) this
 * projection instance has applied before: where its consumer must start.
 */
export async function readCheckpoints<DB>(
  db: Kysely<DB>,
  instance: string,
  assignment: Readonly<Record<string, readonly number[]>>,
): Promise<PartitionOffset[]> {
  const topics: string[] = [];
  const partitions: number[] = [];
  for (const [topic, list] of Object.entries(assignment)) {
    for (const partition of list) {
      topics.push(topic);
      partitions.push(partition);
    }
  }
  if (topics.length === 0) return [];
  const { rows } = await sql<{ topic: string; partition: number; next_offset: string | number }>`
    SELECT c.topic, c.partition, c.next_offset FROM sluice.projection_checkpoints c
      JOIN unnest(${topics}::text[], ${partitions}::int[]) AS k(topic, partition)
        ON c.topic = k.topic AND c.partition = k.partition
     WHERE c.projection = ${instance}`.execute(db);
  return rows.map((row) => ({
    topic: row.topic,
    partition: row.partition,
    offset: BigInt(row.next_offset),
  }));
}

/** A partition's checkpoint: the next offset to apply, and what the record before it was. */
export interface Checkpoint {
  next: bigint;
  /** The {@link fingerprint} of the record at `next - 1`, when known. */
  lastRecord: string | null;
}

type CheckpointRow = {
  topic: string;
  partition: number;
  next_offset: string | number;
  last_record: string | null;
};

/** Creates (at 0) and locks the partitions' checkpoints in one statement, in the given order. */
const lockStatement = (
  instance: string,
  partitions: readonly { topic: string; partition: number }[],
) =>
  sql<CheckpointRow>`
    INSERT INTO sluice.projection_checkpoints AS c (projection, topic, partition, next_offset)
    SELECT ${instance}, k.topic, k.partition, 0
      FROM unnest(${partitions.map((p) => p.topic)}::text[], ${partitions.map((p) => p.partition)}::int[])
           WITH ORDINALITY AS k(topic, partition, n)
     ORDER BY k.n
    ON CONFLICT (projection, topic, partition) DO UPDATE SET next_offset = c.next_offset
    RETURNING c.topic, c.partition, c.next_offset, c.last_record`;

const checkpointsOf = (rows: readonly CheckpointRow[]): Map<string, Checkpoint> =>
  new Map(
    rows.map((row) => [
      partitionKey(row.topic, row.partition),
      { next: BigInt(row.next_offset), lastRecord: row.last_record },
    ]),
  );

/** Checkpoints by partition key, and the aggregates known (see {@link lockAndReadStatements}). */
export interface LockedAndRead {
  checkpoints: Map<string, Checkpoint>;
  known: KnownAggregates;
}

/**
 * Creates (at 0) and locks the partitions' checkpoints, in the given order, then reads the
 * aggregates' applied versions and parked records: statements to pipeline (with other batches'
 * too). The read runs once the locks are held, with a snapshot of its own, so it sees what a
 * process that held them before committed (a process that lost a partition in a rebalance waits
 * for the lock, then finds its offsets already applied).
 */
export function lockAndReadStatements<DB>(
  trx: Transaction<DB>,
  instance: string,
  partitions: readonly { topic: string; partition: number }[],
  aggregates: readonly (readonly [type: string, id: string])[],
): CompiledQuery[] {
  const lock = lockStatement(instance, partitions).compile(trx);
  return aggregates.length === 0
    ? [lock]
    : [lock, readStatement(instance, aggregates).compile(trx)];
}

/** What the results of {@link lockAndReadStatements}, in order, hold. */
export function lockedAndRead(results: readonly QueryResult<unknown>[]): LockedAndRead {
  const [locked, read] = results;
  return {
    checkpoints: checkpointsOf((locked?.rows ?? []) as CheckpointRow[]),
    known: knownOf((read?.rows ?? []) as AggregateRow[]),
  };
}

/** Where a checkpoint moves when a batch commits, with the fingerprint of the record before it. */
export interface Advance extends PartitionOffset {
  lastRecord: string | null;
  /** The batch's first offset in the partition (`offset` is past its last). */
  from: bigint;
}

/** Whose applied batches {@link saveProgress} records for the event journey. */
export interface AppliedBatchesOf {
  projection: string;
  generation: number;
}

/** Applied versions and parked aggregates, by {@link aggregateKey}. */
export interface KnownAggregates {
  versions: Map<string, number>;
  parked: Set<string>;
}

const noAggregates = (): KnownAggregates => ({ versions: new Map(), parked: new Set() });

type AggregateRow = {
  kind: 'v' | 'p';
  aggregate_type: string;
  aggregate_id: string;
  version: string | number | null;
};

/** The statement of {@link readAggregates}: one round trip for both. */
function readStatement(
  instance: string,
  aggregates: readonly (readonly [type: string, id: string])[],
) {
  const types = arrayLiteral(aggregates.map((a) => a[0]));
  const ids = arrayLiteral(aggregates.map((a) => a[1]));
  return sql<AggregateRow>`
    SELECT 'v' AS kind, v.aggregate_type, v.aggregate_id, v.version FROM sluice.projection_versions v
      JOIN unnest(${types}::text[], ${ids}::text[]) AS k(aggregate_type, aggregate_id)
        ON v.aggregate_type = k.aggregate_type AND v.aggregate_id = k.aggregate_id
     WHERE v.projection = ${instance}
    UNION ALL
    SELECT DISTINCT 'p', p.aggregate_type, p.aggregate_id, NULL::bigint FROM sluice.parked_events p
      JOIN unnest(${types}::text[], ${ids}::text[]) AS k(aggregate_type, aggregate_id)
        ON p.aggregate_type = k.aggregate_type AND p.aggregate_id = k.aggregate_id
     WHERE p.projection = ${instance}`;
}

// int8 arrives as text unless the pool parses it.
function knownOf(rows: readonly AggregateRow[], into = noAggregates()): KnownAggregates {
  for (const row of rows) {
    const key = aggregateKey(row.aggregate_type, row.aggregate_id);
    if (row.kind === 'v') into.versions.set(key, Number(row.version));
    else into.parked.add(key);
  }
  return into;
}

/** The aggregates `items` name (`of` each, when it names one), each once, by {@link aggregateKey}. */
export function aggregatesOf<T>(
  items: readonly T[],
  of: (item: T) => [type: string, id: string] | undefined,
): Map<string, [type: string, id: string]> {
  // By type, then id: a key is made once per aggregate rather than once per item.
  type Aggregate = [type: string, id: string];
  const byType = new Map<string, Map<string, Aggregate>>();
  for (const item of items) {
    const aggregate = of(item);
    if (aggregate === undefined) continue;
    let ids = byType.get(aggregate[0]);
    if (ids === undefined) byType.set(aggregate[0], (ids = new Map<string, Aggregate>()));
    if (!ids.has(aggregate[1])) ids.set(aggregate[1], aggregate);
  }
  const aggregates = new Map<string, Aggregate>();
  for (const ids of byType.values())
    for (const aggregate of ids.values()) aggregates.set(aggregateKey(...aggregate), aggregate);
  return aggregates;
}

/**
 * Applied versions and parked aggregates among `aggregates`, by {@link aggregateKey}; with
 * `read`, what it already holds of them (see {@link lockAndReadStatements}), keyed as
 * {@link aggregatesOf} keys them, and only the others are read.
 */
export async function readAggregates<DB>(
  trx: Transaction<DB>,
  instance: string,
  aggregates: readonly (readonly [type: string, id: string])[],
  read?: { aggregates: ReadonlyMap<string, unknown>; known: KnownAggregates },
): Promise<KnownAggregates> {
  const missing =
    read === undefined
      ? aggregates
      : aggregates.filter(([type, id]) => !read.aggregates.has(aggregateKey(type, id)));
  const known = read?.known ?? noAggregates();
  if (missing.length === 0) return known;
  return knownOf((await readStatement(instance, missing).execute(trx)).rows, known);
}

/**
 * Raises aggregates' applied versions (never lowers one) and moves checkpoints, in one statement;
 * with `journey`, the same statement records each advanced partition's batch as applied. With
 * `atCommit`, the statement is sent with the transaction's COMMIT (nothing after it in the
 * transaction may read what it writes).
 */
export async function saveProgress<DB>(
  trx: Transaction<DB>,
  instance: string,
  versions: readonly { type: string; id: string; version: number }[],
  advances: readonly Advance[],
  journey?: AppliedBatchesOf,
  when: 'now' | 'atCommit' = 'now',
): Promise<void> {
  if (versions.length === 0 && advances.length === 0) return;
  const batches = journey === undefined ? [] : advances;
  const statement = sql`
    WITH versions AS (
      INSERT INTO sluice.projection_versions (projection, aggregate_type, aggregate_id, version)
      SELECT ${instance}, t, i, v
        FROM unnest(${arrayLiteral(versions.map((v) => v.type))}::text[],
                    ${arrayLiteral(versions.map((v) => v.id))}::text[],
                    ${arrayLiteral(versions.map((v) => v.version))}::bigint[]) AS x(t, i, v)
      ON CONFLICT (projection, aggregate_type, aggregate_id) DO UPDATE SET version = excluded.version
        WHERE sluice.projection_versions.version < excluded.version
    ), batches AS (
      INSERT INTO sluice.projection_applied_batches
             (projection, generation, topic, partition, from_offset, to_offset, applied_at)
      SELECT ${journey?.projection ?? ''}, ${journey?.generation ?? 0}::int, t, p, f, n - 1, clock_timestamp()
        FROM unnest(${batches.map((a) => a.topic)}::text[], ${batches.map((a) => a.partition)}::int[],
                    ${batches.map((a) => a.from.toString())}::bigint[],
                    ${batches.map((a) => a.offset.toString())}::bigint[]) AS x(t, p, f, n)
    )
    UPDATE sluice.projection_checkpoints c SET next_offset = x.n, last_record = x.r, updated_at = now()
      FROM unnest(${advances.map((a) => a.topic)}::text[], ${advances.map((a) => a.partition)}::int[],
                  ${advances.map((a) => a.offset.toString())}::bigint[],
                  ${advances.map((a) => a.lastRecord)}::text[]) AS x(t, p, n, r)
     WHERE c.projection = ${instance} AND c.topic = x.t AND c.partition = x.p`;
  if (when === 'atCommit') await atCommit(trx, [statement.compile(trx)]);
  else await statement.execute(trx);
}

/** Notes what the record before a partition's checkpoint is now. */
export async function setLastRecord<DB>(
  trx: Transaction<DB>,
  instance: string,
  at: { topic: string; partition: number },
  lastRecord: string,
): Promise<void> {
  await sql`
    UPDATE sluice.projection_checkpoints SET last_record = ${lastRecord}
     WHERE projection = ${instance} AND topic = ${at.topic} AND partition = ${at.partition}`.execute(
    trx,
  );
}

/** Sets a partition's checkpoint to `to` if it still stands at `from`; false if it moved. */
export async function moveCheckpoint<DB>(
  db: Kysely<DB> | Transaction<DB>,
  instance: string,
  at: { topic: string; partition: number },
  from: bigint,
  to: bigint,
): Promise<boolean> {
  const result = await sql`
    UPDATE sluice.projection_checkpoints
       SET next_offset = ${to.toString()}::bigint, last_record = NULL, updated_at = now()
     WHERE projection = ${instance} AND topic = ${at.topic} AND partition = ${at.partition}
       AND next_offset = ${from.toString()}::bigint`.execute(db);
  return Number(result.numAffectedRows ?? 0n) === 1;
}

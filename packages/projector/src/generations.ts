import { SluiceError } from '@sluice/errors';
import { sql, type Kysely, type Transaction } from 'kysely';
import { audit, type OperatorRequest } from './audit.js';
import type { Projection, TableNamer } from './projection.js';
import type { ProjectorErrorCode } from './errors.js';

/** Where a generation is in its life: replaying, serving reads, replaced, or given up. */
export type GenerationState = 'building' | 'active' | 'retired' | 'cancelled';

/**
 * One generation of a projection: its own tables (`<table>_g<n>`), its own consumer group and
 * its own bookkeeping, keyed by `instance`.
 */
export interface Generation {
  projection: string;
  generation: number;
  /** Keys checkpoints, versions, parked events and the consumer group. */
  instance: string;
  state: GenerationState;
  createdAt: Date;
  activatedAt: Date | null;
  retiredAt: Date | null;
}

/** How far a building generation is behind the active one, per partition and in total. */
export interface RebuildProgress {
  generation: number;
  /** Records the building generation still has to pass to reach the active one. */
  behind: number;
  /** Offset gaps of the rebuild not yet accepted: it will not become active while there are any. */
  unacceptedOffsetGaps: number;
  partitions: { topic: string; partition: number; active: string; building: string }[];
}

/** The bookkeeping key of a generation. The first keeps the projection's name. */
export function instanceOf(projection: string, generation: number): string {
  return generation === 1 ? projection : `${projection}.g${generation}`;
}

/** Names tables in one generation. */
export function tableNamer(generation: number): TableNamer {
  return (name) => `${name}_g${generation}`;
}

interface GenerationRow {
  projection: string;
  generation: number;
  instance: string;
  state: GenerationState;
  created_at: Date;
  activated_at: Date | null;
  retired_at: Date | null;
}

const toGeneration = (row: GenerationRow): Generation => ({
  projection: row.projection,
  generation: row.generation,
  instance: row.instance,
  state: row.state,
  createdAt: row.created_at,
  activatedAt: row.activated_at,
  retiredAt: row.retired_at,
});

/** Serializes bootstrap, rebuild starts and swaps of one projection across processes. */
async function lockProjection<DB>(trx: Transaction<DB>, projection: string): Promise<void> {
  await sql`SELECT pg_advisory_xact_lock(hashtext(${`sluice.projection:${projection}`}))`.execute(
    trx,
  );
}

/** The generations of `projection`, oldest first. */
export async function listGenerations<DB>(
  db: Kysely<DB> | Transaction<DB>,
  projection: string,
): Promise<Generation[]> {
  return (await generationsOf(db, [projection])).get(projection) ?? [];
}

/** The generations of each of `projections` in one statement, oldest first. */
export async function generationsOf<DB>(
  db: Kysely<DB> | Transaction<DB>,
  projections: readonly string[],
): Promise<Map<string, Generation[]>> {
  const { rows } = await sql<GenerationRow>`
    SELECT projection, generation, instance, state, created_at, activated_at, retired_at
      FROM sluice.projection_generations WHERE projection = ANY(${projections}::text[])
     ORDER BY projection, generation`.execute(db);
  const byProjection = new Map<string, Generation[]>(projections.map((name) => [name, []]));
  for (const row of rows) byProjection.get(row.projection)?.push(toGeneration(row));
  return byProjection;
}

/** The active generation's number; 1 before the projector first ran. */
export async function activeGeneration<DB>(
  db: Kysely<DB> | Transaction<DB>,
  projection: string,
): Promise<number> {
  const generations = await listGenerations(db, projection);
  return generations.find((g) => g.state === 'active')?.generation ?? 1;
}

/** Points the readers' views (the plain table names) at one generation's tables. */
async function pointViews<DB>(
  trx: Transaction<DB>,
  projection: Projection<DB>,
  generation: number,
): Promise<void> {
  const table = tableNamer(generation);
  for (const name of projection.tables) {
    // Drop and create rather than replace: a new generation may have different columns.
    await sql`DROP VIEW IF EXISTS ${sql.table(name)}`.execute(trx);
    await sql`CREATE VIEW ${sql.table(name)} AS SELECT * FROM ${sql.table(table(name))}`.execute(
      trx,
    );
  }
}

/**
 * Creates the schemas of `tables` that do not exist. Only those: PostgreSQL checks CREATE on the
 * database before it sees that CREATE SCHEMA IF NOT EXISTS has nothing to do, and a role that
 * owns an existing schema needs no such privilege.
 */
async function createMissingSchemas<DB>(trx: Kysely<DB>, tables: readonly string[]) {
  const schemas = [...new Set(tables.map((name) => name.split('.')[0] ?? ''))];
  const { rows } = await sql<{ name: string }>`
    SELECT wanted.name FROM unnest(${schemas}::text[]) AS wanted(name)
     WHERE NOT EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = wanted.name)`.execute(trx);
  for (const { name } of rows) await sql`CREATE SCHEMA IF NOT EXISTS ${sql.id(name)}`.execute(trx);
}

/**
 * Gives a projection its first generation, once: it adopts tables that already exist under the
 * plain names (renaming them to generation 1), or creates them.
 */
export async function ensureFirstGeneration<DB>(
  db: Kysely<DB>,
  projection: Projection<DB>,
): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await lockProjection(trx, projection.name);
    if ((await listGenerations(trx, projection.name)).length > 0) return;
    const { rows } = await sql<{ name: string; kind: string | null }>`
      SELECT t.name, c.relkind::text AS kind FROM unnest(${projection.tables}::text[]) AS t(name)
        LEFT JOIN pg_class c ON c.oid = to_regclass(t.name)`.execute(trx);
    const first = tableNamer(1);
    if (rows.every((row) => row.kind === 'r')) {
      for (const name of projection.tables) {
        const relation = name.slice(name.indexOf('.') + 1);
        await sql`ALTER TABLE ${sql.table(name)} RENAME TO ${sql.id(first(relation))}`.execute(trx);
      }
    } else if (rows.every((row) => row.kind === null)) {
      await createMissingSchemas(trx, projection.tables);
      await projection.createTables(trx, first);
    } else {
      throw new SluiceError<ProjectorErrorCode>(
        'projection_tables_conflict',
        `Projection ${projection.name}: of its tables ${projection.tables.join(', ')} some exist ` +
          `and some do not (or are not tables); expected all or none`,
      );
    }
    await pointViews(trx, projection, 1);
    await sql`
      INSERT INTO sluice.projection_generations (projection, generation, instance, state, activated_at)
      VALUES (${projection.name}, 1, ${instanceOf(projection.name, 1)}, 'active', now())`.execute(
      trx,
    );
  });
}

/**
 * Starts a blue/green rebuild: creates the next generation's tables, empty, in state
 * `building`. Retired and cancelled generations are dropped first (tables and bookkeeping).
 */
export async function startRebuild<DB>(
  db: Kysely<DB>,
  projection: Projection<DB>,
  request: OperatorRequest = { actor: 'system' },
): Promise<Generation> {
  return db.transaction().execute(async (trx) => {
    await lockProjection(trx, projection.name);
    const generations = await listGenerations(trx, projection.name);
    const building = generations.find((g) => g.state === 'building');
    if (building !== undefined) {
      throw new SluiceError<ProjectorErrorCode>(
        'rebuild_in_progress',
        `Generation ${building.generation} of ${projection.name} is still being built`,
      );
    }
    if (generations.length === 0) {
      throw new SluiceError<ProjectorErrorCode>(
        'projection_not_started',
        `Projection ${projection.name} has no generation yet; start the projector first`,
      );
    }
    for (const retired of generations.filter(
      (g) => g.state === 'retired' || g.state === 'cancelled',
    )) {
      const table = tableNamer(retired.generation);
      for (const name of projection.tables)
        await sql`DROP TABLE IF EXISTS ${sql.table(table(name))}`.execute(trx);
      for (const bookkeeping of [
        'projection_checkpoints',
        'projection_versions',
        'parked_events',
        'projection_offset_gaps',
      ])
        await sql`DELETE FROM ${sql.table(`sluice.${bookkeeping}`)} WHERE projection = ${retired.instance}`.execute(
          trx,
        );
      await sql`DELETE FROM sluice.projection_generations
                 WHERE projection = ${projection.name} AND generation = ${retired.generation}`.execute(
        trx,
      );
    }
    const generation = Math.max(...generations.map((g) => g.generation)) + 1;
    await projection.createTables(trx, tableNamer(generation));
    const { rows } = await sql<GenerationRow>`
      INSERT INTO sluice.projection_generations (projection, generation, instance, state)
      VALUES (${projection.name}, ${generation}, ${instanceOf(projection.name, generation)}, 'building')
      RETURNING projection, generation, instance, state, created_at, activated_at, retired_at`.execute(
      trx,
    );
    await audit(trx, {
      actor: request.actor,
      action: 'start_rebuild',
      projection: projection.name,
      target: { generation },
      reason: request.reason ?? null,
      outcome: { state: 'building' },
    });
    return toGeneration(rows[0] as GenerationRow);
  });
}

interface CheckpointPair {
  topic: string;
  partition: number;
  active: string;
  building: string;
}

async function checkpointPairs<DB>(
  db: Kysely<DB> | Transaction<DB>,
  active: string,
  building: string,
): Promise<CheckpointPair[]> {
  const { rows } = await sql<CheckpointPair>`
    SELECT a.topic, a.partition, a.next_offset::text AS active, COALESCE(b.next_offset, 0)::text AS building
      FROM sluice.projection_checkpoints a
      LEFT JOIN sluice.projection_checkpoints b
        ON b.projection = ${building} AND b.topic = a.topic AND b.partition = a.partition
     WHERE a.projection = ${active}
     ORDER BY a.topic, a.partition`.execute(db);
  return rows;
}

const behindOf = (pairs: readonly CheckpointPair[]): number =>
  pairs.reduce((sum, p) => sum + Math.max(0, Number(BigInt(p.active) - BigInt(p.building))), 0);

/**
 * How far the building generation among a projection's `generations` is behind the active one;
 * undefined if none is building.
 */
export async function rebuildProgress<DB>(
  db: Kysely<DB>,
  generations: readonly Generation[],
): Promise<RebuildProgress | undefined> {
  const active = generations.find((g) => g.state === 'active');
  const building = generations.find((g) => g.state === 'building');
  if (active === undefined || building === undefined) return undefined;
  const partitions = await checkpointPairs(db, active.instance, building.instance);
  return {
    generation: building.generation,
    behind: behindOf(partitions),
    unacceptedOffsetGaps: await unacceptedGaps(db, building.instance),
    partitions,
  };
}

async function unacceptedGaps<DB>(
  db: Kysely<DB> | Transaction<DB>,
  instance: string,
): Promise<number> {
  const { rows } = await sql<{ n: string }>`
    SELECT count(*)::text AS n FROM sluice.projection_offset_gaps
     WHERE projection = ${instance} AND accepted_at IS NULL`.execute(db);
  return Number(rows[0]?.n ?? 0);
}

/**
 * Gives up a running rebuild: its generation is cancelled (its consumers stop within a
 * generation poll; its tables go at the next rebuild), readers keep the active one.
 *
 * @throws SluiceError `rebuild_not_running`
 */
export async function cancelRebuild<DB>(
  db: Kysely<DB>,
  projection: string,
  request: OperatorRequest = { actor: 'system' },
): Promise<Generation> {
  return db.transaction().execute(async (trx) => {
    await lockProjection(trx, projection);
    const { rows } = await sql<GenerationRow>`
      UPDATE sluice.projection_generations SET state = 'cancelled', retired_at = now()
       WHERE projection = ${projection} AND state = 'building'
      RETURNING projection, generation, instance, state, created_at, activated_at, retired_at`.execute(
      trx,
    );
    const row = rows[0];
    if (row === undefined) {
      throw new SluiceError<ProjectorErrorCode>(
        'rebuild_not_running',
        `No rebuild of ${projection} is running`,
      );
    }
    await audit(trx, {
      actor: request.actor,
      action: 'cancel_rebuild',
      projection,
      target: { generation: row.generation },
      reason: request.reason ?? null,
      outcome: { state: 'cancelled' },
    });
    return toGeneration(row);
  });
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Makes the building generation active if it has caught up: with the active generation's
 * checkpoints locked (its next batch waits), it waits up to `waitMs` until the building one has
 * passed them on every partition, then points the readers' views at it in the same
 * transaction. Readers never see a view older than the one before. False when it did not swap.
 */
export async function swapIfCaughtUp<DB>(
  db: Kysely<DB>,
  projection: Projection<DB>,
  waitMs: number,
): Promise<boolean> {
  return db.transaction().execute(async (trx) => {
    await lockProjection(trx, projection.name);
    const generations = await listGenerations(trx, projection.name);
    const active = generations.find((g) => g.state === 'active');
    const building = generations.find((g) => g.state === 'building');
    if (active === undefined || building === undefined) return false;
    await sql`SELECT 1 FROM sluice.projection_checkpoints WHERE projection = ${active.instance} FOR SHARE`.execute(
      trx,
    );
    const deadline = Date.now() + waitMs;
    while (behindOf(await checkpointPairs(trx, active.instance, building.instance)) > 0) {
      if (Date.now() > deadline) return false;
      await pause(20);
    }
    // A rebuild that missed records Kafka no longer held would show readers less than they saw.
    // Checked once it has passed the active one: a gap on its way was recorded with the
    // checkpoint that passed it.
    if ((await unacceptedGaps(trx, building.instance)) > 0) return false;
    await pointViews(trx, projection, building.generation);
    await sql`
      UPDATE sluice.projection_generations SET state = 'retired', retired_at = now()
       WHERE projection = ${projection.name} AND generation = ${active.generation}`.execute(trx);
    await sql`
      UPDATE sluice.projection_generations SET state = 'active', activated_at = now()
       WHERE projection = ${projection.name} AND generation = ${building.generation}`.execute(trx);
    return true;
  });
}

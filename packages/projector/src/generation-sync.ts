import { SluiceError } from '@sluice/errors';
import type { Kysely } from 'kysely';
import type { OperatorRequest } from './audit.js';
import type { GenerationConsumer } from './consumer.js';
import {
  cancelRebuild,
  ensureFirstGeneration,
  listGenerations,
  rebuildProgress,
  startRebuild,
  swapIfCaughtUp,
  type Generation,
} from './generations.js';
import type { Projection } from './projection.js';
import type { ProjectorErrorCode } from './errors.js';

/** A rebuild within this many records of the active generation tries to swap. */
const SWAP_WITHIN_RECORDS = 2000;
/** How long a swap may hold the active generation still while the new one passes it. */
const SWAP_WAIT_MS = 3000;
/** A retired generation's group that still had members is deleted again after this long. */
const GROUP_DELETE_RETRY_MS = 30_000;

/** A generation consumed here. */
export interface Consumed {
  projection: string;
  generation: number;
  consumer: GenerationConsumer;
}

/** What generation changes are told. */
export type GenerationChange = 'consuming' | 'stopped' | 'activated' | 'group_deleted';

/** Options for {@link createGenerationSync}. */
export interface GenerationSyncOptions<DB> {
  db: Kysely<DB>;
  projections: readonly Projection<DB>[];
  /** Starts consuming a generation here. */
  consume(projection: Projection<DB>, generation: Generation): Promise<GenerationConsumer>;
  /** Deletes generations' consumer groups; returns why Kafka kept some (by instance). */
  deleteGroups(instances: readonly string[]): Promise<Map<string, string>>;
  changed(projection: string, generation: number, change: GenerationChange): void;
  failed(projection: string, error: unknown): void;
  pollMs: number;
}

/**
 * Keeps this process in line with the generations table: consumes the active and building
 * generations of its projections, stops the others (and deletes their consumer groups), and
 * swaps a rebuild that caught up. One check at a time, one projection after the other.
 */
export function createGenerationSync<DB>(options: GenerationSyncOptions<DB>) {
  const { db } = options;
  const consumers = new Map<string, Consumed>();
  /** Instances of generations being built, as of the last check. */
  const building = new Set<string>();
  /** Projections being swapped here: their active generation's batches wait for this. */
  const heldBack = new Map<string, Promise<void>>();
  /** Retired and cancelled generations whose consumer group is gone, as this process saw. */
  const groupsGone = new Set<string>();
  const groupsTriedAt = new Map<string, number>();
  let stopped = false;
  let poll: NodeJS.Timeout | undefined;
  let syncing: Promise<void> = Promise.resolve();

  async function startConsumer(projection: Projection<DB>, generation: Generation) {
    const consumer = await options.consume(projection, generation);
    consumers.set(generation.instance, {
      projection: projection.name,
      generation: generation.generation,
      consumer,
    });
    options.changed(projection.name, generation.generation, 'consuming');
  }

  async function stopConsumer(generation: Generation): Promise<void> {
    const consumed = consumers.get(generation.instance);
    if (consumed === undefined) return;
    consumers.delete(generation.instance);
    await consumed.consumer.stop();
    options.changed(generation.projection, generation.generation, 'stopped');
  }

  async function follow(projection: Projection<DB>, generations: readonly Generation[]) {
    for (const g of generations) {
      if (g.state === 'building') building.add(g.instance);
      else building.delete(g.instance);
    }
    const inUse = (g: Generation) => g.state === 'active' || g.state === 'building';
    await Promise.all(
      generations
        .filter((g) => inUse(g) && !consumers.has(g.instance) && !stopped)
        .map((g) => startConsumer(projection, g)),
    );
    const done = generations.filter((g) => !inUse(g));
    await Promise.all(done.map(stopConsumer));
    await deleteGroups(projection.name, done);
  }

  /**
   * Deletes retired or cancelled generations' consumer groups, which lag tools would otherwise
   * report as falling behind forever. Kafka refuses while another process is still a member (it
   * stops within a generation poll): such groups are tried again later. Failures are reported,
   * not thrown: consuming goes on regardless.
   */
  async function deleteGroups(projection: string, done: readonly Generation[]): Promise<void> {
    const left = done.filter((g) => !groupsGone.has(g.instance));
    const triedAt = groupsTriedAt.get(projection) ?? -Infinity;
    if (left.length === 0 || stopped || Date.now() - triedAt < GROUP_DELETE_RETRY_MS) return;
    groupsTriedAt.set(projection, Date.now());
    let kept: Map<string, string>;
    try {
      kept = await options.deleteGroups(left.map((g) => g.instance));
    } catch (error) {
      options.failed(projection, error);
      return;
    }
    const refused: string[] = [];
    for (const g of left) {
      const why = kept.get(g.instance);
      if (why === undefined || why === 'GROUP_ID_NOT_FOUND') groupsGone.add(g.instance);
      if (why === undefined) options.changed(projection, g.generation, 'group_deleted');
      else if (why !== 'GROUP_ID_NOT_FOUND' && why !== 'NON_EMPTY_GROUP')
        refused.push(`${g.instance} (${why})`);
    }
    if (refused.length > 0) {
      const message = `Kafka did not delete retired consumer groups of: ${refused.join(', ')}`;
      options.failed(
        projection,
        new SluiceError<ProjectorErrorCode>('consumer_group_delete_failed', message, {
          retriable: true,
        }),
      );
    }
  }

  async function syncProjection(projection: Projection<DB>): Promise<void> {
    let generations = await listGenerations(db, projection.name);
    const rebuild = generations.find((g) => g.state === 'building');
    if (rebuild !== undefined && consumers.has(rebuild.instance)) {
      const progress = await rebuildProgress(db, generations);
      if (
        progress !== undefined &&
        progress.behind <= SWAP_WITHIN_RECORDS &&
        progress.unacceptedOffsetGaps === 0 &&
        (await swapHoldingBack(projection))
      ) {
        options.changed(projection.name, rebuild.generation, 'activated');
        generations = await listGenerations(db, projection.name);
      }
    }
    await follow(projection, generations);
  }

  /**
   * Swaps a caught-up rebuild while this process's batches of the active generation wait before
   * taking a connection: otherwise they would hold the pool's connections, blocked on the
   * swap's locks, and starve the rebuild that has to pass them.
   */
  async function swapHoldingBack(projection: Projection<DB>): Promise<boolean> {
    let open = (): void => undefined;
    heldBack.set(projection.name, new Promise<void>((resolve) => (open = resolve)));
    try {
      return await swapIfCaughtUp(db, projection, SWAP_WAIT_MS);
    } finally {
      heldBack.delete(projection.name);
      open();
    }
  }

  function sync(): Promise<void> {
    // One projection after the other: two swaps at once would hold back twice as much.
    syncing = syncing.then(async () => {
      for (const projection of options.projections) {
        await syncProjection(projection).catch((error: unknown) =>
          options.failed(projection.name, error),
        );
      }
    });
    return syncing;
  }

  function schedule(): void {
    if (stopped) return;
    poll = setTimeout(() => void sync().then(schedule), options.pollMs);
  }

  return {
    consumers: (): Iterable<Consumed> => consumers.values(),
    isBuilding: (instance: string) => building.has(instance),
    /** Resolves when the projection's active generation may apply (not during a swap here). */
    admitted: (projection: string) => heldBack.get(projection) ?? Promise.resolve(),
    async start() {
      for (const projection of options.projections) await ensureFirstGeneration(db, projection);
      // Joins every group at once; a failure here is the caller's (unlike in the poll).
      await Promise.all(
        options.projections.map(async (projection) =>
          follow(projection, await listGenerations(db, projection.name)),
        ),
      );
      schedule();
    },
    async rebuild(projection: Projection<DB>, request: OperatorRequest): Promise<Generation> {
      const generation = await startRebuild(db, projection, request);
      // Other processes hosting it start consuming at their next check.
      building.add(generation.instance);
      const starting = syncing.then(() => startConsumer(projection, generation));
      syncing = starting.catch(() => undefined);
      await starting;
      return generation;
    },
    async cancelRebuild(projection: string, request: OperatorRequest): Promise<Generation> {
      const generation = await cancelRebuild(db, projection, request);
      await sync();
      return generation;
    },
    async stop() {
      stopped = true;
      clearTimeout(poll);
      await syncing;
      await Promise.all([...consumers.values()].map((c) => c.consumer.stop()));
      consumers.clear();
    },
  };
}

/** A running {@link createGenerationSync}. */
export type GenerationSync = ReturnType<typeof createGenerationSync>;

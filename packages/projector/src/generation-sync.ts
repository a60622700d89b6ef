import { SluiceError } from '@sluice/errors';
import type { Kysely } from 'kysely';
import type { OperatorRequest } from './audit.js';
import type { GenerationConsumer } from './consumer.js';
import {
  cancelRebuild,
  ensureFirstGeneration,
  generationsOf,
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
export class GenerationSync<DB> {
  private readonly consumed = new Map<string, Consumed>();
  /** Instances of generations being built, as of the last check. */
  private readonly building = new Set<string>();
  /** Projections being swapped here: their active generation's batches wait for this. */
  private readonly heldBack = new Map<string, Promise<void>>();
  /** Retired and cancelled generations whose consumer group is gone, as this process saw. */
  private readonly groupsGone = new Set<string>();
  private readonly groupsTriedAt = new Map<string, number>();
  private stopped = false;
  private poll: NodeJS.Timeout | undefined;
  private syncing: Promise<void> = Promise.resolve();

  constructor(private readonly options: GenerationSyncOptions<DB>) {}

  consumers(): Iterable<Consumed> {
    return this.consumed.values();
  }

  isBuilding(instance: string): boolean {
    return this.building.has(instance);
  }

  /** Resolves when the projection's active generation may apply (not during a swap here). */
  admitted(projection: string): Promise<void> {
    return this.heldBack.get(projection) ?? Promise.resolve();
  }

  async start(): Promise<void> {
    const { db, projections } = this.options;
    for (const projection of projections) await ensureFirstGeneration(db, projection);
    // Joins every group at once; a failure here is the caller's (unlike in the poll).
    await Promise.all(
      projections.map(async (projection) =>
        this.follow(projection, await listGenerations(db, projection.name)),
      ),
    );
    this.schedule();
  }

  async rebuild(projection: Projection<DB>, request: OperatorRequest): Promise<Generation> {
    const generation = await startRebuild(this.options.db, projection, request);
    // Other processes hosting it start consuming at their next check.
    this.building.add(generation.instance);
    const starting = this.syncing.then(() => this.startConsumer(projection, generation));
    this.syncing = starting.catch(() => undefined);
    await starting;
    return generation;
  }

  async cancelRebuild(projection: string, request: OperatorRequest): Promise<Generation> {
    const generation = await cancelRebuild(this.options.db, projection, request);
    await this.sync();
    return generation;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.poll);
    await this.syncing;
    await Promise.all([...this.consumed.values()].map((c) => c.consumer.stop()));
    this.consumed.clear();
  }

  private async startConsumer(projection: Projection<DB>, generation: Generation) {
    const consumer = await this.options.consume(projection, generation);
    this.consumed.set(generation.instance, {
      projection: projection.name,
      generation: generation.generation,
      consumer,
    });
    this.options.changed(projection.name, generation.generation, 'consuming');
  }

  private async stopConsumer(generation: Generation): Promise<void> {
    const consumed = this.consumed.get(generation.instance);
    if (consumed === undefined) return;
    this.consumed.delete(generation.instance);
    await consumed.consumer.stop();
    this.options.changed(generation.projection, generation.generation, 'stopped');
  }

  private async follow(projection: Projection<DB>, generations: readonly Generation[]) {
    for (const g of generations) {
      if (g.state === 'building') this.building.add(g.instance);
      else this.building.delete(g.instance);
    }
    const inUse = (g: Generation) => g.state === 'active' || g.state === 'building';
    await Promise.all(
      generations
        .filter((g) => inUse(g) && !this.consumed.has(g.instance) && !this.stopped)
        .map((g) => this.startConsumer(projection, g)),
    );
    const done = generations.filter((g) => !inUse(g));
    await Promise.all(done.map((g) => this.stopConsumer(g)));
    await this.deleteGroups(projection.name, done);
  }

  /**
   * Deletes retired or cancelled generations' consumer groups, which lag tools would otherwise
   * report as falling behind forever. Kafka refuses while another process is still a member (it
   * stops within a generation poll): such groups are tried again later. Failures are reported,
   * not thrown: consuming goes on regardless.
   */
  private async deleteGroups(projection: string, done: readonly Generation[]): Promise<void> {
    const left = done.filter((g) => !this.groupsGone.has(g.instance));
    const triedAt = this.groupsTriedAt.get(projection) ?? -Infinity;
    if (left.length === 0 || this.stopped || Date.now() - triedAt < GROUP_DELETE_RETRY_MS) return;
    this.groupsTriedAt.set(projection, Date.now());
    let kept: Map<string, string>;
    try {
      kept = await this.options.deleteGroups(left.map((g) => g.instance));
    } catch (error) {
      this.options.failed(projection, error);
      return;
    }
    const refused: string[] = [];
    for (const g of left) {
      const why = kept.get(g.instance);
      if (why === undefined || why === 'GROUP_ID_NOT_FOUND') this.groupsGone.add(g.instance);
      if (why === undefined) this.options.changed(projection, g.generation, 'group_deleted');
      else if (why !== 'GROUP_ID_NOT_FOUND' && why !== 'NON_EMPTY_GROUP')
        refused.push(`${g.instance} (${why})`);
    }
    if (refused.length === 0) return;
    const message = `Kafka did not delete retired consumer groups of: ${refused.join(', ')}`;
    this.options.failed(
      projection,
      new SluiceError<ProjectorErrorCode>('consumer_group_delete_failed', message, {
        retriable: true,
      }),
    );
  }

  private async syncProjection(
    projection: Projection<DB>,
    listed: readonly Generation[],
  ): Promise<void> {
    const { db } = this.options;
    let generations = listed;
    const rebuild = generations.find((g) => g.state === 'building');
    if (rebuild !== undefined && this.consumed.has(rebuild.instance)) {
      const progress = await rebuildProgress(db, generations);
      if (
        progress !== undefined &&
        progress.behind <= SWAP_WITHIN_RECORDS &&
        progress.unacceptedOffsetGaps === 0 &&
        (await this.swapHoldingBack(projection))
      ) {
        this.options.changed(projection.name, rebuild.generation, 'activated');
        generations = await listGenerations(db, projection.name);
      }
    }
    await this.follow(projection, generations);
  }

  /**
   * Swaps a caught-up rebuild while this process's batches of the active generation wait before
   * taking a connection: otherwise they would hold the pool's connections, blocked on the
   * swap's locks, and starve the rebuild that has to pass them.
   */
  private async swapHoldingBack(projection: Projection<DB>): Promise<boolean> {
    let open = (): void => undefined;
    this.heldBack.set(projection.name, new Promise<void>((resolve) => (open = resolve)));
    try {
      return await swapIfCaughtUp(this.options.db, projection, SWAP_WAIT_MS);
    } finally {
      this.heldBack.delete(projection.name);
      open();
    }
  }

  private sync(): Promise<void> {
    // One projection after the other: two swaps at once would hold back twice as much.
    this.syncing = this.syncing.then(async () => {
      const { db, projections } = this.options;
      let listed: Map<string, Generation[]>;
      try {
        listed = await generationsOf(
          db,
          projections.map((p) => p.name),
        );
      } catch (error) {
        for (const projection of projections) this.options.failed(projection.name, error);
        return;
      }
      for (const projection of projections) {
        await this.syncProjection(projection, listed.get(projection.name) ?? []).catch(
          (error: unknown) => this.options.failed(projection.name, error),
        );
      }
    });
    return this.syncing;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.poll = setTimeout(() => void this.sync().then(() => this.schedule()), this.options.pollMs);
  }
}

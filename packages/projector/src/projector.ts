import { deadLetterTopicFor, topicFor, type DomainEvent } from '@sluice/contracts';
import { SluiceError } from '@sluice/errors';
import { createTopicEnsurer } from '@sluice/kafka';
import type { Kafka } from 'kafkajs';
import type { Kysely } from 'kysely';
import { isConflict, type HandlerFailure } from './apply-events.js';
import { applyBatch, type BatchResult } from './batch.js';
import type { OperatorRequest } from './audit.js';
import { readCheckpoints } from './bookkeeping.js';
import { listParked, type ParkedEvent } from './parked-records.js';
import { createGenerationConsumer, type GenerationConsumer } from './consumer.js';
import { createDeadLetterSink } from './dead-letters.js';
import { createGenerationSync } from './generation-sync.js';
import { consumerProblems, gapProblems, type HealthProblem } from './health.js';
import {
  listGenerations,
  rebuildProgress,
  type Generation,
  type RebuildProgress,
} from './generations.js';
import {
  acceptOffsetGaps,
  listOffsetGaps,
  recordOffsetGap,
  type OffsetGap,
} from './offset-gaps.js';
import { acceptVersionGap, redriveParked, skipParked, type ParkedOutcome } from './parked.js';
import type { Projection } from './projection.js';
import { createKafkaRecordSource, deleteConsumerGroups } from './record-source.js';
import type { ProjectorErrorCode } from './errors.js';

/** One applied batch, as reported to {@link ProjectorHooks.batch}. */
export interface BatchReport {
  projection: string;
  generation: number;
  /** The generation is a rebuild replaying history, not the one readers see. */
  building: boolean;
  /** The partitions whose records the batch held, each with the records behind its end after it. */
  partitions: { topic: string; partition: number; lag: number }[];
  result: BatchResult;
}

/**
 * Something about a partition's offsets an operator must know: a `gap` (Kafka held no records
 * from the checkpoint `from` up to `to`, where the generation went on; recorded until accepted),
 * a `reset` (the partition ended below the checkpoint `from`, as a recreated topic does; the
 * checkpoint went back to `to`), or `rewritten` (the record before the checkpoint `from` is not
 * the one applied there: the offsets were reused, and the partition is read again from `to`). In
 * the last two the version guard keeps out what was applied before.
 */
export interface OffsetNotice {
  kind: 'gap' | 'reset' | 'rewritten';
  topic: string;
  partition: number;
  from: bigint;
  to: bigint;
}

/** What the projector reports as it works. Hooks must not throw; what they throw is reported. */
export interface ProjectorHooks {
  batch?(report: BatchReport): void;
  failed?(projection: string, error: unknown): void;
  /**
   * A generation started or stopped consuming here, became active, or (retired or cancelled)
   * had its consumer group deleted from Kafka.
   */
  generation?(
    projection: string,
    generation: number,
    change: 'consuming' | 'stopped' | 'activated' | 'group_deleted',
  ): void;
  offsets?(projection: string, generation: number, notice: OffsetNotice): void;
  /** A consumer stopped for good (kafkajs will not restart it): the process should restart. */
  crashed?(projection: string, generation: number, error: unknown): void;
}

/** Options for {@link createProjector}. */
export interface ProjectorOptions<DB> {
  db: Kysely<DB>;
  kafka: Kafka;
  projections: readonly Projection<DB>[];
  /** Prefix of the event topics (as the relay's `RELAY_TOPIC_PREFIX`) and of DLQ topics. Default ''. */
  topicPrefix?: string;
  /** Consumer groups are `<groupPrefix><projection>`. Default `sluice.projection.`. */
  groupPrefix?: string;
  /** Partitions of topics the projector has to create itself. Default 6. */
  partitions?: number;
  upcast?: (event: DomainEvent) => DomainEvent;
  /** Attempts of a failing handler before its event is dead-lettered. Default 3. */
  maxAttempts?: number;
  /** First pause before a failing handler's next attempt, doubling up to 2 s. Default 50. */
  retryDelayMs?: number;
  /** How long a silent member keeps its partitions; after a crash, the wait before others take over. Default 30000. */
  sessionTimeoutMs?: number;
  /**
   * Batches a consumer applies at once, each in its own transaction. Default 2. Partitions
   * of one projection may write the same rows: write them in a stable order (by key) to avoid
   * deadlocks; a batch that loses one anyway is applied again. Give `db` a pool larger than
   * this plus one: while a rebuild swaps, other processes' batches of the active generation
   * wait on its locks holding connections, and the rebuild there still needs one.
   */
  applyConcurrency?: number;
  /** How often generations are checked: rebuilds started elsewhere, swaps, retirements. Default 1000. */
  generationPollMs?: number;
  /** A consumer whose batches have failed this long without one succeeding is stalled. Default 30000. */
  stalledAfterMs?: number;
  hooks?: ProjectorHooks;
}

/** Running projections. */
export interface Projector {
  start(): Promise<void>;
  /** Finishes the batches in hand, then leaves the consumer groups. */
  stop(): Promise<void>;
  /** Whether every consumer runs and keeps up, and what is wrong if not. */
  health(): Promise<{ ready: boolean; problems: HealthProblem[] }>;
  /** Parked records of a projection's active generation (of all when omitted), oldest first. */
  parked(projection?: string): Promise<ParkedEvent[]>;
  /** Applies an aggregate's parked events again, in order (after the cause was fixed). */
  redrive(
    projection: string,
    aggregate: { type: string; id: string },
    request?: OperatorRequest,
  ): Promise<ParkedOutcome>;
  /** Gives up on exactly one parked record (see `skipParked`); undefined if it is not parked. */
  skip(
    projection: string,
    record: { topic: string; partition: number; offset: string },
    request?: OperatorRequest,
  ): Promise<ParkedOutcome | undefined>;
  /**
   * Accepts that an aggregate's missing versions will never come, and redrives it.
   *
   * @throws SluiceError `no_version_gap`, `projection_unknown`
   */
  acceptVersionGap(
    projection: string,
    aggregate: { type: string; id: string },
    request?: OperatorRequest,
  ): Promise<ParkedOutcome & { accepted: { from: number; to: number } }>;
  /** Offset gaps of a projection's generations in use (of all when omitted). */
  offsetGaps(projection?: string): Promise<OffsetGap[]>;
  /** Accepts a projection's offset gaps; returns how many. */
  acceptOffsetGaps(projection: string, request?: OperatorRequest): Promise<number>;
  /**
   * Rebuilds a projection blue/green: a new generation replays every event from the earliest
   * offset into new tables under its own consumer group, while the active one keeps serving
   * reads; once it has caught up, readers are switched to it in one transaction.
   *
   * @throws SluiceError `rebuild_in_progress`, `projection_unknown`
   */
  rebuild(projection: string, request?: OperatorRequest): Promise<Generation>;
  /**
   * Gives up a running rebuild; readers keep the active generation.
   *
   * @throws SluiceError `rebuild_not_running`, `projection_unknown`
   */
  cancelRebuild(projection: string, request?: OperatorRequest): Promise<Generation>;
  /** A projection's generations, and how far a rebuild is behind. */
  generations(
    projection: string,
  ): Promise<{ generations: Generation[]; rebuild: RebuildProgress | undefined }>;
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Runs a batch transaction again when PostgreSQL aborted it for a deadlock or a serialization
 * conflict with another batch (nothing of it was committed).
 */
async function retryingConflicts<T>(run: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await run();
    } catch (error) {
      if (!isConflict(error) || attempt >= 5) throw error;
      await pause(20 * 2 ** attempt);
    }
  }
}

/** Calls hooks; a hook that throws is reported, never allowed to fail a batch. */
function reporter(hooks: ProjectorHooks | undefined) {
  return (projection: string, call: (hooks: ProjectorHooks) => void): void => {
    if (hooks === undefined) return;
    try {
      call(hooks);
    } catch (error) {
      try {
        hooks.failed?.(projection, error);
      } catch {
        // Nothing left to tell it to.
      }
    }
  };
}

/**
 * Runs projections as Kafka consumer groups, one per generation. Each partition batch is
 * applied in one PostgreSQL transaction with its checkpoint; Kafka's committed offsets follow
 * afterwards (for lag tools only). A batch that starts past the stored checkpoint makes the
 * consumer seek back to it, or, where Kafka no longer holds those offsets, records the gap.
 */
export function createProjector<DB>(options: ProjectorOptions<DB>): Projector {
  const { db, kafka } = options;
  const prefix = options.topicPrefix ?? '';
  const groupPrefix = options.groupPrefix ?? 'sluice.projection.';
  const groupIdOf = (instance: string) => `${groupPrefix}${instance}`;
  const report = reporter(options.hooks);
  let started = false;
  let stopped = false;
  const deadLetterTopic = (projection: string) => deadLetterTopicFor(projection, prefix);
  const ensureTopics = createTopicEnsurer(kafka, { partitions: options.partitions ?? 6 });
  const deadLetters = createDeadLetterSink({
    kafka,
    topicOf: deadLetterTopic,
    ensureTopic: (topic) => ensureTopics([topic]),
  });
  const applyOptions = {
    topicPrefix: prefix,
    ...(options.upcast === undefined ? {} : { upcast: options.upcast }),
    ...(options.maxAttempts === undefined ? {} : { maxAttempts: options.maxAttempts }),
    ...(options.retryDelayMs === undefined ? {} : { retryDelayMs: options.retryDelayMs }),
  };

  const generations = createGenerationSync({
    db,
    projections: options.projections,
    consume: (projection, generation) => consume(projection, generation),
    async deleteGroups(instances) {
      const kept = await deleteConsumerGroups(kafka, instances.map(groupIdOf));
      const byInstance = new Map<string, string>();
      for (const instance of instances) {
        const why = kept.get(groupIdOf(instance));
        if (why !== undefined) byInstance.set(instance, why);
      }
      return byInstance;
    },
    changed: (projection, generation, change) =>
      report(projection, (h) => h.generation?.(projection, generation, change)),
    failed: (projection, error) => report(projection, (h) => h.failed?.(projection, error)),
    pollMs: options.generationPollMs ?? 1000,
  });

  /** Starts consuming one generation of a projection here. */
  async function consume(
    projection: Projection<DB>,
    generation: Generation,
  ): Promise<GenerationConsumer> {
    const { name } = projection;
    const { instance } = generation;
    const topics = projection.aggregateTypes.map((type) => topicFor(type, prefix));
    // The dead-letter topic too: created here, not inside the batch transaction of the first
    // poison record, which would hold its locks while Kafka creates a topic.
    await ensureTopics([...topics, deadLetterTopic(name)]);
    const failures = new Map<string, HandlerFailure>();
    const batchOptions = { ...applyOptions, generation: generation.generation, failures };
    const consumer = createGenerationConsumer({
      source: createKafkaRecordSource({
        kafka,
        groupId: groupIdOf(instance),
        topics,
        sessionTimeoutMs: options.sessionTimeoutMs ?? 30_000,
      }),
      store: {
        apply: (records, ends) =>
          retryingConflicts(() =>
            applyBatch(db, projection, records, deadLetters, { ...batchOptions, ends }),
          ),
        checkpoints: (assignment) => readCheckpoints(db, instance, assignment),
        recordGap: (at, from, to) => recordOffsetGap(db, instance, at, from, to),
      },
      events: {
        batch: (parts, applied) =>
          report(name, (h) =>
            h.batch?.({
              projection: name,
              generation: generation.generation,
              building: generations.isBuilding(instance),
              partitions: parts.map(({ topic, partition, lag }) => ({ topic, partition, lag })),
              result: applied.result,
            }),
          ),
        failed: (error) => report(name, (h) => h.failed?.(name, error)),
        notice: (notice) => report(name, (h) => h.offsets?.(name, generation.generation, notice)),
        crashed: (error) => {
          if (!stopped) report(name, (h) => h.crashed?.(name, generation.generation, error));
        },
      },
      applyConcurrency: options.applyConcurrency ?? 2,
      admitted: () =>
        generations.isBuilding(instance) ? Promise.resolve() : generations.admitted(name),
    });
    await consumer.start();
    return consumer;
  }

  const projectionNamed = (name: string): Projection<DB> => {
    const projection = options.projections.find((p) => p.name === name);
    if (projection === undefined)
      throw new SluiceError<ProjectorErrorCode>(
        'projection_unknown',
        `No projection named ${JSON.stringify(name)}`,
      );
    return projection;
  };

  const system: OperatorRequest = { actor: 'system' };
  return {
    async health() {
      const problems = consumerProblems(generations.consumers(), options.stalledAfterMs ?? 30_000);
      if (!started)
        problems.push({
          code: 'joining',
          projection: '*',
          detail: 'The consumer groups are joining',
        });
      problems.push(
        ...(await gapProblems(
          db,
          options.projections.map((p) => p.name),
        )),
      );
      return { ready: problems.length === 0, problems };
    },
    parked: (name) => listParked(db, name),
    redrive: (name, aggregate, request) =>
      redriveParked(db, projectionNamed(name), aggregate, deadLetters, applyOptions, request),
    skip: (name, record, request) =>
      skipParked(db, projectionNamed(name), record, deadLetters, applyOptions, request),
    acceptVersionGap: (name, aggregate, request) =>
      acceptVersionGap(db, projectionNamed(name), aggregate, deadLetters, applyOptions, request),
    offsetGaps: (name) => listOffsetGaps(db, name),
    acceptOffsetGaps: (name, request = system) =>
      acceptOffsetGaps(db, projectionNamed(name).name, request),
    rebuild: (name, request = system) => generations.rebuild(projectionNamed(name), request),
    cancelRebuild: (name, request = system) =>
      generations.cancelRebuild(projectionNamed(name).name, request),
    async generations(name) {
      projectionNamed(name);
      const list = await listGenerations(db, name);
      return { generations: list, rebuild: await rebuildProgress(db, list) };
    },
    async start() {
      await generations.start();
      started = true;
    },
    async stop() {
      stopped = true;
      await generations.stop();
      await deadLetters.close();
    },
  };
}

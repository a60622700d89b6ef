import type { DomainEvent } from '@sluice/contracts';
import type { Kafka } from 'kafkajs';
import type { Tracer } from '@sluice/tracing';
import type { Kysely } from 'kysely';
import type { OperatorRequest } from './audit.js';
import type { BatchResult } from './batch.js';
import type { Generation, RebuildProgress } from './generations.js';
import type { HealthProblem } from './health.js';
import type { OffsetGap } from './offset-gaps.js';
import type { ParkedEvent } from './parked-records.js';
import type { Reveal } from './records.js';
import type { ParkedOutcome } from './parked.js';
import type { Projection } from './projection.js';

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
  /** Deleting applied batches past `journeyRetentionHours` failed; the next sweep tries again. */
  journeyPurgeFailed?(error: unknown): void;
  /** A topic it reads or writes cannot keep every acknowledged record through a broker's loss. */
  topicDurability?(topic: string, problem: string): void;
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
  /**
   * Consumer groups are `<groupPrefix><projection>`, or, shared, `<groupPrefix><projections>` (the
   * projections' names in order, joined by `+`). Default `sluice.projection.`.
   */
  groupPrefix?: string;
  /**
   * `shared` (the default): with two projections or more, the active generations this process
   * starts with read through one consumer group, so each record is fetched and decoded once; each
   * still applies from its own checkpoint (the group it read through before is deleted). One
   * whose batches fail does not hold back the others (it reads them again after a pause); a slow
   * one holds back the next fetch, and one far behind makes the others wait until the group has
   * read past their positions. Processes that share partitions must host the same projections.
   * `per-projection`: a consumer group each. Rebuilds read through their own group either way.
   */
  consumerGroups?: 'shared' | 'per-projection';
  /** Partitions of topics the projector has to create itself. Default 6. */
  partitions?: number;
  /** Replicas of the topics it creates (`auto`: 3 with three or more brokers). Default `auto`. */
  replicationFactor?: number | 'auto' | undefined;
  /** `min.insync.replicas` of the topics it creates (`auto`: 2 with three or more replicas). Default `auto`. */
  minInsyncReplicas?: number | 'auto' | undefined;
  upcast?: (event: DomainEvent) => DomainEvent;
  /**
   * Opens sealed personal fields before projections see an event, in the batch's transaction
   * (`@sluice/privacy`), for the projections that opt in (`personalData: 'reveal'`); the others
   * get events as published. Parked records and dead letters keep the record as published.
   * Default: events as published.
   */
  reveal?: Reveal;
  /** Attempts of a failing handler before its event is dead-lettered. Default 3. */
  maxAttempts?: number;
  /** First pause before a failing handler's next attempt, doubling up to 2 s. Default 50. */
  retryDelayMs?: number;
  /** How long a silent member keeps its partitions; after a crash, the wait before others take over. Default 30000. */
  sessionTimeoutMs?: number;
  /**
   * After a fetch that reached its partitions' ends, the wait in milliseconds before the next
   * one (none while a partition is behind; a stop cuts it short):
   * the events written meanwhile come in one fetch and apply in one transaction (fewer fetches
   * and transactions under load, for more latency). Default 0: fetch again at once.
   */
  fetchLingerMs?: number;
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
  /**
   * A consumer whose batches have failed this long without one succeeding, with a batch applying
   * this long, or with a fetch Kafka has not answered this long, is stalled. Default 30000.
   */
  stalledAfterMs?: number;
  /**
   * Hours `sluice.projection_applied_batches` keeps when each partition batch was applied (the
   * event journey; one row per batch and partition, written with its checkpoint). 0 records
   * nothing. Default 168.
   */
  journeyRetentionHours?: number;
  /**
   * Traces each record applied, redriven or set aside: a `process <topic>` span, a child of the
   * record's `traceparent`, and the view's commit. Default: none.
   */
  tracer?: Tracer | undefined;
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

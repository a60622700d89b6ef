import { topicFor, type DomainEvent } from '@sluice/contracts';
import { errorMessage, SluiceError } from '@sluice/errors';
import { createTopicEnsurer } from '@sluice/preflight';
import type { Consumer, EachBatchPayload, Kafka } from 'kafkajs';
import { sql, type Kysely } from 'kysely';
import { createApplyQueue, type ApplyQueue } from './apply-queue.js';
import { HandlerRetry, isConflict, type HandlerFailure } from './apply-events.js';
import { applyBatch, type AppliedBatch, type BatchResult, type Rewind } from './batch.js';
import {
  partitionKey,
  readCheckpoints,
  type OperatorRequest,
  type PartitionOffset,
} from './bookkeeping.js';
import { createDeadLetterSink } from './dead-letters.js';
import {
  cancelRebuild,
  ensureFirstGeneration,
  instanceOf,
  listGenerations,
  rebuildProgress,
  startRebuild,
  swapIfCaughtUp,
  type Generation,
  type RebuildProgress,
} from './generations.js';
import {
  acceptOffsetGaps,
  listOffsetGaps,
  recordOffsetGap,
  type OffsetGap,
} from './offset-gaps.js';
import {
  acceptVersionGap,
  listParked,
  redriveParked,
  skipParked,
  type ParkedEvent,
  type ParkedOutcome,
} from './parked.js';
import type { Projection } from './projection.js';
import { toRecord, type IncomingRecord } from './records.js';

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

/** Why a projector is not ready. */
export interface HealthProblem {
  code: 'consumer_stopped' | 'stalled' | 'offset_gap' | 'joining';
  projection: string;
  detail: string;
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

/** Records fetched but not yet applied, per consumer, at most (a batch may go past it). */
const MAX_RECORDS_IN_HAND = 20_000;
/**
 * A partition at least this far behind its end is fetched while its batches apply, one batch
 * per partition. Nearer its end, a fetch's batches of all partitions apply in one transaction
 * and the next fetch waits for it.
 */
const CATCHING_UP_RECORDS = 1000;
/** kafkajs hands this many partitions' batches of one fetch to `eachBatch` at once, at most. */
const PARTITIONS_AT_ONCE = 64;
/** A rebuild within this many records of the active generation tries to swap. */
const SWAP_WITHIN_RECORDS = 2000;
/** How long a swap may hold the active generation still while the new one passes it. */
const SWAP_WAIT_MS = 3000;
/** A retired generation's group that still had members is deleted again after this long. */
const GROUP_DELETE_RETRY_MS = 30_000;

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

/**
 * What `eachBatch` throws for a failed batch: kafkajs retries it, and restarts the consumer when
 * its retries run out. It has no `cause`, because kafkajs judges the innermost cause, and a
 * TypeError or an error marked not retriable there would stop the consumer for good.
 */
class BatchFailed extends Error {
  override readonly name = 'SluiceBatchFailed';
  readonly retriable = true;
  constructor(readonly reason: unknown) {
    super(errorMessage(reason));
  }
}

/** A partition's records of one fetch. */
interface Part {
  key: string;
  topic: string;
  partition: number;
  /** The partition's end when fetched. */
  end: bigint;
  lag: number;
  records: IncomingRecord[];
  /** The consumer's seek count for the partition when kafkajs handed the batch over. */
  seekSerial: number;
}

function partOf(batch: EachBatchPayload['batch'], seekSerial: number): Part {
  const records = batch.messages.map((message) => toRecord(batch.topic, batch.partition, message));
  const end = BigInt(batch.highWatermark);
  return {
    key: partitionKey(batch.topic, batch.partition),
    topic: batch.topic,
    partition: batch.partition,
    end,
    lag: Number(end - (records.at(-1)?.offset ?? 0n) - 1n),
    records,
    seekSerial,
  };
}

/** A consumer of one generation, and what this process knows of it. */
interface Running {
  consumer: Consumer;
  queue: ApplyQueue;
  projection: string;
  generation: number;
  /** When its batches began failing without one succeeding since. */
  failingSince: number | undefined;
  lastError?: unknown;
  /** Set once kafkajs gave up on it. */
  crashed?: unknown;
}

/**
 * Runs projections as Kafka consumer groups, one per generation. Each partition batch is
 * applied in one PostgreSQL transaction with its checkpoint; Kafka's committed offsets follow
 * afterwards (for lag tools only). A batch that starts past the stored checkpoint makes the
 * consumer seek back to it, or, where Kafka no longer holds those offsets, records the gap.
 */
export function createProjector<DB>(options: ProjectorOptions<DB>): Projector {
  const prefix = options.topicPrefix ?? '';
  const groupPrefix = options.groupPrefix ?? 'sluice.projection.';
  const groupIdOf = (instance: string) => `${groupPrefix}${instance}`;
  const stalledAfterMs = options.stalledAfterMs ?? 30_000;
  /** Consumers, and the queues of batches they fetched, by generation instance. */
  const consumers = new Map<string, Running>();
  /** Instances of generations being built, as of the last check. */
  const building = new Set<string>();
  /** Projections being swapped here: their active generation's batches wait for this. */
  const heldBack = new Map<string, Promise<void>>();
  /** Retired and cancelled generations whose consumer group is gone from Kafka, as this process saw. */
  const groupsGone = new Set<string>();
  /** When each projection's retired groups were last tried. */
  const groupsTriedAt = new Map<string, number>();
  let stopped = false;
  let started = false;
  let poll: NodeJS.Timeout | undefined;
  /** The generation check in progress: one at a time, and stop() waits for it. */
  let syncing: Promise<void> = Promise.resolve();

  const deadLetterTopic = (projection: string) => `${prefix}sluice.dlq.${projection}`;
  const ensureTopics = createTopicEnsurer(options.kafka, { partitions: options.partitions ?? 6 });
  const deadLetters = createDeadLetterSink({
    kafka: options.kafka,
    topicOf: deadLetterTopic,
    ensureTopic: (topic) => ensureTopics([topic]),
  });

  /** Calls a hook; a hook that throws is reported, never allowed to fail a batch. */
  function report(projection: string, call: (hooks: ProjectorHooks) => void): void {
    const { hooks } = options;
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
  }

  const applyOptions = {
    topicPrefix: prefix,
    ...(options.upcast === undefined ? {} : { upcast: options.upcast }),
    ...(options.maxAttempts === undefined ? {} : { maxAttempts: options.maxAttempts }),
    ...(options.retryDelayMs === undefined ? {} : { retryDelayMs: options.retryDelayMs }),
  };

  /** The first offset Kafka still holds of a partition. */
  async function logStart(topic: string, partition: number): Promise<bigint> {
    const admin = options.kafka.admin();
    await admin.connect();
    try {
      const offsets = await admin.fetchTopicOffsets(topic);
      return BigInt(offsets.find((o) => o.partition === partition)?.low ?? '0');
    } finally {
      await admin.disconnect().catch(() => undefined);
    }
  }

  function consume(projection: Projection<DB>, generation: number, consumer: Consumer) {
    const instance = instanceOf(projection.name, generation);
    const failures = new Map<string, HandlerFailure>();
    const batchOptions = { ...applyOptions, generation, failures };
    /**
     * Per partition: how often this consumer sought, and the offset of the last seek since the
     * partition was last assigned.
     */
    const seeks = new Map<string, { serial: number; offset?: bigint }>();
    const seek = (at: PartitionOffset) => {
      const key = partitionKey(at.topic, at.partition);
      seeks.set(key, { serial: (seeks.get(key)?.serial ?? 0) + 1, offset: at.offset });
      try {
        consumer.seek({ topic: at.topic, partition: at.partition, offset: at.offset.toString() });
      } catch (error) {
        // kafkajs refuses while it restarts a crashed consumer; the seek on joining the group,
        // or the partition's next batch, finds the checkpoint again.
        report(projection.name, (h) => h.failed?.(projection.name, error));
      }
    };
    const notice = (kind: OffsetNotice['kind'], at: PartitionOffset, from: bigint, to: bigint) =>
      report(projection.name, (h) =>
        h.offsets?.(projection.name, generation, {
          kind,
          topic: at.topic,
          partition: at.partition,
          from,
          to,
        }),
      );

    /** A new assignment: batches handed over before it prove nothing about a seek. */
    const assigned = () => {
      for (const [key, last] of seeks) seeks.set(key, { serial: last.serial + 1 });
    };

    /**
     * A batch began past the checkpoint: the consumer goes back to it. Where Kafka no longer
     * holds the checkpoint's offset (retention, deleted records), or where the consumer already
     * went back there and Kafka again began later (nothing stored in between: compaction,
     * transaction markers), the gap is recorded (loudly, until an operator accepts it) and the
     * partition goes on where Kafka's records begin.
     */
    async function rewind(rewound: Rewind, part: Part): Promise<void> {
      const start = await logStart(rewound.topic, rewound.partition);
      const last = seeks.get(part.key);
      const empty = last?.offset === rewound.offset && last.serial === part.seekSerial;
      if (start <= rewound.offset && !empty) {
        seek(rewound);
        return;
      }
      const to = start > rewound.offset ? start : rewound.first;
      if (await recordOffsetGap(options.db, instance, rewound, rewound.offset, to))
        notice('gap', rewound, rewound.offset, to);
      seek({ ...rewound, offset: to });
    }

    function reportBatch(parts: readonly Part[], applied: AppliedBatch): void {
      const { result, resets } = applied;
      for (const reset of resets)
        notice('reset', { ...reset, offset: reset.to }, reset.from, reset.to);
      report(projection.name, (h) =>
        h.batch?.({
          projection: projection.name,
          generation,
          building: building.has(instance),
          partitions: parts.map(({ topic, partition, lag }) => ({ topic, partition, lag })),
          result,
        }),
      );
    }

    /** Applies parts in one transaction, retrying failed handlers after a pause. */
    async function applyOnce(
      parts: readonly Part[],
      heartbeat: () => Promise<void>,
    ): Promise<void> {
      const records = parts.flatMap((p) => p.records);
      const ends = new Map(parts.map((p) => [p.key, p.end]));
      for (;;) {
        try {
          const applied = await retryingConflicts(() =>
            applyBatch(options.db, projection, records, deadLetters, { ...batchOptions, ends }),
          );
          for (const rewound of applied.rewinds) {
            const part = parts.find(
              (p) => p.topic === rewound.topic && p.partition === rewound.partition,
            );
            if (part !== undefined) await rewind(rewound, part);
          }
          for (const reused of applied.rewritten) {
            const start = await logStart(reused.topic, reused.partition);
            notice('rewritten', reused, reused.offset, start);
            seek({ ...reused, offset: start });
          }
          reportBatch(parts, applied);
          return;
        } catch (error) {
          if (!(error instanceof HandlerRetry) || stopped) throw error;
          // No transaction is open: the pause holds no lock and no connection.
          await pause(error.delayMs);
          await heartbeat().catch(() => undefined);
        }
      }
    }

    /**
     * Applies some partitions' records in one transaction; if that fails, each partition alone,
     * so one partition's trouble does not hold back the others. Returns the failures by part.
     */
    const apply = async (
      parts: readonly Part[],
      heartbeat: () => Promise<void>,
    ): Promise<Map<string, Error>> => {
      if (!building.has(instance)) await heldBack.get(projection.name);
      const failed = new Map<string, Error>();
      const attempt = async (some: readonly Part[]) => {
        try {
          await applyOnce(some, heartbeat);
        } catch (error) {
          report(projection.name, (h) => h.failed?.(projection.name, error));
          for (const part of some)
            failed.set(part.key, error instanceof Error ? error : new Error(String(error)));
        }
      };
      await attempt(parts);
      if (failed.size > 0 && parts.length > 1) {
        failed.clear();
        for (const part of parts) await attempt([part]);
      }
      const running = consumers.get(instance);
      if (running !== undefined) {
        if (failed.size === 0) running.failingSince = undefined;
        else {
          running.failingSince ??= Date.now();
          running.lastError = [...failed.values()][0];
        }
      }
      return failed;
    };

    return { apply, seek, seeks, assigned };
  }

  async function startConsumer(projection: Projection<DB>, generation: number): Promise<void> {
    const instance = instanceOf(projection.name, generation);
    const topics = projection.aggregateTypes.map((type) => `${prefix}${topicFor(type)}`);
    // The dead-letter topic too: created here, not inside the batch transaction of the first
    // poison record, which would hold its locks while Kafka creates a topic.
    await ensureTopics([...topics, deadLetterTopic(projection.name)]);
    const consumer = options.kafka.consumer({
      groupId: groupIdOf(instance),
      allowAutoTopicCreation: false,
      maxBytesPerPartition: 4 * 1024 * 1024,
      sessionTimeout: options.sessionTimeoutMs ?? 30_000,
      // The broker answers as soon as records exist; a short wait keeps shutdown quick.
      maxWaitTimeInMs: 1000,
      heartbeatInterval: Math.min(3000, Math.floor((options.sessionTimeoutMs ?? 30_000) / 3)),
    });
    const queue = createApplyQueue({
      limit: MAX_RECORDS_IN_HAND,
      concurrency: options.applyConcurrency ?? 2,
    });
    const running: Running = {
      consumer,
      queue,
      projection: projection.name,
      generation,
      failingSince: undefined,
    };
    consumers.set(instance, running);
    const { apply, seek, seeks, assigned } = consume(projection, generation, consumer);
    // Each assigned partition starts at its checkpoint, not at Kafka's committed offset: that
    // may be ahead of it (batches in hand when a process died), and a partition that receives
    // nothing new would never show the gap. One record early: the record applied last shows
    // whether the partition's offsets still mean what they meant (a recreated topic reuses them).
    consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
      assigned();
      readCheckpoints(options.db, instance, payload.memberAssignment).then(
        (positions) =>
          positions.forEach((at) => seek({ ...at, offset: at.offset > 0n ? at.offset - 1n : 0n })),
        (error: unknown) => report(projection.name, (h) => h.failed?.(projection.name, error)),
      );
    });
    consumer.on(consumer.events.CRASH, ({ payload }) => {
      if (payload.restart || stopped) return;
      running.crashed = payload.error;
      report(projection.name, (h) => h.crashed?.(projection.name, generation, payload.error));
    });
    try {
      await consumer.connect();
      await consumer.subscribe({ topics, fromBeginning: true });
    } catch (error) {
      consumers.delete(instance);
      await consumer.disconnect().catch(() => undefined);
      throw error;
    }
    await consumer.run({
      autoCommit: true,
      // Kafka's offsets are for lag tools only. kafkajs commits after every batch whatever the
      // interval; the interval covers batches that filtering left empty.
      autoCommitInterval: 5000,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: PARTITIONS_AT_ONCE,
      eachBatch: eachBatchOf(running, apply, seeks),
    });
    report(projection.name, (h) => h.generation?.(projection.name, generation, 'consuming'));
  }

  /**
   * The consumer's `eachBatch`: a partition behind its end is applied behind the consumer's back
   * (the next fetch overlaps); caught-up partitions of one fetch apply together and the next
   * fetch waits for them. Whatever goes wrong reaches kafkajs as a retriable {@link BatchFailed}.
   */
  function eachBatchOf(
    running: Running,
    apply: (parts: readonly Part[], heartbeat: () => Promise<void>) => Promise<Map<string, Error>>,
    seeks: ReadonlyMap<string, { serial: number }>,
  ) {
    const { queue } = running;
    /** Catching-up batches that failed, by partition: the partition's next call hands them to kafkajs. */
    const failures = new Map<string, Error>();
    /** Caught-up partitions' batches of the fetch in progress: one transaction applies them. */
    let live: { parts: Part[]; applied: Promise<Map<string, Error>> } | undefined;
    const applyLive = (part: Part, heartbeat: () => Promise<void>) => {
      if (live === undefined) {
        const group: { parts: Part[]; applied: Promise<Map<string, Error>> } = {
          parts: [],
          // kafkajs hands over a fetch's batches at once: by the next turn of the event loop
          // every caught-up partition of this fetch has joined.
          applied: new Promise((resolve) => setImmediate(resolve)).then(async () => {
            live = undefined;
            const keys = group.parts.map((p) => p.key);
            const count = group.parts.reduce((sum, p) => sum + p.records.length, 0);
            let outcome = new Map<string, Error>();
            await queue.push(
              keys,
              count,
              async () => void (outcome = await apply(group.parts, heartbeat)),
              heartbeat,
            );
            await Promise.all(keys.map((key) => queue.applied(key)));
            return outcome;
          }),
        };
        live = group;
      }
      live.parts.push(part);
      return live.applied;
    };
    return async (payload: EachBatchPayload): Promise<void> => {
      const { batch } = payload;
      const key = partitionKey(batch.topic, batch.partition);
      const earlier = failures.get(key);
      failures.delete(key);
      if (earlier !== undefined) throw new BatchFailed(earlier);
      if (!payload.isRunning() || payload.isStale() || batch.messages.length === 0) return;
      try {
        const part = partOf(batch, seeks.get(key)?.serial ?? 0);
        const heartbeat = () => payload.heartbeat();
        if (part.lag >= CATCHING_UP_RECORDS) {
          await queue.push(
            [key],
            part.records.length,
            async () => {
              const failed = (await apply([part], heartbeat)).get(key);
              if (failed !== undefined) failures.set(key, failed);
            },
            heartbeat,
          );
        } else {
          // Caught up, the next fetch waits for this batch to commit: records that arrive
          // meanwhile make one batch, rather than a transaction and a fetch each.
          const failed = (await applyLive(part, heartbeat)).get(key);
          if (failed !== undefined) throw failed;
        }
      } catch (error) {
        throw error instanceof BatchFailed ? error : new BatchFailed(error);
      }
      // Kafka's committed offsets are for lag tools only: the checkpoint in PostgreSQL is
      // what counts, and a consumer that starts past it seeks back.
      const last = batch.messages[batch.messages.length - 1];
      if (last !== undefined && !payload.isStale()) payload.resolveOffset(last.offset);
      await payload.heartbeat();
    };
  }

  /** Applies the batches in hand, then leaves the group. */
  async function finish(running: Running): Promise<void> {
    await running.queue.close();
    await running.consumer.disconnect();
  }

  async function stopConsumer(projection: string, generation: number): Promise<void> {
    const instance = instanceOf(projection, generation);
    const running = consumers.get(instance);
    if (running === undefined) return;
    consumers.delete(instance);
    await finish(running);
    report(projection, (h) => h.generation?.(projection, generation, 'stopped'));
  }

  /** Consumes the active and building ones among a projection's `generations`, stops the others. */
  async function follow(
    projection: Projection<DB>,
    generations: readonly Generation[],
  ): Promise<void> {
    for (const g of generations) {
      if (g.state === 'building') building.add(g.instance);
      else building.delete(g.instance);
    }
    const inUse = (g: Generation) => g.state === 'active' || g.state === 'building';
    await Promise.all(
      generations
        .filter((g) => inUse(g) && !consumers.has(g.instance) && !stopped)
        .map((g) => startConsumer(projection, g.generation)),
    );
    const done = generations.filter((g) => !inUse(g));
    await Promise.all(done.map((g) => stopConsumer(projection.name, g.generation)));
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
    /** Why Kafka kept a group, by group id; GROUP_ID_NOT_FOUND means it was already gone. */
    const kept = new Map<string, string>();
    const admin = options.kafka.admin();
    try {
      await admin.connect();
      await admin.deleteGroups(left.map((g) => groupIdOf(g.instance))).catch((error: unknown) => {
        const groups = (error as { groups?: { groupId: string; error?: { type?: string } }[] })
          .groups;
        if (groups === undefined) throw error;
        for (const { groupId, error: cause } of groups) kept.set(groupId, cause?.type ?? 'unknown');
      });
    } catch (error) {
      report(projection, (h) => h.failed?.(projection, error));
      return;
    } finally {
      await admin.disconnect().catch(() => undefined);
    }
    const refused: string[] = [];
    for (const g of left) {
      const why = kept.get(groupIdOf(g.instance));
      if (why === undefined || why === 'GROUP_ID_NOT_FOUND') groupsGone.add(g.instance);
      if (why === undefined)
        report(projection, (h) => h.generation?.(projection, g.generation, 'group_deleted'));
      else if (why !== 'GROUP_ID_NOT_FOUND' && why !== 'NON_EMPTY_GROUP')
        refused.push(`${groupIdOf(g.instance)} (${why})`);
    }
    if (refused.length > 0) {
      const message = `Kafka did not delete retired consumer groups: ${refused.join(', ')}`;
      report(projection, (h) =>
        h.failed?.(
          projection,
          new SluiceError('consumer_group_delete_failed', message, { retriable: true }),
        ),
      );
    }
  }

  /**
   * Brings this process in line with the generations table: consumes the active and building
   * generations of its projections, stops the others, and swaps a rebuild that caught up.
   */
  async function syncProjection(projection: Projection<DB>): Promise<void> {
    let generations = await listGenerations(options.db, projection.name);
    const rebuild = generations.find((g) => g.state === 'building');
    if (rebuild !== undefined && consumers.has(rebuild.instance)) {
      const progress = await rebuildProgress(options.db, generations);
      if (
        progress !== undefined &&
        progress.behind <= SWAP_WITHIN_RECORDS &&
        progress.unacceptedOffsetGaps === 0 &&
        (await swapHoldingBack(projection))
      ) {
        report(projection.name, (h) =>
          h.generation?.(projection.name, rebuild.generation, 'activated'),
        );
        generations = await listGenerations(options.db, projection.name);
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
      return await swapIfCaughtUp(options.db, projection, SWAP_WAIT_MS);
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
          report(projection.name, (h) => h.failed?.(projection.name, error)),
        );
      }
    });
    return syncing;
  }

  function schedule(): void {
    if (stopped) return;
    poll = setTimeout(() => {
      void sync().then(schedule);
    }, options.generationPollMs ?? 1000);
  }

  const projectionNamed = (name: string): Projection<DB> => {
    const projection = options.projections.find((p) => p.name === name);
    if (projection === undefined)
      throw new SluiceError('projection_unknown', `No projection named ${JSON.stringify(name)}`);
    return projection;
  };

  /** Consumer trouble: stopped for good, or failing without a success for too long. */
  function consumerProblems(): HealthProblem[] {
    const problems: HealthProblem[] = [];
    const now = Date.now();
    for (const running of consumers.values()) {
      const name = `${running.projection} generation ${running.generation}`;
      if (running.crashed !== undefined) {
        problems.push({
          code: 'consumer_stopped',
          projection: running.projection,
          detail: `The consumer of ${name} stopped: ${errorMessage(running.crashed)}`,
        });
      } else if (
        running.failingSince !== undefined &&
        now - running.failingSince >= stalledAfterMs
      ) {
        problems.push({
          code: 'stalled',
          projection: running.projection,
          detail: `Batches of ${name} have failed for ${Math.round((now - running.failingSince) / 1000)} s: ${errorMessage(running.lastError)}`,
        });
      }
    }
    return problems;
  }

  async function gapProblems(): Promise<HealthProblem[]> {
    const names = options.projections.map((p) => p.name);
    const { rows } = await sql<{ projection: string; n: string }>`
      SELECT g.projection, count(*)::text AS n FROM sluice.projection_offset_gaps o
        JOIN sluice.projection_generations g ON g.instance = o.projection
       WHERE g.state = 'active' AND o.accepted_at IS NULL AND g.projection = ANY(${names}::text[])
       GROUP BY g.projection`.execute(options.db);
    return rows.map((row) => ({
      code: 'offset_gap' as const,
      projection: row.projection,
      detail: `${row.n} partition offset gap(s): Kafka no longer held records ${row.projection} had not applied; see GET /offset-gaps, then accept them or rebuild`,
    }));
  }

  return {
    async health() {
      const problems = consumerProblems();
      if (!started)
        problems.push({
          code: 'joining',
          projection: '*',
          detail: 'The consumer groups are joining',
        });
      problems.push(...(await gapProblems()));
      return { ready: problems.length === 0, problems };
    },
    parked: (name) => listParked(options.db, name),
    redrive: (name, aggregate, request) =>
      redriveParked(
        options.db,
        projectionNamed(name),
        aggregate,
        deadLetters,
        applyOptions,
        request,
      ),
    skip: (name, record, request) =>
      skipParked(options.db, projectionNamed(name), record, deadLetters, applyOptions, request),
    acceptVersionGap: (name, aggregate, request) =>
      acceptVersionGap(
        options.db,
        projectionNamed(name),
        aggregate,
        deadLetters,
        applyOptions,
        request,
      ),
    offsetGaps: (name) => listOffsetGaps(options.db, name),
    acceptOffsetGaps: (name, request = { actor: 'system' }) =>
      acceptOffsetGaps(options.db, projectionNamed(name).name, request),
    async rebuild(name, request = { actor: 'system' }) {
      const projection = projectionNamed(name);
      const generation = await startRebuild(options.db, projection, request);
      // Other processes hosting it start consuming at their next check.
      building.add(generation.instance);
      const starting = syncing.then(() => startConsumer(projection, generation.generation));
      syncing = starting.catch(() => undefined);
      await starting;
      return generation;
    },
    async cancelRebuild(name, request = { actor: 'system' }) {
      const generation = await cancelRebuild(options.db, projectionNamed(name).name, request);
      await sync();
      return generation;
    },
    async generations(name) {
      projectionNamed(name);
      const generations = await listGenerations(options.db, name);
      return { generations, rebuild: await rebuildProgress(options.db, generations) };
    },
    async start() {
      for (const projection of options.projections)
        await ensureFirstGeneration(options.db, projection);
      // Joins every group at once; a failure here is the caller's (unlike in the poll).
      await Promise.all(
        options.projections.map(async (projection) =>
          follow(projection, await listGenerations(options.db, projection.name)),
        ),
      );
      started = true;
      schedule();
    },
    async stop() {
      stopped = true;
      clearTimeout(poll);
      await syncing;
      await Promise.all([...consumers.values()].map(finish));
      consumers.clear();
      await deadLetters.close();
    },
  };
}

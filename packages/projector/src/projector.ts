import { topicFor, type DomainEvent } from '@sluice/contracts';
import { SluiceError } from '@sluice/errors';
import { createTopicEnsurer } from '@sluice/preflight';
import {
  ensureFirstGeneration,
  instanceOf,
  listGenerations,
  rebuildProgress,
  startRebuild,
  swapIfCaughtUp,
  type Generation,
  type RebuildProgress,
} from './generations.js';
import { redriveParked, skipParked } from './parked.js';
import { createApplyQueue, type ApplyQueue } from './apply-queue.js';
import type { Consumer, IHeaders, Kafka, KafkaMessage, Producer } from 'kafkajs';
import type { Kysely } from 'kysely';
import {
  applyBatch,
  isConflict,
  partitionKey,
  readCheckpoints,
  type BatchResult,
  type DeadLetter,
  type DeadLetterSink,
  type IncomingRecord,
  type Rewind,
} from './batch.js';
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

/** What the projector reports as it works. */
export interface ProjectorHooks {
  batch?(report: BatchReport): void;
  failed?(projection: string, error: unknown): void;
  /**
   * A generation started or stopped consuming here, became active, or (retired) had its consumer
   * group deleted from Kafka.
   */
  generation?(
    projection: string,
    generation: number,
    change: 'consuming' | 'stopped' | 'activated' | 'group_deleted',
  ): void;
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
  hooks?: ProjectorHooks;
}

/** Running projections. */
export interface Projector {
  start(): Promise<void>;
  /** Finishes the batches in hand, then leaves the consumer groups. */
  stop(): Promise<void>;
  /** Applies an aggregate's parked events again, in order (after the cause was fixed). */
  redrive(projection: string, aggregate: { type: string; id: string }): Promise<BatchResult>;
  /** Gives up on one parked record and redrives what was parked behind it; undefined if absent. */
  skip(
    projection: string,
    record: { topic: string; partition: number; offset: string },
  ): Promise<BatchResult | undefined>;
  /**
   * Rebuilds a projection blue/green: a new generation replays every event from the earliest
   * offset into new tables under its own consumer group, while the active one keeps serving
   * reads; once it has caught up, readers are switched to it in one transaction.
   *
   * @throws SluiceError `rebuild_in_progress`, `projection_unknown`
   */
  rebuild(projection: string): Promise<Generation>;
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

function toHeaders(headers: IHeaders | undefined): Record<string, string | undefined> {
  const result: Record<string, string | undefined> = {};
  if (headers === undefined) return result;
  // A plain loop: this runs for every header of every record.
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined) continue;
    result[name] = Array.isArray(value) ? value.map(String).join(',') : value.toString();
  }
  return result;
}

function toRecord(topic: string, partition: number, message: KafkaMessage): IncomingRecord {
  return {
    topic,
    partition,
    offset: BigInt(message.offset),
    key: message.key?.toString() ?? null,
    value: message.value?.toString() ?? null,
    headers: toHeaders(message.headers),
  };
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

/** The dead-letter record: the original key, value and headers plus `sluice_error_*` headers. */
function deadLetterMessage(projection: string, letter: DeadLetter) {
  const { record } = letter;
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(record.headers))
    if (value !== undefined) headers[name] = value;
  Object.assign(headers, {
    sluice_error_projection: projection,
    sluice_error_topic: record.topic,
    sluice_error_partition: String(record.partition),
    sluice_error_offset: record.offset.toString(),
    sluice_error_class: letter.errorClass,
    sluice_error_message: letter.message.slice(0, 2000),
    sluice_error_attempts: String(letter.attempts),
    sluice_error_first_failure: letter.firstFailure.toISOString(),
    sluice_error_last_failure: letter.lastFailure.toISOString(),
  });
  return { key: record.key, value: record.value, headers };
}

/**
 * Runs projections as Kafka consumer groups, one per generation. Each partition batch is
 * applied in one PostgreSQL transaction with its checkpoint; Kafka's committed offsets follow
 * afterwards (for lag tools only). A batch that starts past the stored checkpoint makes the
 * consumer seek back to it.
 */
export function createProjector<DB>(options: ProjectorOptions<DB>): Projector {
  const prefix = options.topicPrefix ?? '';
  const groupPrefix = options.groupPrefix ?? 'sluice.projection.';
  const groupIdOf = (instance: string) => `${groupPrefix}${instance}`;
  /** Consumers, and the queues of batches they fetched, by generation instance. */
  const consumers = new Map<string, { consumer: Consumer; queue: ApplyQueue }>();
  /** Instances of generations being built, as of the last check. */
  const building = new Set<string>();
  /** Projections being swapped here: their active generation's batches wait for this. */
  const heldBack = new Map<string, Promise<void>>();
  /** Retired generations whose consumer group is gone from Kafka, as this process saw. */
  const groupsGone = new Set<string>();
  /** When each projection's retired groups were last tried. */
  const groupsTriedAt = new Map<string, number>();
  let producer: Producer | undefined;
  let stopped = false;
  let poll: NodeJS.Timeout | undefined;
  /** The generation check in progress: one at a time, and stop() waits for it. */
  let syncing: Promise<void> = Promise.resolve();

  const deadLetterTopic = (projection: string) => `${prefix}sluice.dlq.${projection}`;
  const ensureTopics = createTopicEnsurer(options.kafka, { partitions: options.partitions ?? 6 });

  const deadLetters: DeadLetterSink = {
    async send(projection, letters) {
      const topic = deadLetterTopic(projection);
      await ensureTopics([topic]);
      if (producer === undefined) {
        const fresh = options.kafka.producer({
          idempotent: true,
          maxInFlightRequests: 1,
          allowAutoTopicCreation: false,
        });
        await fresh.connect();
        producer = fresh;
      }
      await producer.send({
        topic,
        acks: -1,
        messages: letters.map((letter) => deadLetterMessage(projection, letter)),
      });
    },
  };

  const applyOptions = {
    topicPrefix: prefix,
    ...(options.upcast === undefined ? {} : { upcast: options.upcast }),
    ...(options.maxAttempts === undefined ? {} : { maxAttempts: options.maxAttempts }),
    ...(options.retryDelayMs === undefined ? {} : { retryDelayMs: options.retryDelayMs }),
  };

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
    consumers.set(instance, { consumer, queue });
    /**
     * Moves the consumer to a partition's checkpoint. kafkajs refuses while it restarts a
     * crashed consumer; then the seek on joining the group, or the partition's next batch,
     * finds the checkpoint again.
     */
    const seekTo = ({ topic, partition, offset }: Rewind) => {
      try {
        consumer.seek({ topic, partition, offset: offset.toString() });
      } catch (error) {
        options.hooks?.failed?.(projection.name, error);
      }
    };
    // Each assigned partition starts at its checkpoint, not at Kafka's committed offset: that
    // may be ahead of it (batches in hand when a process died), and a partition that receives
    // nothing new would never show the gap.
    consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
      readCheckpoints(options.db, instance, payload.memberAssignment).then(
        (positions) => positions.forEach(seekTo),
        (error: unknown) => options.hooks?.failed?.(projection.name, error),
      );
    });
    const batchOptions = { ...applyOptions, generation };
    try {
      await consumer.connect();
      await consumer.subscribe({ topics, fromBeginning: true });
    } catch (error) {
      consumers.delete(instance);
      await consumer.disconnect().catch(() => undefined);
      throw error;
    }
    /** A catching-up batch that failed: the next call hands it to kafkajs, which retries. */
    let failure: Error | undefined;
    type Part = { topic: string; partition: number; lag: number; records: IncomingRecord[] };
    /** Applies some partitions' records in one transaction; returns what failed, if it did. */
    const apply = async (parts: readonly Part[]): Promise<Error | undefined> => {
      if (!building.has(instance)) await heldBack.get(projection.name);
      try {
        const records = parts.flatMap((p) => p.records);
        const { result, rewinds } = await retryingConflicts(() =>
          applyBatch(options.db, projection, records, deadLetters, batchOptions),
        );
        // Kafka's position is past the checkpoint (stored with the view): go back to it.
        for (const rewind of rewinds) seekTo(rewind);
        options.hooks?.batch?.({
          projection: projection.name,
          generation,
          building: building.has(instance),
          partitions: parts.map(({ topic, partition, lag }) => ({ topic, partition, lag })),
          result,
        });
        return undefined;
      } catch (error) {
        options.hooks?.failed?.(projection.name, error);
        return error instanceof Error ? error : new Error(String(error));
      }
    };
    /** Caught-up partitions' batches of the fetch in progress: one transaction applies them. */
    let live: { parts: Part[]; applied: Promise<Error | undefined> } | undefined;
    const applyLive = (part: Part, heartbeat: () => Promise<void>) => {
      if (live === undefined) {
        const group: { parts: Part[]; applied: Promise<Error | undefined> } = {
          parts: [],
          // kafkajs hands over a fetch's batches at once: by the next turn of the event loop
          // every caught-up partition of this fetch has joined.
          applied: new Promise((resolve) => setImmediate(resolve)).then(async () => {
            live = undefined;
            const keys = group.parts.map((p) => partitionKey(p.topic, p.partition));
            const count = group.parts.reduce((sum, p) => sum + p.records.length, 0);
            let outcome: Error | undefined;
            await queue.push(
              keys,
              count,
              async () => void (outcome = await apply(group.parts)),
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
    await consumer.run({
      autoCommit: true,
      // Kafka's offsets are for lag tools only. kafkajs commits after every batch whatever the
      // interval; the interval covers batches that filtering left empty.
      autoCommitInterval: 5000,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: PARTITIONS_AT_ONCE,
      eachBatch: async (payload) => {
        const { batch } = payload;
        const earlier = failure;
        failure = undefined;
        if (earlier !== undefined) throw earlier;
        if (!payload.isRunning() || payload.isStale() || batch.messages.length === 0) return;
        const records = batch.messages.map((message) =>
          toRecord(batch.topic, batch.partition, message),
        );
        const lag = Number(BigInt(batch.highWatermark) - (records.at(-1)?.offset ?? 0n) - 1n);
        const part = { topic: batch.topic, partition: batch.partition, lag, records };
        const heartbeat = () => payload.heartbeat();
        if (lag >= CATCHING_UP_RECORDS) {
          await queue.push(
            [partitionKey(batch.topic, batch.partition)],
            records.length,
            async () => {
              const error = await apply([part]);
              if (error !== undefined) failure ??= error;
            },
            heartbeat,
          );
        } else {
          // Caught up, the next fetch waits for this batch to commit: records that arrive
          // meanwhile make one batch, rather than a transaction and a fetch each. A failure
          // goes to kafkajs at once, from every partition of the batch.
          const failed = await applyLive(part, heartbeat);
          if (failed !== undefined) throw failed;
        }
        // Kafka's committed offsets are for lag tools only: the checkpoint in PostgreSQL is
        // what counts, and a consumer that starts past it seeks back.
        const last = batch.messages[batch.messages.length - 1];
        if (last !== undefined && !payload.isStale()) payload.resolveOffset(last.offset);
        await payload.heartbeat();
      },
    });
    options.hooks?.generation?.(projection.name, generation, 'consuming');
  }

  /** Applies the batches in hand, then leaves the group. */
  async function finish(running: { consumer: Consumer; queue: ApplyQueue }): Promise<void> {
    await running.queue.close();
    await running.consumer.disconnect();
  }

  async function stopConsumer(projection: string, generation: number): Promise<void> {
    const instance = instanceOf(projection, generation);
    const running = consumers.get(instance);
    if (running === undefined) return;
    consumers.delete(instance);
    await finish(running);
    options.hooks?.generation?.(projection, generation, 'stopped');
  }

  /** Consumes the active and building ones among a projection's `generations`, stops retired ones. */
  async function follow(
    projection: Projection<DB>,
    generations: readonly Generation[],
  ): Promise<void> {
    for (const g of generations) {
      if (g.state === 'building') building.add(g.instance);
      else building.delete(g.instance);
    }
    await Promise.all(
      generations
        .filter((g) => g.state !== 'retired' && !consumers.has(g.instance) && !stopped)
        .map((g) => startConsumer(projection, g.generation)),
    );
    const retired = generations.filter((g) => g.state === 'retired');
    await Promise.all(retired.map((g) => stopConsumer(projection.name, g.generation)));
    await deleteGroups(projection.name, retired);
  }

  /**
   * Deletes retired generations' consumer groups, which lag tools would otherwise report as
   * falling behind forever. Kafka refuses while another process is still a member (it stops
   * within a generation poll): such groups are tried again later. Failures are reported, not
   * thrown: consuming goes on regardless.
   */
  async function deleteGroups(projection: string, retired: readonly Generation[]): Promise<void> {
    const left = retired.filter((g) => !groupsGone.has(g.instance));
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
      options.hooks?.failed?.(projection, error);
      return;
    } finally {
      await admin.disconnect().catch(() => undefined);
    }
    const refused: string[] = [];
    for (const g of left) {
      const why = kept.get(groupIdOf(g.instance));
      if (why === undefined || why === 'GROUP_ID_NOT_FOUND') groupsGone.add(g.instance);
      if (why === undefined) options.hooks?.generation?.(projection, g.generation, 'group_deleted');
      else if (why !== 'GROUP_ID_NOT_FOUND' && why !== 'NON_EMPTY_GROUP')
        refused.push(`${groupIdOf(g.instance)} (${why})`);
    }
    if (refused.length > 0) {
      const message = `Kafka did not delete retired consumer groups: ${refused.join(', ')}`;
      options.hooks?.failed?.(
        projection,
        new SluiceError('consumer_group_delete_failed', message, { retriable: true }),
      );
    }
  }

  /**
   * Brings this process in line with the generations table: consumes the active and building
   * generations of its projections, stops retired ones, and swaps a rebuild that caught up.
   */
  async function syncProjection(projection: Projection<DB>): Promise<void> {
    let generations = await listGenerations(options.db, projection.name);
    const rebuild = generations.find((g) => g.state === 'building');
    if (rebuild !== undefined && consumers.has(rebuild.instance)) {
      const progress = await rebuildProgress(options.db, generations);
      if (
        progress !== undefined &&
        progress.behind <= SWAP_WITHIN_RECORDS &&
        (await swapHoldingBack(projection))
      ) {
        options.hooks?.generation?.(projection.name, rebuild.generation, 'activated');
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
          options.hooks?.failed?.(projection.name, error),
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

  return {
    redrive: (name, aggregate) =>
      redriveParked(options.db, projectionNamed(name), aggregate, deadLetters, applyOptions),
    skip: (name, record) =>
      skipParked(options.db, projectionNamed(name), record, deadLetters, applyOptions),
    async rebuild(name) {
      const projection = projectionNamed(name);
      const generation = await startRebuild(options.db, projection);
      // Other processes hosting it start consuming at their next check.
      building.add(generation.instance);
      const started = syncing.then(() => startConsumer(projection, generation.generation));
      syncing = started.catch(() => undefined);
      await started;
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
      schedule();
    },
    async stop() {
      stopped = true;
      clearTimeout(poll);
      await syncing;
      await Promise.all([...consumers.values()].map(finish));
      consumers.clear();
      await producer?.disconnect().catch(() => undefined);
      producer = undefined;
    },
  };
}

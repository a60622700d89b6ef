import { errorMessage } from '@sluice/errors';
import { registerCodecs, whenTopicsKnown } from '@sluice/kafka';
import type { Consumer, EachBatchPayload, Kafka, TopicPartitionOffset } from 'kafkajs';
import type { PartitionOffset } from './bookkeeping.js';
import { toRecord, type IncomingRecord } from './records.js';

/** A partition's records of one fetch. */
export interface SourceBatch {
  topic: string;
  partition: number;
  /** The partition's end (high watermark) when fetched. */
  end: bigint;
  records: IncomingRecord[];
  /** Keeps the group membership alive during a long wait. */
  heartbeat(): Promise<void>;
}

/** What a {@link RecordSource} tells its consumer. */
export interface RecordSourceHandlers {
  /**
   * A fetched batch. The source counts it consumed once this resolves, and delivers the
   * partition's records again from where it stands if it rejects. Batches of several partitions
   * may be in hand at once; one partition's come in order.
   */
  batch(batch: SourceBatch): Promise<void>;
  /** Partitions were assigned (again), topic → partitions: their positions are the source's. */
  assigned(assignment: Readonly<Record<string, readonly number[]>>): void;
  /** The source stopped for good and will deliver nothing more. */
  crashed(error: unknown): void;
}

/**
 * Where a projection's records come from: a Kafka consumer group, or a fake in tests. The
 * projector owns positions (its checkpoints): it seeks, and the source delivers from there.
 */
export interface RecordSource {
  /** Joins and delivers batches until `stop()`. */
  start(handlers: RecordSourceHandlers): Promise<void>;
  /**
   * Delivers a partition from `offset` on; batches fetched before are not delivered.
   *
   * @throws when the source refuses (it is restarting); the next assignment seeks again.
   */
  seek(at: PartitionOffset): void;
  /** The first offset the partition's log still holds. */
  logStart(topic: string, partition: number): Promise<bigint>;
  /**
   * When the oldest fetch Kafka has not answered became overdue (sent, plus the wait the broker
   * may hold it); undefined when none waits.
   */
  fetchOverdueSince(): number | undefined;
  stop(): Promise<void>;
}

/** Options for {@link createKafkaRecordSource}. */
export interface KafkaRecordSourceOptions {
  kafka: Kafka;
  groupId: string;
  topics: readonly string[];
  sessionTimeoutMs: number;
  /** How often consumed offsets are committed to Kafka, for lag tools. Default 5000. */
  commitIntervalMs?: number;
  /**
   * After a fetch that reached its partitions' ends, the wait before the next fetch (none while a
   * partition is behind), so that the records written meanwhile come in one fetch and apply in
   * one transaction. Default 0.
   */
  fetchLingerMs?: number;
  /**
   * How long to subscribe again while a broker does not know the topics yet (created a moment
   * ago, here or by another process), or a partition of them has no leader. Default 30000.
   */
  topicWaitMs?: number;
}

/** kafkajs hands this many partitions' batches of one fetch to `eachBatch` at once, at most. */
const PARTITIONS_AT_ONCE = 64;

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

/**
 * Whether kafkajs is joining the group. Its `disconnect()` stops a consumer only once joined: a
 * stop in the middle of a join closes the connections under it, the join crashes, and kafkajs
 * logs that as an error (and would start the consumer again). So a stop lets the join end first.
 */
function watchJoins(consumer: Consumer) {
  let settle: () => void = () => undefined;
  let joining = Promise.resolve();
  const expect = () => {
    settle();
    joining = new Promise((done) => {
      settle = done;
    });
  };
  consumer.on(consumer.events.GROUP_JOIN, () => settle());
  // A crash kafkajs restarts from joins again after a pause.
  consumer.on(consumer.events.CRASH, ({ payload }) => (payload.restart ? expect() : settle()));
  return {
    expect,
    /** Resolves once no join is in progress, or after `limitMs` (the stop goes ahead then). */
    async ended(limitMs: number): Promise<void> {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([joining, new Promise((done) => (timer = setTimeout(done, limitMs)))]);
      clearTimeout(timer);
      // kafkajs marks its consumer running just after the join's event.
      await new Promise((done) => setImmediate(done));
    },
  };
}

/**
 * The wait after a fetch that reached its partitions' ends. kafkajs fetches again only once
 * every batch of a fetch is handled, so while any partition's latest batch was behind its end
 * (in this fetch, or another broker's) there is no wait, a batch behind cuts waits short, and
 * so does a stop.
 */
function lingering(ms: number) {
  /** Partitions whose latest batch did not reach their end. */
  const behindNow = new Set<string>();
  const waiting = new Set<() => void>();
  const wake = () => {
    for (const done of waiting) done();
  };
  return {
    wake,
    /** A new assignment: partitions no longer held are no longer behind. */
    reset: () => behindNow.clear(),
    /** A batch of `partition` that did not reach its end. */
    behind(partition: string): void {
      if (ms === 0) return;
      behindNow.add(partition);
      wake();
    },
    /** A batch of `partition` that reached its end: resolves after the wait, if one is due. */
    async reached(partition: string): Promise<void> {
      behindNow.delete(partition);
      if (ms === 0 || behindNow.size > 0) return;
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          waiting.delete(done);
          resolve();
        };
        const timer = setTimeout(done, ms);
        waiting.add(done);
      });
    },
  };
}

/** How long the broker holds a fetch when nothing new has come (kafkajs' `maxWaitTimeInMs`). */
const FETCH_WAIT_MS = 1000;
/**
 * A broker's fetch neither answered nor sent again for this long has no fetcher any more (kafkajs
 * drops a broker that left the metadata without a join); kafkajs sends again after a request
 * timeout (30 s) and a retry pause, so a broker that does not answer stays counted.
 */
const FETCHER_GONE_MS = 5 * 60_000;

/**
 * When the oldest fetch Kafka has not answered became overdue (sent, plus the broker's wait), by
 * broker: from the first fetch sent after the last answer, through kafkajs' timeouts and retries,
 * to the next answer. A join starts afresh.
 */
function watchFetches(consumer: Consumer): () => number | undefined {
  const waiting = new Map<number, { since: number; sent: number }>();
  consumer.on(consumer.events.FETCH_START, ({ payload }) => {
    const now = Date.now();
    waiting.set(payload.nodeId, { since: waiting.get(payload.nodeId)?.since ?? now, sent: now });
  });
  consumer.on(consumer.events.FETCH, ({ payload }) => waiting.delete(payload.nodeId));
  consumer.on(consumer.events.GROUP_JOIN, () => waiting.clear());
  return () => {
    const now = Date.now();
    let oldest: number | undefined;
    for (const [node, { since, sent }] of waiting) {
      if (now - sent > FETCHER_GONE_MS) waiting.delete(node);
      else oldest = Math.min(since, oldest ?? since);
    }
    return oldest === undefined ? undefined : oldest + FETCH_WAIT_MS;
  };
}

/** A {@link RecordSource} over a kafkajs consumer group. */
export function createKafkaRecordSource(options: KafkaRecordSourceOptions): RecordSource {
  const { kafka } = options;
  // Every codec, whatever the producer chose: a batch the consumer cannot decode stops it.
  registerCodecs();
  const consumer = kafka.consumer({
    groupId: options.groupId,
    allowAutoTopicCreation: false,
    maxBytesPerPartition: 4 * 1024 * 1024,
    sessionTimeout: options.sessionTimeoutMs,
    // The broker answers as soon as records exist; a short wait keeps shutdown quick.
    maxWaitTimeInMs: FETCH_WAIT_MS,
    heartbeatInterval: Math.min(3000, Math.floor(options.sessionTimeoutMs / 3)),
    // A crash after `stop()` (a request it had in flight) must not start the consumer again.
    retry: { restartOnFailure: () => Promise.resolve(!stopping) },
  });
  const joins = watchJoins(consumer);
  const fetchOverdueSince = watchFetches(consumer);
  const linger = lingering(options.fetchLingerMs ?? 0);
  let stopping = false;
  /** Offsets consumed and not yet committed, by partition. */
  const resolved = new Map<string, TopicPartitionOffset>();
  let assigned = new Set<string>();
  // Only partitions still assigned: another member's newer commit must not be overwritten. A
  // commit refused in a rebalance is dropped; the next member commits its own.
  const commit = () => {
    const mine = [...resolved].filter(([key]) => assigned.has(key)).map(([, at]) => at);
    resolved.clear();
    if (mine.length > 0) void consumer.commitOffsets(mine).catch(() => undefined);
  };
  let committing: NodeJS.Timeout | undefined;

  const eachBatch = (handlers: RecordSourceHandlers) => async (payload: EachBatchPayload) => {
    const { batch } = payload;
    if (!payload.isRunning() || payload.isStale() || batch.messages.length === 0) return;
    const partition = `${batch.topic}:${batch.partition}`;
    const caughtUp = batch.offsetLag() === '0';
    // Before the batch is handled: the other batches of this fetch must not wait for it.
    if (!caughtUp) linger.behind(partition);
    try {
      await handlers.batch({
        topic: batch.topic,
        partition: batch.partition,
        end: BigInt(batch.highWatermark),
        records: batch.messages.map((message) => toRecord(batch.topic, batch.partition, message)),
        heartbeat: () => payload.heartbeat(),
      });
    } catch (error) {
      throw new BatchFailed(error);
    }
    // Kafka's committed offsets are for lag tools only: the checkpoint in PostgreSQL is what
    // counts, and a consumer that starts past it seeks back. So they are committed on a timer,
    // not after every batch.
    const last = batch.messages[batch.messages.length - 1];
    if (last !== undefined && !payload.isStale()) {
      payload.resolveOffset(last.offset);
      const offset = (BigInt(last.offset) + 1n).toString();
      resolved.set(`${batch.topic}:${batch.partition}`, {
        topic: batch.topic,
        partition: batch.partition,
        offset,
      });
    }
    await payload.heartbeat();
    if (caughtUp && payload.isRunning() && !stopping) await linger.reached(partition);
  };

  return {
    async start(handlers) {
      consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
        linger.reset();
        assigned = new Set(
          Object.entries(payload.memberAssignment).flatMap(([topic, partitions]) =>
            partitions.map((partition) => `${topic}:${partition}`),
          ),
        );
        handlers.assigned(payload.memberAssignment);
      });
      consumer.on(consumer.events.CRASH, ({ payload }) => {
        if (!payload.restart && !stopping) handlers.crashed(payload.error);
      });
      try {
        await consumer.connect();
        // Lag that the group's join meets later is a crash kafkajs restarts the consumer from.
        await whenTopicsKnown(
          options.topics,
          () => consumer.subscribe({ topics: [...options.topics], fromBeginning: true }),
          options.topicWaitMs ?? 30_000,
        );
      } catch (error) {
        await consumer.disconnect().catch(() => undefined);
        throw error;
      }
      joins.expect();
      await consumer.run({
        // With autoCommit, kafkajs commits after every batch whatever the interval: an
        // OffsetCommit request per batch. The timer below commits instead.
        autoCommit: false,
        eachBatchAutoResolve: false,
        partitionsConsumedConcurrently: PARTITIONS_AT_ONCE,
        eachBatch: eachBatch(handlers),
      });
      committing = setInterval(commit, options.commitIntervalMs ?? 5000);
    },
    seek(at) {
      consumer.seek({ topic: at.topic, partition: at.partition, offset: at.offset.toString() });
    },
    fetchOverdueSince,
    async logStart(topic, partition) {
      const admin = kafka.admin();
      await admin.connect();
      try {
        const offsets = await admin.fetchTopicOffsets(topic);
        return BigInt(offsets.find((o) => o.partition === partition)?.low ?? '0');
      } finally {
        await admin.disconnect().catch(() => undefined);
      }
    },
    async stop() {
      stopping = true;
      linger.wake();
      clearInterval(committing);
      await joins.ended(options.sessionTimeoutMs);
      await consumer.disconnect();
    },
  };
}

/**
 * Deletes consumer groups; returns why Kafka kept some, by group id (`GROUP_ID_NOT_FOUND`: it
 * was gone already; `NON_EMPTY_GROUP`: a member is still in it).
 */
export async function deleteConsumerGroups(
  kafka: Kafka,
  groupIds: readonly string[],
): Promise<Map<string, string>> {
  const kept = new Map<string, string>();
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.deleteGroups([...groupIds]).catch((error: unknown) => {
      const groups = (error as { groups?: { groupId: string; error?: { type?: string } }[] })
        .groups;
      if (groups === undefined) throw error;
      for (const { groupId, error: cause } of groups) kept.set(groupId, cause?.type ?? 'unknown');
    });
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
  return kept;
}

import { HandlerRetry } from './apply-events.js';
import { createApplyQueue, type Load } from './apply-queue.js';
import type { AppliedBatch, OffsetReset, Rewind } from './batch.js';
import { partitionKey, type PartitionOffset } from './bookkeeping.js';
import { recordBytes, type IncomingRecord } from './records.js';
import type { RecordSource, SourceBatch } from './record-source.js';

/** Records fetched but not yet applied, per consumer, at most (a batch may go past it). */
const MAX_RECORDS_IN_HAND = 20_000;
/**
 * Bytes of records (keys and values) fetched but not yet applied, per consumer, at most (a batch
 * may go past it): large records fill it long before the count does.
 */
export const MAX_BYTES_IN_HAND = 32 * 1024 * 1024;
/**
 * A partition at least this far behind its end is fetched while its batches apply, one batch
 * per partition. Nearer its end, a fetch's batches of all partitions apply in one transaction
 * and the next fetch waits for it.
 */
const CATCHING_UP_RECORDS = 1000;

/** Where a generation's records go, and its positions come from. */
export interface GenerationStore {
  /** Applies records in one transaction with their checkpoints (`ends`: partitions' ends by key). */
  apply(
    records: readonly IncomingRecord[],
    ends: ReadonlyMap<string, bigint>,
  ): Promise<AppliedBatch>;
  /** The stored checkpoints of those of `assignment`'s partitions applied before. */
  checkpoints(assignment: Readonly<Record<string, readonly number[]>>): Promise<PartitionOffset[]>;
  /** Records that offsets `from` up to `to` are gone and moves the checkpoint, if it stands at `from`. */
  recordGap(at: { topic: string; partition: number }, from: bigint, to: bigint): Promise<boolean>;
}

/** Something about a partition's offsets an operator must know (see `OffsetNotice`). */
export interface PartitionNotice {
  kind: 'gap' | 'reset' | 'rewritten';
  topic: string;
  partition: number;
  from: bigint;
  to: bigint;
}

/** A partition's records of one fetch, as applied. */
export interface Part extends SourceBatch {
  key: string;
  lag: number;
  /** The consumer's seek count for the partition when the batch was handed over. */
  seekSerial: number;
}

/** What a generation's consumer reports. */
export interface GenerationEvents {
  batch(parts: readonly Part[], applied: AppliedBatch): void;
  failed(error: unknown): void;
  notice(notice: PartitionNotice): void;
  crashed(error: unknown): void;
}

/** Options for {@link createGenerationConsumer}. */
export interface GenerationConsumerOptions {
  source: RecordSource;
  store: GenerationStore;
  events: GenerationEvents;
  /** Batches applied at once, each in its own transaction. */
  applyConcurrency: number;
  /** Resolves when this generation's batches may take a connection (a swap holds them back). */
  admitted(): Promise<void>;
}

/** A generation's consumer, and what it knows of its health. */
export interface GenerationConsumer {
  start(): Promise<void>;
  /** Applies the batches in hand, then leaves the group. */
  stop(): Promise<void>;
  /**
   * When its batches began failing without one succeeding since, and why; set once it crashed;
   * when the oldest batch still applying began (a lock, a handler or the database it waits on);
   * since when a fetch Kafka has not answered has been overdue.
   */
  health(): {
    failingSince: number | undefined;
    lastError: unknown;
    crashed: unknown;
    applyingSince: number | undefined;
    fetchOverdueSince: number | undefined;
  };
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Consumes one generation of a projection: each assigned partition from its checkpoint (one
 * record early, to see that its offsets still mean what they meant), caught-up partitions of one
 * fetch in one transaction, partitions behind their end applied behind the source's back;
 * positions past a checkpoint make it go back, or record a gap where the records are gone.
 */
export function createGenerationConsumer(options: GenerationConsumerOptions): GenerationConsumer {
  const { source, store, events } = options;
  const queue = createApplyQueue({
    limits: { records: MAX_RECORDS_IN_HAND, bytes: MAX_BYTES_IN_HAND },
    concurrency: options.applyConcurrency,
  });
  const state: Pick<
    ReturnType<GenerationConsumer['health']>,
    'failingSince' | 'lastError' | 'crashed'
  > = {
    failingSince: undefined,
    lastError: undefined,
    crashed: undefined,
  };
  /** When each batch now applying began (after its admission). */
  const applying = new Set<{ at: number }>();
  let stopped = false;
  const positions = createPositions(source, store, events, () => stopped);

  /** Applies parts in one transaction, retrying failed handlers after a pause. */
  async function applyOnce(parts: readonly Part[], heartbeat: () => Promise<void>): Promise<void> {
    const records = parts.flatMap((p) => p.records);
    const ends = new Map(parts.map((p) => [p.key, p.end]));
    for (;;) {
      try {
        const applied = await store.apply(records, ends);
        await positions.settle(parts, applied);
        events.batch(parts, applied);
        return;
      } catch (error) {
        if (!(error instanceof HandlerRetry) || stopped) throw error;
        // No transaction is open: the pause holds no lock and no connection.
        await pause(error.delayMs);
        await heartbeat().catch(() => undefined);
      }
    }
  }

  /** {@link applyParts} once admitted, counted as applying (for health) until it returns. */
  async function apply(parts: readonly Part[], heartbeat: () => Promise<void>) {
    await options.admitted();
    const started = { at: Date.now() };
    applying.add(started);
    try {
      return await applyParts(parts, heartbeat);
    } finally {
      applying.delete(started);
    }
  }

  /**
   * Applies some partitions' records in one transaction; if that fails, each partition alone,
   * so one partition's trouble does not hold back the others. Returns the failures by part.
   */
  async function applyParts(parts: readonly Part[], heartbeat: () => Promise<void>) {
    const failed = new Map<string, Error>();
    const attempt = async (some: readonly Part[]) => {
      try {
        await applyOnce(some, heartbeat);
      } catch (error) {
        events.failed(error);
        const reason = error instanceof Error ? error : new Error(String(error));
        for (const part of some) failed.set(part.key, reason);
      }
    };
    await attempt(parts);
    if (failed.size > 0 && parts.length > 1) {
      failed.clear();
      for (const part of parts) await attempt([part]);
    }
    if (failed.size === 0) state.failingSince = undefined;
    else {
      state.failingSince ??= Date.now();
      state.lastError = [...failed.values()][0];
    }
    return failed;
  }

  return {
    async start() {
      await source.start({
        batch: createBatchHandler(queue, apply, positions),
        assigned: (assignment) => positions.assigned(assignment),
        crashed(error) {
          state.crashed = error;
          events.crashed(error);
        },
      });
    },
    async stop() {
      stopped = true;
      await queue.close();
      await source.stop();
    },
    health() {
      let applyingSince: number | undefined;
      for (const { at } of applying) applyingSince = Math.min(at, applyingSince ?? at);
      return { ...state, applyingSince, fetchOverdueSince: source.fetchOverdueSince() };
    },
  };
}

/**
 * The source's batch handler: a partition behind its end is applied behind the source's back
 * (the next fetch overlaps); caught-up partitions of one fetch apply together and the next fetch
 * waits for them. A catching-up batch's failure reaches the source with the partition's next batch.
 */
function createBatchHandler(
  queue: ReturnType<typeof createApplyQueue>,
  apply: (parts: readonly Part[], heartbeat: () => Promise<void>) => Promise<Map<string, Error>>,
  positions: Positions,
) {
  const failures = new Map<string, Error>();
  let live: { parts: Part[]; applied: Promise<Map<string, Error>> } | undefined;
  const applyLive = (part: Part) => {
    if (live === undefined) {
      const group: { parts: Part[]; applied: Promise<Map<string, Error>> } = {
        parts: [],
        // A source hands over a fetch's batches at once: by the next turn of the event loop
        // every caught-up partition of this fetch has joined.
        applied: new Promise((resolve) => setImmediate(resolve)).then(async () => {
          live = undefined;
          const keys = group.parts.map((p) => p.key);
          const heartbeat = () => part.heartbeat();
          let outcome = new Map<string, Error>();
          await queue.push(
            keys,
            loadOf(group.parts),
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
  return async (batch: SourceBatch): Promise<void> => {
    const key = partitionKey(batch.topic, batch.partition);
    const earlier = failures.get(key);
    failures.delete(key);
    if (earlier !== undefined) throw earlier;
    const last = batch.records.at(-1)?.offset ?? 0n;
    const part: Part = {
      ...batch,
      key,
      lag: Number(batch.end - last - 1n),
      seekSerial: positions.serial(key),
    };
    if (part.lag >= CATCHING_UP_RECORDS) {
      const work = async () => {
        const failed = (await apply([part], () => batch.heartbeat())).get(key);
        if (failed === undefined) return;
        failures.set(key, failed);
        // The partition's next batches start past its checkpoint: a rewind, not an empty range.
        positions.forget(key);
      };
      await queue.push([key], loadOf([part]), work, () => batch.heartbeat());
      return;
    }
    // Caught up, the next fetch waits for this batch to commit: records that arrive meanwhile
    // make one batch, rather than a transaction and a fetch each.
    const failed = (await applyLive(part)).get(key);
    if (failed !== undefined) throw failed;
  };
}

function loadOf(parts: readonly Part[]): Load {
  const load = { records: 0, bytes: 0 };
  for (const part of parts) {
    load.records += part.records.length;
    for (const record of part.records) load.bytes += recordBytes(record);
  }
  return load;
}

type Assignment = Readonly<Record<string, readonly number[]>>;

/** Where a generation's partitions are read from, and what moves them. */
interface Positions {
  assigned(assignment: Assignment): void;
  /** How often the partition was sought since the last assignment began. */
  serial(key: string): number;
  /** A batch of the partition failed: what comes next proves nothing about the last seek. */
  forget(key: string): void;
  /** Follows up a batch: rewinds, reused offsets, offsets gone back. */
  settle(parts: readonly Part[], applied: AppliedBatch): Promise<void>;
}

function createPositions(
  source: RecordSource,
  store: GenerationStore,
  events: GenerationEvents,
  stopped: () => boolean,
): Positions {
  /** Per partition: seeks so far, and the offset of the last one since the partition was assigned. */
  const seeks = new Map<string, { serial: number; offset?: bigint }>();
  const seek = (at: PartitionOffset) => {
    const key = partitionKey(at.topic, at.partition);
    seeks.set(key, { serial: (seeks.get(key)?.serial ?? 0) + 1, offset: at.offset });
    try {
      source.seek({ topic: at.topic, partition: at.partition, offset: at.offset });
    } catch (error) {
      // Refused while the source restarts: the seek on the next assignment, or the
      // partition's next batch, finds the checkpoint again.
      events.failed(error);
    }
  };
  const notice = (kind: PartitionNotice['kind'], at: PartitionOffset, from: bigint, to: bigint) =>
    events.notice({ kind, topic: at.topic, partition: at.partition, from, to });

  /**
   * A batch began past the checkpoint: go back to it. Where the log no longer holds the
   * checkpoint's offset (retention, deleted records), or where this consumer already went back
   * there and the source again began later (nothing stored in between: compaction, transaction
   * markers), the gap is recorded (loudly, until an operator accepts it) and the partition goes
   * on where the records begin.
   */
  async function rewind(rewound: Rewind, part: Part): Promise<void> {
    const start = await source.logStart(rewound.topic, rewound.partition);
    const last = seeks.get(part.key);
    const empty = last?.offset === rewound.offset && last.serial === part.seekSerial;
    if (start <= rewound.offset && !empty) {
      seek(rewound);
      return;
    }
    const to = start > rewound.offset ? start : rewound.first;
    if (await store.recordGap(rewound, rewound.offset, to))
      notice('gap', rewound, rewound.offset, to);
    seek({ ...rewound, offset: to });
  }

  let assignments = 0;
  /**
   * Each partition starts at its checkpoint, not at the source's own position (which may be ahead
   * of it after a crash or a reset): one record early, to see that the record there is still the
   * one applied there. A partition without one starts at the beginning. Until the checkpoints
   * are read (the database may be away), they are read again, unless the partitions were
   * assigned anew: a partition that receives nothing new would never show the difference.
   */
  async function seekCheckpoints(assignment: Assignment, round: number): Promise<void> {
    for (
      let delayMs = 100;
      round === assignments && !stopped();
      delayMs = Math.min(delayMs * 2, 5000)
    ) {
      try {
        const next = new Map(
          (await store.checkpoints(assignment)).map((at) => [
            partitionKey(at.topic, at.partition),
            at,
          ]),
        );
        if (round !== assignments || stopped()) return;
        for (const [topic, partitions] of Object.entries(assignment))
          for (const partition of partitions) {
            const offset = next.get(partitionKey(topic, partition))?.offset ?? 0n;
            seek({ topic, partition, offset: offset > 0n ? offset - 1n : 0n });
          }
        return;
      } catch (error) {
        // A read the stop cut short is no failure.
        if (stopped()) return;
        events.failed(error);
      }
      // The pause does not hold up the process's exit.
      await new Promise((resolve) => setTimeout(resolve, delayMs).unref());
    }
  }

  return {
    assigned(assignment) {
      // Batches handed over before this assignment prove nothing about a seek.
      for (const [key, last] of seeks) seeks.set(key, { serial: last.serial + 1 });
      assignments += 1;
      void seekCheckpoints(assignment, assignments);
    },
    serial: (key) => seeks.get(key)?.serial ?? 0,
    forget(key) {
      seeks.set(key, { serial: (seeks.get(key)?.serial ?? 0) + 1 });
    },
    async settle(parts, applied) {
      for (const rewound of applied.rewinds) {
        const part = parts.find(
          (p) => p.topic === rewound.topic && p.partition === rewound.partition,
        );
        if (part !== undefined) await rewind(rewound, part);
      }
      for (const reused of applied.rewritten) {
        const start = await source.logStart(reused.topic, reused.partition);
        notice('rewritten', reused, reused.offset, start);
        seek({ ...reused, offset: start });
      }
      for (const reset of applied.resets as readonly OffsetReset[])
        notice('reset', { ...reset, offset: reset.to }, reset.from, reset.to);
    },
  };
}

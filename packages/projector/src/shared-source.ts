import { partitionKey } from './bookkeeping.js';
import type { RecordSource, RecordSourceHandlers, SourceBatch } from './record-source.js';

/** The pause before a view's failed batch is fetched again; it doubles up to `lastMs`. */
const RETRY = { firstMs: 300, lastMs: 10_000 };

type Assignment = Readonly<Record<string, readonly number[]>>;

/** One consumer's share of a {@link SharedRecordSource}. */
interface View {
  topics: ReadonlySet<string>;
  handlers: RecordSourceHandlers;
  /** Per partition, the offset this view reads from next; without one, whatever comes. */
  next: Map<string, bigint>;
  /** Per partition, its seeks so far: a batch handed over before a seek does not move `next`. */
  seeks: Map<string, number>;
  /** Per partition, the pause before its failed batch is fetched again, and the timer. */
  retries: Map<string, { delayMs: number; timer?: NodeJS.Timeout | undefined }>;
}

/**
 * Several consumers' records from one source (one consumer group): each record is fetched and
 * decoded once, and each consumer reads from its own position. The source reads a partition from
 * the earliest position of those reading it, and each consumer gets the records from its own on.
 * A batch a consumer rejects is fetched again for it after a pause (others pass over records
 * they have), so one consumer's failures do not hold back the others. A slow one holds back the
 * next fetch until its batch is taken, and one far behind the others makes them wait while the
 * source reads up to their positions again.
 */
export interface SharedRecordSource {
  /** A source of some of the shared topics' records. Stopping the last view stops the source. */
  view(topics: readonly string[]): RecordSource;
  /** Whether views may still start: false once every view stopped. */
  open(): boolean;
}

/** Shares `source` between views (see {@link SharedRecordSource}). */
export function createSharedRecordSource(source: RecordSource): SharedRecordSource {
  const views = new Set<View>();
  let assignment: Assignment | undefined;
  let crash: { error: unknown } | undefined;
  let starting: Promise<void> | undefined;
  let closed = false;
  /** Per partition, where the source reads next (known once a view sought), and its seeks. */
  const reads = new Map<string, { at?: bigint; seeks: number }>();

  /** Whether `view` waits to fetch a failed batch of partition `key` again. */
  const waiting = (view: View, key: string) => view.retries.get(key)?.timer !== undefined;

  const assign = (view: View, all: Assignment) => {
    clearRetries(view);
    view.next.clear();
    view.handlers.assigned(
      Object.fromEntries(Object.entries(all).filter(([topic]) => view.topics.has(topic))),
    );
  };

  /** Reads a partition from the earliest position a view has there. */
  const seekEarliest = (topic: string, partition: number) => {
    const key = partitionKey(topic, partition);
    let earliest: bigint | undefined;
    for (const view of views) {
      const next = view.next.get(key);
      if (next !== undefined && (earliest === undefined || next < earliest)) earliest = next;
    }
    if (earliest === undefined) return;
    source.seek({ topic, partition, offset: earliest });
    reads.set(key, { at: earliest, seeks: (reads.get(key)?.seeks ?? 0) + 1 });
  };

  const seekEarliestSafely = (topic: string, partition: number) => {
    try {
      seekEarliest(topic, partition);
    } catch {
      // Refused while the source restarts: the next assignment seeks every view again.
    }
  };

  /** The earliest position of the views of `topic` not waiting to fetch a failed batch again. */
  const positionOfOthers = (topic: string, key: string): bigint | undefined => {
    let earliest: bigint | undefined;
    for (const view of views) {
      if (!view.topics.has(topic) || waiting(view, key)) continue;
      const next = view.next.get(key);
      if (next === undefined) return undefined;
      if (earliest === undefined || next < earliest) earliest = next;
    }
    return earliest;
  };

  const retryLater = (view: View, topic: string, partition: number) => {
    const key = partitionKey(topic, partition);
    const retry = view.retries.get(key) ?? { delayMs: RETRY.firstMs };
    clearTimeout(retry.timer);
    retry.timer = setTimeout(() => {
      retry.timer = undefined;
      if (views.has(view)) seekEarliestSafely(topic, partition);
    }, retry.delayMs);
    retry.delayMs = Math.min(retry.delayMs * 2, RETRY.lastMs);
    view.retries.set(key, retry);
  };

  async function deliver(
    view: View,
    key: string,
    batch: SourceBatch,
    at: bigint | undefined,
  ): Promise<void> {
    if (!view.topics.has(batch.topic)) return;
    const from = view.next.get(key);
    const first = batch.records[0];
    if (first === undefined) return;
    if (from !== undefined && batch.end < from && at !== undefined && first.offset >= at) {
      // The partition ends below this view's position (a recreated topic), but the source reads
      // where another view stands, not where Kafka went back to by itself: alone, this view would
      // have read the new log from its start.
      view.next.set(key, 0n);
      seekEarliestSafely(batch.topic, batch.partition);
      return;
    }
    if (from !== undefined && at !== undefined && from < at) {
      // The source read past this view's position while its batch failed: it gets nothing until
      // the source goes back for it (a batch starting past its position would look like a gap).
      if (!waiting(view, key)) retryLater(view, batch.topic, batch.partition);
      return;
    }
    // A partition that ends below the view's position went back (a recreated topic), and Kafka
    // read it from its start: the view has to see what it holds now.
    const records =
      from === undefined || first.offset >= from || batch.end < from
        ? batch.records
        : batch.records.filter((record) => record.offset >= from);
    const last = records.at(-1);
    if (last === undefined) return;
    const seeks = view.seeks.get(key) ?? 0;
    const sought = () => !views.has(view) || (view.seeks.get(key) ?? 0) !== seeks;
    try {
      await view.handlers.batch({ ...batch, records });
      if (sought()) return;
      view.next.set(key, last.offset + 1n);
      clearTimeout(view.retries.get(key)?.timer);
      view.retries.delete(key);
    } catch {
      if (sought()) return;
      view.next.set(key, from ?? records[0]?.offset ?? 0n);
      retryLater(view, batch.topic, batch.partition);
    }
  }

  const handlers: RecordSourceHandlers = {
    async batch(batch) {
      const { topic, partition } = batch;
      const key = partitionKey(topic, partition);
      const read = reads.get(key);
      await Promise.all([...views].map((view) => deliver(view, key, batch, read?.at)));
      const last = batch.records.at(-1);
      if (last === undefined || reads.get(key)?.seeks !== read?.seeks) return;
      const at = last.offset + 1n;
      reads.set(key, { at, seeks: read?.seeks ?? 0 });
      // Fetched again for a view that failed again: on to where the others are, rather than
      // reading everything in between for nobody.
      const others = positionOfOthers(topic, key);
      if (others === undefined || others <= at) return;
      try {
        source.seek({ topic, partition, offset: others });
        reads.set(key, { at: others, seeks: (read?.seeks ?? 0) + 1 });
      } catch {
        // Refused while the source restarts: it reads on from where it stands.
      }
    },
    assigned(all) {
      assignment = all;
      reads.clear();
      for (const view of views) assign(view, all);
    },
    crashed(error) {
      crash = { error };
      for (const view of views) view.handlers.crashed(error);
    },
  };

  return {
    open: () => !closed,
    view(topics) {
      let view: View | undefined;
      return {
        async start(viewHandlers) {
          if (closed) throw new Error('The shared record source was stopped');
          const joined: View = {
            topics: new Set(topics),
            handlers: viewHandlers,
            next: new Map(),
            seeks: new Map(),
            retries: new Map(),
          };
          view = joined;
          views.add(joined);
          if (crash !== undefined) viewHandlers.crashed(crash.error);
          else if (assignment !== undefined) assign(joined, assignment);
          starting ??= source.start(handlers).catch((error: unknown) => {
            starting = undefined;
            throw error;
          });
          try {
            await starting;
          } catch (error) {
            views.delete(joined);
            throw error;
          }
        },
        seek(at) {
          if (view === undefined) return;
          const key = partitionKey(at.topic, at.partition);
          view.seeks.set(key, (view.seeks.get(key) ?? 0) + 1);
          view.next.set(key, at.offset);
          seekEarliest(at.topic, at.partition);
        },
        logStart: (topic, partition) => source.logStart(topic, partition),
        fetchOverdueSince: () => source.fetchOverdueSince(),
        async stop() {
          if (view === undefined || !views.delete(view)) return;
          clearRetries(view);
          if (views.size > 0) return;
          closed = true;
          if (starting !== undefined) await source.stop();
        },
      };
    },
  };
}

function clearRetries(view: View): void {
  for (const retry of view.retries.values()) clearTimeout(retry.timer);
  view.retries.clear();
}

import type { DomainEvent, EventMetadata } from '@sluice/contracts';
import { SluiceError } from '@sluice/errors';
import type { EventSink, OutgoingEvent } from './event-sink.js';
import { Lsn } from './lsn.js';
import type { ReplicationEvent, ReplicationSource } from './replication-source.js';

/** Options for {@link createRelay}. */
export interface RelayOptions {
  /** Makes a fresh replication source; called again after every stream failure. */
  source: () => ReplicationSource;
  sink: EventSink;
  /** The outbox table, e.g. `{ schema: 'shop', table: 'outbox' }`. */
  outbox: { schema: string; table: string };
  /** Events per Kafka send. Default 2000. */
  maxBatchEvents?: number;
  /** Stop reading WAL while this many decoded events wait for Kafka. Default 10000. */
  maxBufferedEvents?: number;
  /** Standby status updates at least this often, even while paused. Default 5000. */
  statusIntervalMs?: number;
  /** Pause before reconnecting after a stream failure (doubles up to 30 s). Default 500. */
  reconnectDelayMs?: number;
  /** Observations for logs and metrics. */
  hooks?: RelayHooks;
}

/** What the relay reports as it works. */
export interface RelayHooks {
  published?(events: readonly OutgoingEvent[], oldestCommitTime: Date): void;
  acknowledged?(lsn: Lsn): void;
  streamFailed?(error: unknown, retryInMs: number): void;
  paused?(bufferedEvents: number): void;
  resumed?(): void;
}

/** A running relay. */
export interface Relay {
  /** Runs until `stop()`; restarts the stream after failures. */
  run(): Promise<void>;
  /** Stops reading, publishes what was read, acknowledges it, and ends `run()`. */
  stop(): Promise<void>;
  /** The position PostgreSQL was last told is durable. */
  acknowledged(): Lsn;
  /** Commit time of the oldest transaction read but not yet acknowledged. */
  oldestUnpublished(): Date | undefined;
}

interface Transaction {
  commitTime: Date;
  endLsn: Lsn;
  events: OutgoingEvent[];
}

/** An outbox row (as decoded from the WAL or read by SQL) as a domain event. */
export function outboxRowToEvent(row: Record<string, unknown>): DomainEvent {
  const occurredAt = row.occurred_at;
  return {
    id: String(row.id),
    type: String(row.type),
    aggregateType: String(row.aggregate_type),
    aggregateId: String(row.aggregate_id),
    aggregateVersion: Number(row.aggregate_version),
    occurredAt: occurredAt instanceof Date ? occurredAt.toISOString() : String(occurredAt),
    payload: row.payload,
    metadata: (row.metadata ?? {}) satisfies EventMetadata,
  };
}

/**
 * WAL → Kafka. Reads committed outbox inserts in commit order, publishes them in batches
 * (decoding continues while a batch is in flight), and acknowledges to PostgreSQL the end of
 * the last transaction whose every event Kafka acknowledged — never further. While nothing is
 * in flight, keepalive positions are acknowledged, so a filtered or idle database does not make
 * the slot retain WAL.
 */
export function createRelay(options: RelayOptions): Relay {
  const maxBatch = options.maxBatchEvents ?? 2000;
  const maxBuffered = options.maxBufferedEvents ?? 10_000;
  const statusIntervalMs = options.statusIntervalMs ?? 5000;
  const hooks = options.hooks ?? {};

  let acked = Lsn.zero;
  let queue: Transaction[] = [];
  let bufferedEvents = 0;
  let open: Transaction | undefined;
  let publishing = false;
  let stopping = false;
  let source: ReplicationSource | undefined;
  let paused = false;
  let wake: (() => void) | undefined;
  let streamError: Error | undefined;
  // Read through functions: these change while awaiting, which narrowing cannot see.
  const isStopping = () => stopping;
  const failure = () => streamError;

  const signal = () => {
    wake?.();
    wake = undefined;
  };

  function acknowledge(lsn: Lsn): void {
    if (lsn > acked) acked = lsn;
    source?.acknowledge(acked);
    hooks.acknowledged?.(acked);
  }

  function onEvent(event: ReplicationEvent): void {
    // Once stopping, nothing more is queued: a transaction cut short here must not be followed
    // by a later one whose acknowledgement would skip it.
    if (stopping) return;
    switch (event.kind) {
      case 'begin':
        open = { commitTime: event.commitTime, endLsn: Lsn.zero, events: [] };
        return;
      case 'insert':
        if (
          open !== undefined &&
          event.schema === options.outbox.schema &&
          event.table === options.outbox.table
        ) {
          open.events.push({ event: outboxRowToEvent(event.row), commitLsn: Lsn.zero });
        }
        return;
      case 'message':
        return;
      case 'commit': {
        if (open === undefined) return;
        const done = open;
        open = undefined;
        done.endLsn = event.endLsn;
        for (const outgoing of done.events) outgoing.commitLsn = event.commitLsn;
        queue.push(done);
        bufferedEvents += done.events.length;
        if (bufferedEvents >= maxBuffered && !paused) {
          paused = true;
          source?.pause();
          hooks.paused?.(bufferedEvents);
        }
        signal();
        return;
      }
      case 'keepalive':
        // Everything before walEnd was sent; if all of it is published, it is all durable.
        if (open === undefined && queue.length === 0 && !publishing && event.walEnd > acked) {
          acknowledge(event.walEnd);
        } else if (event.replyRequested) {
          acknowledge(acked);
        }
        return;
    }
  }

  /**
   * Publishes queued transactions in order, one batch at a time, acknowledging as it goes.
   * Returns once stopping with nothing left to publish, or as soon as the stream failed.
   */
  async function publishLoop(): Promise<void> {
    for (;;) {
      if (streamError !== undefined) return;
      if (queue.length === 0) {
        if (stopping) return;
        await new Promise<void>((resolve) => (wake = resolve));
        continue;
      }
      publishing = true;
      try {
        // Whole transactions up to the batch size; a transaction larger than a batch goes in
        // several sends and is acknowledged after the last.
        let taken = 0;
        const events: OutgoingEvent[] = [];
        while (taken < queue.length) {
          const next = queue[taken];
          if (
            next === undefined ||
            (events.length > 0 && events.length + next.events.length > maxBatch)
          )
            break;
          // push, not concat: many small transactions would copy the batch over and over.
          for (const outgoing of next.events) events.push(outgoing);
          taken += 1;
        }
        const oldest = queue[0]?.commitTime ?? new Date();
        for (let start = 0; start < events.length; start += maxBatch) {
          const chunk = events.slice(start, start + maxBatch);
          await options.sink.publish(chunk);
          hooks.published?.(chunk, oldest);
        }
        const last = queue[taken - 1];
        queue = queue.slice(taken);
        bufferedEvents -= events.length;
        if (last !== undefined) acknowledge(last.endLsn);
        if (paused && !stopping && bufferedEvents <= maxBuffered / 2) {
          paused = false;
          source?.resume();
          hooks.resumed?.();
        }
      } finally {
        publishing = false;
      }
    }
  }

  let running: Promise<void> | undefined;
  let wakeSleep: (() => void) | undefined;

  async function runOnce(): Promise<void> {
    streamError = undefined;
    queue = [];
    bufferedEvents = 0;
    open = undefined;
    paused = false;
    const current = options.source();
    source = current;
    const status = setInterval(() => current.acknowledge(acked), statusIntervalMs);
    const streaming = current.start(onEvent).then(
      () => {
        streamError ??= new SluiceError(
          'replication_stream_ended',
          'The replication stream ended',
          { retriable: true },
        );
        signal();
      },
      (error: unknown) => {
        streamError = error instanceof Error ? error : new Error(String(error));
        signal();
      },
    );
    try {
      // On stop: what was read is published and acknowledged before the stream closes. On
      // failure: what was not published is dropped; the slot resends it from the last
      // acknowledged position.
      await publishLoop();
    } finally {
      clearInterval(status);
      if (isStopping() && failure() === undefined) current.acknowledge(acked);
      await current.stop();
      await streaming;
    }
    const error = failure();
    if (!isStopping() && error !== undefined) throw error;
  }

  return {
    run() {
      running ??= (async () => {
        let delay = options.reconnectDelayMs ?? 500;
        while (!stopping) {
          try {
            await runOnce();
            delay = options.reconnectDelayMs ?? 500;
          } catch (error) {
            if (isStopping()) break;
            hooks.streamFailed?.(error, delay);
            await new Promise<void>((resolve) => {
              const timer = setTimeout(resolve, delay);
              // stop() cuts the pause short.
              wakeSleep = () => {
                clearTimeout(timer);
                resolve();
              };
            });
            wakeSleep = undefined;
            delay = Math.min(delay * 2, 30_000);
          }
        }
      })();
      return running;
    },

    async stop() {
      stopping = true;
      source?.pause();
      signal();
      wakeSleep?.();
      await running;
    },

    acknowledged: () => acked,
    oldestUnpublished: () => queue[0]?.commitTime,
  };
}

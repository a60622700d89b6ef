import { outboxRowToEvent } from '@sluice/outbox/rows';
import { SluiceError } from '@sluice/errors';
import type { EventSink, OutgoingEvent } from './event-sink.js';
import { Lsn } from './lsn.js';
import type { ReplicationEvent, ReplicationSource } from './replication-source.js';
import type { RelayErrorCode } from './errors.js';

/** Options for {@link createRelay}. */
export interface RelayOptions {
  /** Makes a fresh replication source; called again after every stream failure. */
  source: () => ReplicationSource;
  sink: EventSink;
  /** The outbox table, e.g. `{ schema: 'shop', table: 'outbox' }`. */
  outbox: { schema: string; table: string };
  /** Events per Kafka send. Default 700. */
  maxBatchEvents?: number;
  /** Stop reading WAL while this many decoded events wait for Kafka. Default 2000. */
  maxBufferedEvents?: number;
  /** Standby status updates at least this often, even while paused. Default 5000. */
  statusIntervalMs?: number;
  /** Pause before reconnecting after a stream failure (doubles up to 30 s). Default 500. */
  reconnectDelayMs?: number;
  /**
   * How long `stop()` waits for what was read to reach Kafka. Then the send under way is
   * abandoned and the stream closed: what was not published is not acknowledged, so the slot
   * sends it again to the next relay. Default 10000.
   */
  stopTimeoutMs?: number;
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
  /** `stop()` gave up waiting for Kafka; these events were read and not acknowledged. */
  stopTimedOut?(unpublishedEvents: number): void;
}

/** A running relay. */
export interface Relay {
  /** Runs until `stop()`; restarts the stream after failures. */
  run(): Promise<void>;
  /**
   * Stops reading, publishes what was read (for at most `stopTimeoutMs`), acknowledges what was
   * published, and ends `run()`.
   */
  stop(): Promise<void>;
  /** The position PostgreSQL was last told is durable. */
  acknowledged(): Lsn;
  /** Commit time of the oldest transaction read but not yet acknowledged. */
  oldestUnpublished(): Date | undefined;
}

/** A transaction read from the stream: its events are numbered up to `lastSeq`. */
interface Transaction {
  commitTime: Date;
  /** Set once its commit was read. */
  endLsn: Lsn | undefined;
  lastSeq: number;
}

/**
 * WAL → Kafka. Reads committed outbox inserts in commit order and publishes them in batches as
 * they arrive — within a large transaction too, since pgoutput sends only committed ones —
 * while decoding continues during each send. Acknowledges to PostgreSQL the end of the last
 * transaction whose every event Kafka acknowledged, never further. While nothing is open or in
 * flight, keepalive positions are acknowledged, so a filtered or idle database does not make
 * the slot retain WAL.
 */
export function createRelay(options: RelayOptions): Relay {
  const maxBatch = options.maxBatchEvents ?? 700;
  const maxBuffered = options.maxBufferedEvents ?? 2000;
  const statusIntervalMs = options.statusIntervalMs ?? 5000;
  const hooks = options.hooks ?? {};

  let acked = Lsn.zero;
  /** Events read and not yet published, from `head` on. */
  let pending: OutgoingEvent[] = [];
  let head = 0;
  /** Sequence numbers: events read, and events Kafka acknowledged, in this stream. */
  let received = 0;
  let published = 0;
  /** Transactions not yet acknowledged, oldest first; the last may still be open. */
  let transactions: Transaction[] = [];
  let open: Transaction | undefined;
  let openCommitLsn = Lsn.zero;
  let publishing = false;
  let stopping = false;
  let source: ReplicationSource | undefined;
  let paused = false;
  let wake: (() => void) | undefined;
  let streamError: Error | undefined;
  /** Aborted once a stop has waited `stopTimeoutMs`: the send under way is given up. */
  const giveUp = new AbortController();
  // Read through functions: these change while awaiting, which narrowing cannot see.
  const isStopping = () => stopping;
  const isReading = () => !stopping || open !== undefined;
  const failure = () => streamError;
  const givenUp = () => giveUp.signal.aborted;

  const signal = () => {
    wake?.();
    wake = undefined;
  };

  function acknowledge(lsn: Lsn): void {
    if (lsn > acked) acked = lsn;
    source?.acknowledge(acked);
    hooks.acknowledged?.(acked);
  }

  /** Acknowledges the last committed transaction all of whose events are published. */
  function settle(): void {
    let done = 0;
    let end: Lsn | undefined;
    for (const transaction of transactions) {
      if (transaction.endLsn === undefined || transaction.lastSeq > published) break;
      end = transaction.endLsn;
      done += 1;
    }
    if (end === undefined) return;
    transactions = transactions.slice(done);
    acknowledge(end);
  }

  function onEvent(event: ReplicationEvent): void {
    // Once stopping, the open transaction is read to its commit (its first events may be out
    // already; stopping in its middle would repeat them after a restart), then nothing more.
    if (stopping && open === undefined) return;
    switch (event.kind) {
      case 'begin':
        open = { commitTime: event.commitTime, endLsn: undefined, lastSeq: received };
        openCommitLsn = event.commitLsn;
        transactions.push(open);
        return;
      case 'insert':
        if (
          open !== undefined &&
          event.schema === options.outbox.schema &&
          event.table === options.outbox.table
        ) {
          pending.push({ event: outboxRowToEvent(event.row), commitLsn: openCommitLsn });
          received += 1;
          open.lastSeq = received;
          if (received - published >= maxBuffered && !paused) {
            paused = true;
            source?.pause();
            hooks.paused?.(received - published);
          }
          signal();
        }
        return;
      case 'message':
        return;
      case 'commit':
        if (open === undefined) return;
        open.endLsn = event.endLsn;
        open = undefined;
        if (stopping) {
          source?.pause();
          signal();
        }
        // A transaction with nothing (left) to publish is acknowledged now, unless a send is
        // in flight: the publish loop acknowledges after it.
        if (!publishing && received === published) settle();
        return;
      case 'keepalive':
        // Everything before walEnd was sent; if all of it is published, it is all durable.
        if (transactions.length === 0 && !publishing && event.walEnd > acked) {
          acknowledge(event.walEnd);
        } else if (event.replyRequested) {
          acknowledge(acked);
        }
        return;
    }
  }

  /**
   * Publishes read events in order, one batch at a time, acknowledging as it goes. Returns
   * once stopping with nothing left to publish, or as soon as the stream failed.
   */
  async function publishLoop(): Promise<void> {
    for (;;) {
      if (streamError !== undefined || givenUp()) return;
      if (received === published) {
        if (stopping && open === undefined) return;
        await new Promise<void>((resolve) => (wake = resolve));
        continue;
      }
      publishing = true;
      try {
        const end = Math.min(pending.length, head + maxBatch);
        const batch = pending.slice(head, end);
        const oldest = transactions[0]?.commitTime ?? new Date();
        try {
          await options.sink.publish(batch, giveUp.signal);
        } catch (error) {
          if (givenUp()) return;
          throw error;
        }
        hooks.published?.(batch, oldest);
        head = end;
        published += batch.length;
        if (head >= 4096 && head * 2 >= pending.length) {
          pending = pending.slice(head);
          head = 0;
        }
        settle();
        if (paused && isReading() && received - published <= maxBuffered / 2) {
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
    pending = [];
    head = 0;
    received = 0;
    published = 0;
    transactions = [];
    open = undefined;
    paused = false;
    const current = options.source();
    source = current;
    const status = setInterval(() => current.acknowledge(acked), statusIntervalMs);
    const streaming = current.start(onEvent).then(
      () => {
        streamError ??= new SluiceError<RelayErrorCode>(
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
      if (open === undefined) source?.pause();
      signal();
      wakeSleep?.();
      const timer = setTimeout(() => {
        if (givenUp()) return;
        hooks.stopTimedOut?.(received - published);
        giveUp.abort();
        // Also ends a wait for the commit of a transaction the stream no longer delivers.
        signal();
      }, options.stopTimeoutMs ?? 10_000);
      try {
        await running;
      } finally {
        clearTimeout(timer);
      }
    },

    acknowledged: () => acked,
    oldestUnpublished: () => transactions[0]?.commitTime,
  };
}

import { outboxRowToEvent } from '@sluice/outbox/rows';
import { performance } from 'node:perf_hooks';
import { SluiceError } from '@sluice/errors';
import type { EventSink, OutgoingEvent } from './event-sink.js';
import { Lsn } from './lsn.js';
import type { ReplicationEvent, ReplicationSource } from './replication-source.js';
import type { RelayErrorCode } from './errors.js';
import { ReadBuffer } from './read-buffer.js';

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
  /**
   * Stop reading WAL while the decoded events waiting for Kafka hold this many bytes of payload
   * (large payloads reach it long before the count). Default 32 MiB.
   */
  maxBufferedBytes?: number;
  /** Standby status updates at least this often, even while paused. Default 5000. */
  statusIntervalMs?: number;
  /**
   * Standby status updates at most this often while events flow: each wakes the walsender, and
   * a confirmed position a moment older costs only a few more events sent again after a crash.
   * A stop, a failed send and a keepalive asking for a reply send it at once. Default 100.
   */
  statusGapMs?: number;
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
  paused?(bufferedEvents: number, bufferedBytes: number): void;
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
  /** The position known durable in Kafka; PostgreSQL is told of it within `statusGapMs`. */
  acknowledged(): Lsn;
  /** Commit time of the oldest transaction read but not yet acknowledged. */
  oldestUnpublished(): Date | undefined;
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
  return new RelayLoop(options);
}

class RelayLoop implements Relay {
  private readonly maxBatch: number;
  private readonly maxBuffered: number;
  private readonly maxBufferedBytes: number;
  private readonly statusIntervalMs: number;
  private readonly statusGapMs: number;
  private readonly hooks: RelayHooks;
  private acked = Lsn.zero;
  /** When a status update last went out, and the one waiting for the gap to pass. */
  private statusSentAt = -Infinity;
  private statusDue: NodeJS.Timeout | undefined;
  private buffer = new ReadBuffer();
  private source: ReplicationSource | undefined;
  private publishing = false;
  private stopping = false;
  private paused = false;
  private wake: (() => void) | undefined;
  private streamError: Error | undefined;
  /** Aborted once a stop has waited `stopTimeoutMs`: the send under way is given up. */
  private readonly giveUp = new AbortController();
  private running: Promise<void> | undefined;
  private wakeSleep: (() => void) | undefined;

  constructor(private readonly options: RelayOptions) {
    this.maxBatch = options.maxBatchEvents ?? 700;
    this.maxBuffered = options.maxBufferedEvents ?? 2000;
    this.maxBufferedBytes = options.maxBufferedBytes ?? 32 * 1024 * 1024;
    this.statusIntervalMs = options.statusIntervalMs ?? 5000;
    this.statusGapMs = options.statusGapMs ?? 100;
    this.hooks = options.hooks ?? {};
  }

  run(): Promise<void> {
    this.running ??= this.relayUntilStopped();
    return this.running;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (!this.buffer.isOpen()) this.source?.pause();
    this.signal();
    this.wakeSleep?.();
    const timer = setTimeout(() => this.giveUpPublishing(), this.options.stopTimeoutMs ?? 10_000);
    try {
      await this.running;
    } finally {
      clearTimeout(timer);
    }
  }

  acknowledged(): Lsn {
    return this.acked;
  }

  oldestUnpublished(): Date | undefined {
    return this.buffer.oldestCommitTime();
  }

  // Read through methods: these change while awaiting, which narrowing cannot see.
  private isStopping(): boolean {
    return this.stopping;
  }
  private isReading(): boolean {
    return !this.stopping || this.buffer.isOpen();
  }
  private failure(): Error | undefined {
    return this.streamError;
  }
  private givenUp(): boolean {
    return this.giveUp.signal.aborted;
  }

  private signal(): void {
    this.wake?.();
    this.wake = undefined;
  }

  private async relayUntilStopped(): Promise<void> {
    let delay = this.options.reconnectDelayMs ?? 500;
    while (!this.stopping) {
      try {
        await this.runOnce();
        delay = this.options.reconnectDelayMs ?? 500;
      } catch (error) {
        if (this.isStopping()) break;
        this.hooks.streamFailed?.(error, delay);
        await this.sleep(delay);
        delay = Math.min(delay * 2, 30_000);
      }
    }
  }

  private async sleep(ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      // stop() cuts the pause short.
      this.wakeSleep = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.wakeSleep = undefined;
  }

  private giveUpPublishing(): void {
    if (this.givenUp()) return;
    this.hooks.stopTimedOut?.(this.buffer.unpublished());
    this.giveUp.abort();
    // Also ends a wait for the commit of a transaction the stream no longer delivers.
    this.signal();
  }

  private async runOnce(): Promise<void> {
    this.streamError = undefined;
    this.buffer = new ReadBuffer();
    this.paused = false;
    const current = this.options.source();
    this.source = current;
    const status = setInterval(() => this.sendStatus(), this.statusIntervalMs);
    const streaming = this.stream(current);
    try {
      // On stop: what was read is published and acknowledged before the stream closes. On
      // failure: what was not published is dropped; the slot resends it from the last
      // acknowledged position.
      await this.publishLoop();
    } finally {
      clearInterval(status);
      clearTimeout(this.statusDue);
      this.statusDue = undefined;
      // The stream still stands unless it failed: it hears the last position now.
      if (this.failure() === undefined) current.acknowledge(this.acked);
      await current.stop();
      await streaming;
    }
    const error = this.failure();
    if (!this.isStopping() && error !== undefined) throw error;
  }

  /** Streams from `current`; however the stream ends, the publish loop wakes up to it. */
  private stream(current: ReplicationSource): Promise<void> {
    return current
      .start((event) => this.onEvent(event))
      .then(
        () => {
          this.streamError ??= new SluiceError<RelayErrorCode>(
            'replication_stream_ended',
            'The replication stream ended',
            { retriable: true },
          );
          this.signal();
        },
        (error: unknown) => {
          this.streamError = error instanceof Error ? error : new Error(String(error));
          this.signal();
        },
      );
  }

  private onEvent(event: ReplicationEvent): void {
    // Once stopping, the open transaction is read to its commit (its first events may be out
    // already; stopping in its middle would repeat them after a restart), then nothing more.
    if (this.stopping && !this.buffer.isOpen()) return;
    switch (event.kind) {
      case 'begin':
        this.buffer.begin(event.commitLsn, event.commitTime);
        return;
      case 'insert':
        this.onInsert(event.schema, event.table, event.row);
        return;
      case 'message':
        return;
      case 'commit':
        this.onCommit(event.endLsn);
        return;
      case 'keepalive':
        // Everything before walEnd was sent; if all of it is published, it is all durable.
        if (!this.buffer.hasTransactions() && !this.publishing && event.walEnd > this.acked) {
          this.acknowledge(event.walEnd, event.replyRequested);
        } else if (event.replyRequested) {
          this.sendStatus();
        }
        return;
    }
  }

  private onInsert(schema: string, table: string, row: Record<string, string | null>): void {
    const { outbox } = this.options;
    if (!this.buffer.isOpen() || schema !== outbox.schema || table !== outbox.table) return;
    this.buffer.add(outboxRowToEvent(row));
    if (this.bufferFilled(1) && !this.paused) {
      this.paused = true;
      this.source?.pause();
      this.hooks.paused?.(this.buffer.unpublished(), this.buffer.unpublishedBytes());
    }
    this.signal();
  }

  private onCommit(endLsn: Lsn): void {
    if (!this.buffer.commit(endLsn)) return;
    if (this.stopping) {
      this.source?.pause();
      this.signal();
    }
    // A transaction with nothing (left) to publish is acknowledged now, unless a send is
    // in flight: the publish loop acknowledges after it.
    if (!this.publishing && this.buffer.unpublished() === 0) this.settle();
  }

  /**
   * Publishes read events in order, one batch at a time, acknowledging as it goes. Returns
   * once stopping with nothing left to publish, or as soon as the stream failed.
   */
  private async publishLoop(): Promise<void> {
    for (;;) {
      if (this.failure() !== undefined || this.givenUp()) return;
      if (this.buffer.unpublished() === 0) {
        if (this.isStopping() && !this.buffer.isOpen()) return;
        await new Promise<void>((resolve) => (this.wake = resolve));
        continue;
      }
      if (!(await this.publishNext())) return;
    }
  }

  /** Publishes the next batch; false when a stop gave up on it. */
  private async publishNext(): Promise<boolean> {
    this.publishing = true;
    try {
      const batch = this.buffer.nextBatch(this.maxBatch);
      const oldest = this.buffer.oldestCommitTime() ?? new Date();
      try {
        await this.options.sink.publish(batch, this.giveUp.signal);
      } catch (error) {
        if (this.givenUp()) return false;
        throw error;
      }
      this.hooks.published?.(batch, oldest);
      this.buffer.markPublished(batch.length);
      this.settle();
      if (this.paused && this.isReading() && !this.bufferFilled(0.5)) {
        this.paused = false;
        this.source?.resume();
        this.hooks.resumed?.();
      }
      return true;
    } finally {
      this.publishing = false;
    }
  }

  /** Whether events wait, and reach `share` of either limit. */
  private bufferFilled(share: number): boolean {
    const events = this.buffer.unpublished();
    return (
      events > 0 &&
      (events >= this.maxBuffered * share ||
        this.buffer.unpublishedBytes() >= this.maxBufferedBytes * share)
    );
  }

  /** Acknowledges the last committed transaction all of whose events are published. */
  private settle(): void {
    const end = this.buffer.settle();
    if (end !== undefined) this.acknowledge(end);
  }

  /** Moves the acknowledged position to `lsn`; PostgreSQL hears of it within `statusGapMs`. */
  private acknowledge(lsn: Lsn, now = false): void {
    if (lsn > this.acked) this.acked = lsn;
    this.hooks.acknowledged?.(this.acked);
    if (now) return this.sendStatus();
    if (this.statusDue !== undefined) return;
    const wait = this.statusSentAt + this.statusGapMs - performance.now();
    if (wait <= 0) this.sendStatus();
    else this.statusDue = setTimeout(() => this.sendStatus(), wait).unref();
  }

  /** Tells PostgreSQL the acknowledged position now. */
  private sendStatus(): void {
    clearTimeout(this.statusDue);
    this.statusDue = undefined;
    this.statusSentAt = performance.now();
    this.source?.acknowledge(this.acked);
  }
}

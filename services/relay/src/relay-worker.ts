import {
  Lsn,
  prepareReplication,
  publishInitialSnapshot,
  type InitialSnapshot,
  type KafkaSink,
  type Leadership,
  type PublishBlock,
  type Relay,
  type ReplicationNames,
  type SlotState,
} from '@sluice/relay';
import { replicationNames } from './config.js';
import type { RelayContext } from './context.js';
import { createRelaySink } from './relay-sink.js';
import { watchSlot } from './slot-watch.js';
import { createStreamingRelay } from './streaming-relay.js';

export interface RelayWorkerOptions {
  context: RelayContext;
  leadership: Leadership;
  /** Aborted when a stop begins: ends a wait for leadership and abandons an initial snapshot. */
  signal: AbortSignal;
  /** Whether a stop has begun. */
  isStopping: () => boolean;
  /** Ends the process on a condition a restart cannot fix. */
  fatal: (error: unknown) => never;
}

/**
 * The relay's terms of leadership, one at a time: each waits for the lock, prepares
 * replication, publishes any initial snapshot and relays until a stop or a lost lock.
 */
export class RelayWorker {
  private relay: Relay | undefined;
  /** The current term's sink: what readiness asks whether events get through. */
  private sink: KafkaSink | undefined;
  private leading = false;

  constructor(private readonly options: RelayWorkerOptions) {}

  isLeading(): boolean {
    return this.leading;
  }

  publishBlock(): PublishBlock | undefined {
    return this.leading ? this.sink?.blocked() : undefined;
  }

  /** Stops the current term's relay, if one runs. */
  async stopRelay(): Promise<void> {
    await this.relay?.stop();
  }

  /** One term of leadership: wait for the lock, relay until stopped or the lock is lost. */
  async lead(): Promise<void> {
    const { context, leadership } = this.options;
    const { config, logger, metrics } = context;
    logger.info({ slot: config.RELAY_SLOT }, 'standby: waiting for leadership');
    await leadership.acquire(this.options.signal);
    this.leading = true;
    metrics.setLeader(true);
    logger.info({ slot: config.RELAY_SLOT }, 'leading');
    try {
      await this.serve();
    } finally {
      // Whatever ended the term (a stop, a lost lock, a failure), the lock goes, so this process
      // or a standby can lead again.
      await leadership.release();
      this.leading = false;
      metrics.setLeader(false);
      this.relay = undefined;
    }
  }

  /** The work of one term: prepare replication, publish any initial snapshot, relay. */
  private async serve(): Promise<void> {
    const { config } = this.options.context;
    const names = replicationNames(config);
    if (this.options.isStopping()) return;
    const slot = await prepareReplication(config.DATABASE_URL, names);
    this.reportPrepared(names, slot);
    const sink = createRelaySink(this.options.context);
    this.sink = sink;
    try {
      // Outbox rows written before the slot existed: the stream will never carry them.
      if (slot.initialSnapshot !== undefined)
        await this.publishSnapshot(slot.initialSnapshot, sink);
      await this.relayTo(names, sink);
    } finally {
      this.sink = undefined;
      await sink.close();
    }
  }

  private reportPrepared(names: ReplicationNames, slot: SlotState): void {
    const { logger } = this.options.context;
    if (slot.adopted !== undefined) {
      logger.warn(
        {
          slot: names.slot,
          confirmedFlushLsn: Lsn.format(slot.confirmedFlushLsn),
          outboxRows: slot.adopted.outboxRows,
        },
        slot.adopted.warning,
      );
    }
    logger.info({ slot: names.slot, created: slot.created }, 'replication prepared');
  }

  /** Publishes a new slot's snapshot; a stop abandons it at once (the next start redoes it). */
  private async publishSnapshot(snapshot: InitialSnapshot, sink: KafkaSink): Promise<void> {
    const { context, signal } = this.options;
    const published = await publishInitialSnapshot(
      snapshot,
      { publish: (events) => sink.publish(events, signal), close: () => sink.close() },
      {
        batchSize: context.config.RELAY_MAX_BATCH_EVENTS,
        onPublished: context.metrics.countPublished,
        signal,
      },
    );
    context.logger.info(
      { slot: context.config.RELAY_SLOT, published },
      'initial snapshot published',
    );
  }

  /** Relays from the slot to `sink` until the relay stops, watching the slot meanwhile. */
  private async relayTo(names: ReplicationNames, sink: KafkaSink): Promise<void> {
    const { context, leadership, fatal } = this.options;
    const relay = createStreamingRelay(context, names, sink);
    this.relay = relay;
    // A stop requested during set-up found no relay to stop; this one must not start.
    if (this.options.isStopping()) void relay.stop();
    const stopWatching = watchSlot(context, relay, fatal);
    void leadership.lost().then((error) => {
      context.logger.error({ err: error }, 'leadership lost; stopping the relay');
      return relay.stop();
    });
    try {
      await relay.run();
    } finally {
      stopWatching();
    }
  }
}

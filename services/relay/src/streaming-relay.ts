import {
  createPgReplicationSource,
  createRelay,
  type EventSink,
  type Relay,
  type ReplicationNames,
} from '@sluice/relay';
import type { RelayContext } from './context.js';

/** The relay from the slot to `sink`, configured from the relay's settings, logging what it does. */
export function createStreamingRelay(
  { config, logger, metrics }: RelayContext,
  names: ReplicationNames,
  sink: EventSink,
): Relay {
  return createRelay({
    source: () =>
      createPgReplicationSource({
        connectionString: config.DATABASE_URL,
        slot: names.slot,
        publication: names.publication,
        senderTimeoutMs: config.RELAY_LEADER_LEASE_MS,
      }),
    sink,
    outbox: names.outbox,
    maxBatchEvents: config.RELAY_MAX_BATCH_EVENTS,
    maxBufferedEvents: config.RELAY_MAX_BUFFERED_EVENTS,
    maxBufferedBytes: config.RELAY_MAX_BUFFERED_BYTES,
    // Several status updates within the lease, or PostgreSQL ends the stream.
    statusIntervalMs: Math.min(5000, Math.floor(config.RELAY_LEADER_LEASE_MS / 3)),
    stopTimeoutMs: config.RELAY_STOP_TIMEOUT_MS,
    hooks: {
      ...metrics.hooks,
      streamFailed(error, retryInMs) {
        metrics.hooks.streamFailed?.(error, retryInMs);
        logger.warn({ err: error, retryInMs }, 'replication stream failed; reconnecting');
      },
      paused(buffered, bufferedBytes) {
        metrics.hooks.paused?.(buffered, bufferedBytes);
        // Flow control, many times a second under load (metric sluice_relay_paused); a Kafka
        // outage shows as failed sends, logged at warn, and at error once they stall.
        logger.debug({ buffered, bufferedBytes }, 'Kafka is behind; pausing WAL reads');
      },
      stopTimedOut(unpublishedEvents) {
        logger.warn(
          { unpublishedEvents, stopTimeoutMs: config.RELAY_STOP_TIMEOUT_MS },
          'stop grace period ended; events not yet in Kafka stay unacknowledged and are sent again after a restart',
        );
      },
    },
  });
}

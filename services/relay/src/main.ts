// The relay's composition root: config, leadership, replication, Kafka, metrics, shutdown.
import { isSluiceError } from '@sluice/errors';
import { createKafka, parseBrokers } from '@sluice/kafka';
import {
  createKafkaSink,
  createLeadership,
  createPgClaimCheckStore,
  createPgReplicationSource,
  createRelay,
  emitHeartbeat,
  inspectSlot,
  Lsn,
  prepareReplication,
  publishInitialSnapshot,
  type InitialSnapshot,
  type KafkaSink,
  type PublishBlock,
  type Relay,
  type RelayErrorCode,
  type ReplicationNames,
} from '@sluice/relay';
import { ExitCode, createLogger, redactConfig, runService } from '@sluice/service-kit';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { loadRelayConfig } from './config.js';
import { createRelayMetrics } from './metrics.js';

/** Conditions a restart cannot fix: a person must act. */
const FATAL_CODES: ReadonlySet<string> = new Set<RelayErrorCode>([
  'slot_lost',
  'slot_missing',
  'slot_mismatch',
  'publication_mismatch',
]);

const config = loadRelayConfig(process.env);
const logger = createLogger({ service: 'relay', level: config.LOG_LEVEL });
logger.info({ config: redactConfig(config) }, 'starting');
const metrics = createRelayMetrics();

const pool = new pg.Pool({
  connectionString: config.DATABASE_URL,
  max: 3,
  application_name: 'sluice-relay',
  // Cut off from PostgreSQL, heartbeats, slot checks and claim checks fail rather than hang.
  connectionTimeoutMillis: 10_000,
  query_timeout: 60_000,
  keepAlive: true,
});
pool.on('error', (error) => logger.warn({ err: error }, 'idle database connection failed'));

const kafka = createKafka({
  clientId: 'sluice-relay',
  brokers: parseBrokers(config.KAFKA_BROKERS),
  logger,
});

let relay: Relay | undefined;
/** The current term's sink: what readiness asks whether events get through. */
let sink: KafkaSink | undefined;
let leading = false;
const abort = new AbortController();
const leadership = createLeadership({
  connectionString: config.DATABASE_URL,
  name: `relay:${config.RELAY_SLOT}`,
  pollMs: config.RELAY_LEADER_POLL_MS,
  leaseMs: config.RELAY_LEADER_LEASE_MS,
});

const publishBlock = (): PublishBlock | undefined => (leading ? sink?.blocked() : undefined);
metrics.watchPublishing(publishBlock);

/** What an operator reads in the log and in /readyz: which event, why, what happens now. */
function describeBlock(block: PublishBlock): string {
  const { id, type, aggregateType, aggregateId, aggregateVersion } = block.event;
  const event = `event ${id} (${type}, ${aggregateType} ${aggregateId} v${aggregateVersion}) to ${block.topic}`;
  switch (block.reason) {
    case 'programming_error':
      return `Sending ${event} fails with a programming error; retrying, nothing after it is published until it goes out`;
    case 'rejected':
      return `Kafka refuses ${event}; retrying until the topic or the relay's configuration is fixed, nothing after it is published until then`;
    case 'stalled':
      return `Sending ${event} has not succeeded since ${block.since.toISOString()}; retrying`;
  }
}

/** The relay's work until a stop: lead when it can, again after a failure. */
let working: Promise<void> = Promise.resolve();
const service = await runService({
  logger,
  port: config.RELAY_METRICS_PORT,
  host: config.RELAY_METRICS_HOST,
  metrics: metrics.registry,
  readiness({ stopping }) {
    if (stopping) return { ready: false, body: { status: 'stopping' } };
    const block = publishBlock();
    if (block !== undefined) {
      return { ready: false, body: { status: 'blocked', ...block, message: describeBlock(block) } };
    }
    return { ready: true, body: { status: leading ? 'leading' : 'standby' } };
  },
  stopDescription: 'publishing what was read, then acknowledging',
  async stop() {
    abort.abort();
    await relay?.stop();
    await working;
  },
  async close() {
    await leadership.release();
    await pool.end();
  },
  // The relay gives up on Kafka after RELAY_STOP_TIMEOUT_MS; closing the stream and the
  // sessions is bounded too. This is the last resort if something still hangs.
  stopTimeoutMs: config.RELAY_STOP_TIMEOUT_MS + 20_000,
});
logger.info({ address: service.address }, 'metrics listening');

function fatal(error: unknown): never {
  return service.fail(error, ExitCode.needsOperator);
}

// Read through a function: a stop begins while the code below awaits.
const isStopping = () => service.stopping();

/** One term of leadership: wait for the lock, relay until stopped or the lock is lost. */
async function lead(): Promise<void> {
  logger.info({ slot: config.RELAY_SLOT }, 'standby: waiting for leadership');
  await leadership.acquire(abort.signal);
  leading = true;
  metrics.setLeader(true);
  logger.info({ slot: config.RELAY_SLOT }, 'leading');
  try {
    await serve();
  } finally {
    // Whatever ended the term (a stop, a lost lock, a failure), the lock goes, so this process
    // or a standby can lead again.
    await leadership.release();
    leading = false;
    metrics.setLeader(false);
    relay = undefined;
  }
}

/** Runs `task` every `ms`, never two at once (a slow database must not pile them up). */
function every(ms: number, task: () => Promise<void>): () => void {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const tick = () => {
    void task().finally(() => {
      if (!stopped) timer = setTimeout(tick, ms);
    });
  };
  timer = setTimeout(tick, ms);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function createSink(): KafkaSink {
  return createKafkaSink({
    kafka,
    source: config.RELAY_EVENT_SOURCE,
    topicPrefix: config.RELAY_TOPIC_PREFIX,
    partitions: config.RELAY_TOPIC_PARTITIONS,
    compressAboveBytes: config.RELAY_COMPRESS_ABOVE_BYTES,
    maxRecordBytes: config.RELAY_MAX_RECORD_BYTES,
    claimChecks: createPgClaimCheckStore(pool),
    blockedRetryMaxMs: config.RELAY_BLOCKED_RETRY_MAX_MS,
    stalledAfterMs: config.RELAY_STALLED_AFTER_MS,
    onSendFailed(failure, block) {
      metrics.sendFailed(failure.reason);
      const { error, reason, event, topic, attempt, retryInMs, since } = failure;
      const fields = { err: error, reason, event, topic, attempt, retryInMs, since };
      const message = 'Kafka send failed; retrying with a fresh producer';
      if (block === undefined) logger.warn(fields, message);
      else
        logger.error({ ...fields, reason: block.reason, blocked: describeBlock(block) }, message);
    },
    onStalled: (block) => logger.error(block, describeBlock(block)),
    onRecovered(since, failedAttempts) {
      const stuckForMs = Date.now() - since.getTime();
      logger.info({ failedAttempts, stuckForMs }, 'Kafka sends succeed again');
    },
    onClaimCheckFallback(event, topic, error) {
      logger.warn(
        { err: error, event, topic },
        'Kafka refused a record as too large for its topic; sending it as a claim check',
      );
    },
  });
}

/** Publishes a new slot's snapshot; a stop abandons it at once (the next start redoes it). */
async function publishSnapshot(snapshot: InitialSnapshot, current: KafkaSink): Promise<void> {
  const published = await publishInitialSnapshot(
    snapshot,
    { publish: (events) => current.publish(events, abort.signal), close: () => current.close() },
    {
      batchSize: config.RELAY_MAX_BATCH_EVENTS,
      onPublished: metrics.countPublished,
      signal: abort.signal,
    },
  );
  logger.info({ slot: config.RELAY_SLOT, published }, 'initial snapshot published');
}

/** Heartbeats and slot checks while `current` relays; returns what stops them. */
function watchSlot(current: Relay): () => void {
  const stopHeartbeats = every(config.RELAY_HEARTBEAT_MS, () =>
    emitHeartbeat(pool).catch((error: unknown) => logger.warn({ err: error }, 'heartbeat failed')),
  );
  const stopChecks = every(config.RELAY_SLOT_CHECK_MS, async () => {
    const health = await inspectSlot(pool, config.RELAY_SLOT).catch((error: unknown) => {
      logger.warn({ err: error }, 'slot check failed');
    });
    if (health === undefined) return;
    metrics.setSlot(health);
    metrics.setOldestUnpublished(current.oldestUnpublished());
    if (!health.exists || health.walStatus === 'lost') {
      fatal(
        new Error(
          `replication slot ${config.RELAY_SLOT} is ${health.exists ? 'lost' : 'gone'} while relaying`,
        ),
      );
    }
    if (health.walStatus === 'unreserved') {
      logger.error(
        { slot: config.RELAY_SLOT, safeWalSizeBytes: health.safeWalSizeBytes },
        'slot in danger of being lost',
      );
    }
  });
  return () => {
    stopHeartbeats();
    stopChecks();
  };
}

function createStreamingRelay(names: ReplicationNames, current: KafkaSink): Relay {
  return createRelay({
    source: () =>
      createPgReplicationSource({
        connectionString: config.DATABASE_URL,
        slot: names.slot,
        publication: names.publication,
        senderTimeoutMs: config.RELAY_LEADER_LEASE_MS,
      }),
    sink: current,
    outbox: names.outbox,
    maxBatchEvents: config.RELAY_MAX_BATCH_EVENTS,
    maxBufferedEvents: config.RELAY_MAX_BUFFERED_EVENTS,
    // Several status updates within the lease, or PostgreSQL ends the stream.
    statusIntervalMs: Math.min(5000, Math.floor(config.RELAY_LEADER_LEASE_MS / 3)),
    stopTimeoutMs: config.RELAY_STOP_TIMEOUT_MS,
    hooks: {
      ...metrics.hooks,
      streamFailed(error, retryInMs) {
        metrics.hooks.streamFailed?.(error, retryInMs);
        logger.warn({ err: error, retryInMs }, 'replication stream failed; reconnecting');
      },
      paused(buffered) {
        metrics.hooks.paused?.(buffered);
        // Flow control, many times a second under load (metric sluice_relay_paused); a Kafka
        // outage shows as failed sends, logged at warn, and at error once they stall.
        logger.debug({ buffered }, 'Kafka is behind; pausing WAL reads');
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

/** The work of one term: prepare replication, publish any initial snapshot, relay. */
async function serve(): Promise<void> {
  const names = {
    publication: config.RELAY_PUBLICATION,
    slot: config.RELAY_SLOT,
    outbox: { schema: config.RELAY_OUTBOX_SCHEMA, table: config.RELAY_OUTBOX_TABLE },
  };
  if (isStopping()) return;
  const slot = await prepareReplication(config.DATABASE_URL, names);
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
  const current = createSink();
  sink = current;
  try {
    // Outbox rows written before the slot existed: the stream will never carry them.
    if (slot.initialSnapshot !== undefined) await publishSnapshot(slot.initialSnapshot, current);
    const streaming = createStreamingRelay(names, current);
    relay = streaming;
    // A stop requested during set-up found no relay to stop; this one must not start.
    if (isStopping()) void streaming.stop();
    const stopWatching = watchSlot(streaming);
    void leadership.lost().then((error) => {
      logger.error({ err: error }, 'leadership lost; stopping the relay');
      return streaming.stop();
    });
    try {
      await streaming.run();
    } finally {
      stopWatching();
    }
  } finally {
    sink = undefined;
    await current.close();
  }
}

/** Leads until a stop; a failure is retried with backoff, one a restart cannot fix ends the process. */
async function relayUntilStopped(): Promise<void> {
  let backoffMs = 500;
  while (!isStopping()) {
    try {
      await lead();
      backoffMs = 500;
    } catch (error) {
      if (isSluiceError(error) && FATAL_CODES.has(error.code)) fatal(error);
      if (isStopping()) break;
      logger.error({ err: error, retryInMs: backoffMs }, 'relay failed; retrying');
      await sleep(backoffMs, undefined, { signal: abort.signal }).catch(() => undefined);
      backoffMs = Math.min(backoffMs * 2, 30_000);
    }
  }
}
working = relayUntilStopped();

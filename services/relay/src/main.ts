// The relay's composition root: config, leadership, replication, Kafka, metrics, shutdown.
import { errorMessage, isSluiceError } from '@sluice/errors';
import { parseBrokers } from '@sluice/preflight';
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
  type ReplicationNames,
} from '@sluice/relay';
import { createLogger, redactConfig } from '@sluice/service-kit';
import Fastify from 'fastify';
import { Kafka, logLevel } from 'kafkajs';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { loadRelayConfig } from './config.js';
import { createRelayMetrics } from './metrics.js';

/** Exit status for conditions a restart cannot fix (a lost slot): a person must act. */
const EXIT_NEEDS_OPERATOR = 78;
const FATAL_CODES = new Set(['slot_lost', 'slot_missing', 'slot_mismatch', 'publication_mismatch']);

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

const kafkaLevels: Record<number, 'error' | 'warn' | 'info' | 'debug'> = {
  [logLevel.ERROR]: 'error',
  [logLevel.WARN]: 'warn',
  [logLevel.INFO]: 'info',
  [logLevel.DEBUG]: 'debug',
};
const kafka = new Kafka({
  clientId: 'sluice-relay',
  brokers: parseBrokers(config.KAFKA_BROKERS),
  logLevel: logLevel.WARN,
  logCreator:
    () =>
    ({ namespace, level, log }) => {
      const { message, ...rest } = log;
      logger[kafkaLevels[level] ?? 'info']({ kafka: { namespace, ...rest } }, message);
    },
});

let relay: Relay | undefined;
/** The current term's sink: what readiness asks whether events get through. */
let sink: KafkaSink | undefined;
let leading = false;
let stopping = false;
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

const http = Fastify({ logger: false });
http.get('/healthz', (_request, reply) => reply.send({ status: 'ok' }));
http.get('/readyz', (_request, reply) => {
  if (stopping) return reply.code(503).send({ status: 'stopping' });
  const block = publishBlock();
  if (block !== undefined) {
    return reply.code(503).send({ status: 'blocked', ...block, message: describeBlock(block) });
  }
  return reply.code(200).send({ status: leading ? 'leading' : 'standby' });
});
http.get('/metrics', async (_request, reply) =>
  reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()),
);
const metricsAddress = await http.listen({
  port: config.RELAY_METRICS_PORT,
  host: config.RELAY_METRICS_HOST,
});
logger.info({ address: metricsAddress }, 'metrics listening');

function fatal(error: unknown): never {
  logger.fatal(
    { err: error, code: isSluiceError(error) ? error.code : undefined },
    errorMessage(error),
  );
  process.exit(EXIT_NEEDS_OPERATOR);
}

// Read through a function: signal handlers flip `stopping` while the code below awaits.
const isStopping = () => stopping;

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

async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, 'stopping: publishing what was read, then acknowledging');
  // The relay gives up on Kafka after RELAY_STOP_TIMEOUT_MS; closing the stream and the
  // sessions is bounded too. This is the last resort if something still hangs.
  setTimeout(() => {
    logger.error('graceful stop timed out; unacknowledged events will be sent again');
    process.exit(1);
  }, config.RELAY_STOP_TIMEOUT_MS + 20_000).unref();
  abort.abort();
  await relay?.stop();
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));

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
await leadership.release();
await http.close();
await pool.end();
logger.info('stopped');
process.exit(0);

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
  prepareReplication,
  publishInitialSnapshot,
  type Relay,
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
const FATAL_CODES = new Set(['slot_lost', 'slot_missing', 'slot_mismatch']);

const config = loadRelayConfig(process.env);
const logger = createLogger({ service: 'relay', level: config.LOG_LEVEL });
logger.info({ config: redactConfig(config) }, 'starting');
const metrics = createRelayMetrics();

const pool = new pg.Pool({
  connectionString: config.DATABASE_URL,
  max: 3,
  application_name: 'sluice-relay',
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
let leading = false;
let stopping = false;
const abort = new AbortController();
const leadership = createLeadership({
  connectionString: config.DATABASE_URL,
  name: `relay:${config.RELAY_SLOT}`,
  pollMs: config.RELAY_LEADER_POLL_MS,
});

const http = Fastify({ logger: false });
http.get('/healthz', (_request, reply) => reply.send({ status: 'ok' }));
http.get('/readyz', (_request, reply) =>
  reply
    .code(stopping ? 503 : 200)
    .send({ status: stopping ? 'stopping' : leading ? 'leading' : 'standby' }),
);
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

/** The work of one term: prepare replication, publish any initial snapshot, relay. */
async function serve(): Promise<void> {
  const names = {
    publication: config.RELAY_PUBLICATION,
    slot: config.RELAY_SLOT,
    outbox: { schema: config.RELAY_OUTBOX_SCHEMA, table: config.RELAY_OUTBOX_TABLE },
  };
  if (isStopping()) return;
  const slot = await prepareReplication(config.DATABASE_URL, names);
  logger.info({ slot: names.slot, created: slot.created }, 'replication prepared');
  const sink = createKafkaSink({
    kafka,
    source: config.RELAY_EVENT_SOURCE,
    topicPrefix: config.RELAY_TOPIC_PREFIX,
    partitions: config.RELAY_TOPIC_PARTITIONS,
    compressAboveBytes: config.RELAY_COMPRESS_ABOVE_BYTES,
    maxRecordBytes: config.RELAY_MAX_RECORD_BYTES,
    claimChecks: createPgClaimCheckStore(pool),
    onRetry: (error, attempt) => {
      metrics.sendRetry();
      logger.warn({ err: error, attempt }, 'Kafka send failed; retrying with a fresh producer');
    },
  });
  if (slot.initialSnapshot !== undefined) {
    // Outbox rows written before the slot existed: the stream will never carry them.
    const published = await publishInitialSnapshot(slot.initialSnapshot, sink, {
      batchSize: config.RELAY_MAX_BATCH_EVENTS,
      onPublished: metrics.countPublished,
      signal: abort.signal,
    }).catch(async (error: unknown) => {
      await sink.close();
      throw error;
    });
    logger.info({ slot: names.slot, published }, 'initial snapshot published');
  }
  const current = createRelay({
    source: () =>
      createPgReplicationSource({
        connectionString: config.DATABASE_URL,
        slot: names.slot,
        publication: names.publication,
      }),
    sink,
    outbox: names.outbox,
    maxBatchEvents: config.RELAY_MAX_BATCH_EVENTS,
    maxBufferedEvents: config.RELAY_MAX_BUFFERED_EVENTS,
    hooks: {
      ...metrics.hooks,
      streamFailed(error, retryInMs) {
        metrics.hooks.streamFailed?.(error, retryInMs);
        logger.warn({ err: error, retryInMs }, 'replication stream failed; reconnecting');
      },
      paused(buffered) {
        metrics.hooks.paused?.(buffered);
        // Flow control, many times a second under load (metric sluice_relay_paused); a Kafka
        // outage shows as failed sends, logged at warn.
        logger.debug({ buffered }, 'Kafka is behind; pausing WAL reads');
      },
    },
  });
  relay = current;
  // A stop requested during set-up found no relay to stop; this one must not start.
  if (isStopping()) void current.stop();
  const heartbeat = setInterval(() => {
    emitHeartbeat(pool).catch((error: unknown) => logger.warn({ err: error }, 'heartbeat failed'));
  }, config.RELAY_HEARTBEAT_MS);
  const slotCheck = setInterval(() => {
    inspectSlot(pool, names.slot)
      .then((health) => {
        metrics.setSlot(health);
        metrics.setOldestUnpublished(current.oldestUnpublished());
        if (!health.exists || health.walStatus === 'lost') {
          fatal(
            new Error(
              `replication slot ${names.slot} is ${health.exists ? 'lost' : 'gone'} while relaying`,
            ),
          );
        }
        if (health.walStatus === 'unreserved') {
          logger.error(
            { slot: names.slot, safeWalSizeBytes: health.safeWalSizeBytes },
            'slot in danger of being lost',
          );
        }
      })
      .catch((error: unknown) => logger.warn({ err: error }, 'slot check failed'));
  }, config.RELAY_SLOT_CHECK_MS);
  void leadership.lost().then((error) => {
    logger.error({ err: error }, 'leadership lost; stopping the relay');
    return current.stop();
  });
  try {
    await current.run();
  } finally {
    clearInterval(heartbeat);
    clearInterval(slotCheck);
    await sink.close();
  }
}

async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, 'stopping: publishing what was read, then acknowledging');
  setTimeout(() => {
    logger.error('graceful stop timed out; unacknowledged events will be sent again');
    process.exit(1);
  }, 30_000).unref();
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

#!/usr/bin/env node
// The relay's composition root: command line, leadership, replication, Kafka, metrics, shutdown.
import { isSluiceError } from '@sluice/errors';
import { createKafka, isSecured, kafkaSecurityOf, parseBrokers, probeKafka } from '@sluice/kafka';
import { createLeadership, type RelayErrorCode } from '@sluice/relay';
import {
  ExitCode,
  createLogger,
  readCommandLine,
  redactConfig,
  exitOnRefusal,
  runService,
  settingOrExit,
  startTracing,
  verifyDatabaseAtStart,
} from '@sluice/service-kit';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { checkRelay } from './check.js';
import { relayConfigSchema } from './config.js';
import { createRelayMetrics } from './metrics.js';
import { createRelayJourney } from './journey.js';
import { describeBlock } from './relay-sink.js';
import { RelayWorker } from './relay-worker.js';

/** Conditions a restart cannot fix: a person must act. */
const FATAL_CODES: ReadonlySet<string> = new Set<RelayErrorCode>([
  'slot_lost',
  'slot_missing',
  'slot_mismatch',
  'publication_mismatch',
  'publication_missing',
]);

const { config } = await readCommandLine({
  command: 'sluice-relay',
  summary: [
    "Publishes the events a service appends to its PostgreSQL outbox to Kafka. It reads the outbox's",
    'inserts from the WAL through a logical replication slot (pgoutput) and sends each as a',
    'CloudEvents record to <RELAY_TOPIC_PREFIX>outbox.event.<aggregate_type>, keyed by aggregate id,',
    'in order per aggregate. It acknowledges the WAL only once Kafka has every event before that',
    'point: after a crash it may send events again, and it never loses one. Its first start creates',
    'the publication, the slot and the topics. Run several: one leads, the others stand by.',
  ].join('\n'),
  notes: [
    'Serves /healthz, /readyz and /metrics on RELAY_METRICS_HOST:RELAY_METRICS_PORT.',
    'Exit status: 0 after SIGTERM or SIGINT, once what was read is published; 78 when a person must',
    'act (invalid settings; a slot that was lost, dropped, or is of another plugin or database; a',
    'publication that hides outbox inserts); at start over TLS or SASL, 77 when Kafka refuses the',
    "credentials, 76 when its certificate is not trusted, 68 when it is not valid for the broker's",
    "host name (the same for PostgreSQL's certificate; 78 when PostgreSQL offers no TLS and sslmode",
    'requires it); 1 on other failures.',
  ].join('\n'),
  schema: relayConfigSchema,
  check: checkRelay,
});
const kafkaSecurity = settingOrExit('sluice-relay', () => kafkaSecurityOf(config));
const logger = createLogger({ service: 'relay', level: config.LOG_LEVEL });
logger.info({ config: redactConfig(config) }, 'starting');
const tracing = await startTracing({ service: 'relay', logger });
const metrics = createRelayMetrics({ exemplars: tracing.tracer !== undefined });

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
await verifyDatabaseAtStart(config.DATABASE_URL, logger, () => pool.query('SELECT 1'));

const brokers = parseBrokers(config.KAFKA_BROKERS);
const kafka = createKafka({ clientId: 'sluice-relay', brokers, logger, security: kafkaSecurity });
// Once, at start: credentials or certificates Kafka refuses end the process at once.
if (isSecured(kafkaSecurity)) {
  const probe = () => probeKafka({ clientId: 'sluice-relay', brokers, security: kafkaSecurity });
  await exitOnRefusal(logger, probe, 'Kafka did not answer at start; the relay retries it');
}

const journey = createRelayJourney({ config, logger, metrics, pool });

const abort = new AbortController();
// Read through a function: a stop begins while the code below awaits.
const isStopping = () => service.stopping();
const leadership = createLeadership({
  connectionString: config.DATABASE_URL,
  name: `relay:${config.RELAY_SLOT}`,
  pollMs: config.RELAY_LEADER_POLL_MS,
  leaseMs: config.RELAY_LEADER_LEASE_MS,
});
const worker = new RelayWorker({
  context: { config, logger, metrics, pool, kafka, journey, tracer: tracing.tracer },
  leadership,
  signal: abort.signal,
  isStopping,
  fatal,
});
metrics.watchPublishing(() => worker.publishBlock());

/** The relay's work until a stop: lead when it can, again after a failure. */
let working: Promise<void> = Promise.resolve();
const service = await runService({
  logger,
  port: config.RELAY_METRICS_PORT,
  host: config.RELAY_METRICS_HOST,
  metrics: metrics.registry,
  readiness({ stopping }) {
    if (stopping) return { ready: false, body: { status: 'stopping' } };
    const block = worker.publishBlock();
    if (block !== undefined) {
      return { ready: false, body: { status: 'blocked', ...block, message: describeBlock(block) } };
    }
    if (worker.isLeading()) return { ready: true, body: { status: 'leading' } };
    if (leadership.unreachable() === undefined) return { ready: true, body: { status: 'standby' } };
    const message = 'PostgreSQL does not answer: the relay cannot take the lead';
    return { ready: false, body: { status: 'database_unavailable', message } };
  },
  stopDescription: 'publishing what was read, then acknowledging',
  async stop() {
    abort.abort();
    await worker.stopRelay();
    await working;
  },
  async close() {
    await leadership.release();
    await journey.close();
    await pool.end();
    await tracing.shutdown();
  },
  // The relay gives up on Kafka after RELAY_STOP_TIMEOUT_MS; closing the stream and the
  // sessions is bounded too. This is the last resort if something still hangs.
  stopTimeoutMs: config.RELAY_STOP_TIMEOUT_MS + 20_000,
});
logger.info({ address: service.address }, 'metrics listening');

function fatal(error: unknown): never {
  return service.fail(error, ExitCode.needsOperator);
}

/** Leads until a stop; a failure is retried with backoff, one a restart cannot fix ends the process. */
async function relayUntilStopped(): Promise<void> {
  let backoffMs = 500;
  while (!isStopping()) {
    try {
      await worker.lead();
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

#!/usr/bin/env node
// The console's composition root: settings, access, pool, Kafka admin, sampler, HTTP server, stop.
import type { Access } from '@sluice/access';
import { createKafka, isSecured, kafkaSecurityOf, parseBrokers, probeKafka } from '@sluice/kafka';
import {
  ExitCode,
  createLogger,
  readCommandLine,
  redactConfig,
  exitOnRefusal,
  runService,
  settingOrExit,
  verifyDatabaseAtStart,
  collectProcessMetrics,
} from '@sluice/service-kit';
import pg from 'pg';
import { Registry } from 'prom-client';
import { createConsoleApp } from './app.js';
import { checkConsole, consoleAccess } from './check.js';
import { consoleConfigSchema, listOf } from './config.js';
import { KafkaCollector } from './kafka-collector.js';
import { Sampler } from './sampler.js';
import { alertThresholds } from './thresholds.js';

const command = 'sluice-console';

const { config } = await readCommandLine({
  command,
  summary: [
    "Sluice's operations console: live health of every stage (outbox, slot, relay, Kafka,",
    'projections), lag and its trends, parked events, rebuilds and event journeys, in the browser',
    'and as a JSON API. Reads need the viewer role, actions the operator role; actions go to the',
    "projector with the operator's identity and are audited there.",
  ].join('\n'),
  notes: [
    'Serves the pages at /, the API at /api (services/console/API.md), and /healthz, /readyz and',
    '/metrics, on CONSOLE_HOST:CONSOLE_PORT. Needs SLUICE_ACCESS_SECRET (it signs the sessions) and',
    'SLUICE_ACCESS_USERS_FILE or an identity provider. Exit status: 0 after SIGTERM or SIGINT; 78',
    'for invalid settings; at start over TLS or SASL, 77 when Kafka refuses the credentials, 76 when',
    "its certificate is not trusted, 68 when it is not valid for the broker's host name (the same for",
    "PostgreSQL's certificate; 78 when PostgreSQL offers no TLS and sslmode requires it); 1 on other",
    'failures.',
  ].join('\n'),
  schema: consoleConfigSchema,
  check: checkConsole,
});

/** The access control the settings give, or one line and exit 78. */
function accessOrExit(): Access {
  const found = consoleAccess(config);
  if (typeof found !== 'string') return found;
  process.stderr.write(`${command}: ${found}\n`);
  return process.exit(ExitCode.needsOperator);
}

const access = accessOrExit();
const kafkaSecurity = settingOrExit(command, () => kafkaSecurityOf(config));
const brokers = parseBrokers(config.KAFKA_BROKERS);
const logger = createLogger({ service: 'console', level: config.LOG_LEVEL });
logger.info({ config: redactConfig(config) }, 'starting');

const pool = new pg.Pool({
  connectionString: config.DATABASE_URL,
  max: 4,
  application_name: 'sluice-console',
  connectionTimeoutMillis: 5000,
  // A screen's query that takes this long is a bug; never let one hold a connection.
  statement_timeout: 5000,
});
pool.on('error', (error) => logger.warn({ err: error }, 'idle database connection failed'));
await verifyDatabaseAtStart(config.DATABASE_URL, logger, () => pool.query('SELECT 1'));
// Once, at start: credentials or certificates Kafka refuses end the process at once.
if (isSecured(kafkaSecurity)) {
  const probe = () => probeKafka({ clientId: 'sluice-console', brokers, security: kafkaSecurity });
  await exitOnRefusal(logger, probe, 'Kafka did not answer at start');
}
const kafka = new KafkaCollector(
  createKafka({ clientId: 'sluice-console', brokers, logger, security: kafkaSecurity }).admin(),
);

/** A viewer token for the projectors' operations reads, renewed before it expires. */
let serviceToken: { token: string; renewAt: number } | undefined;
async function projectorHeaders(): Promise<Record<string, string>> {
  if (serviceToken === undefined || Date.now() > serviceToken.renewAt) {
    const token = await access.issueToken({ subject: 'sluice-console', role: 'viewer' }, 3600);
    serviceToken = { token, renewAt: Date.now() + 1_800_000 };
  }
  return { authorization: `Bearer ${serviceToken.token}` };
}

const sampler = new Sampler({
  pool,
  kafka,
  logger,
  sampleMs: config.CONSOLE_SAMPLE_MS,
  slot: config.CONSOLE_SLOT,
  outbox: { schema: config.CONSOLE_OUTBOX_SCHEMA, table: config.CONSOLE_OUTBOX_TABLE },
  relayUrls: listOf(config.CONSOLE_RELAY_URLS),
  projectorUrls: listOf(config.CONSOLE_PROJECTOR_URLS),
  apiUrls: listOf(config.CONSOLE_API_URLS),
  topicPrefix: config.CONSOLE_TOPIC_PREFIX,
  kafkaName: config.KAFKA_BROKERS,
  thresholds: alertThresholds(),
  projectorHeaders,
});

const registry = new Registry();
collectProcessMetrics(registry);

const app = await createConsoleApp({
  access,
  sampler,
  pool,
  logger,
  maskedTypes: new Set(listOf(config.CONSOLE_MASKED_EVENT_TYPES)),
  sessionTtlSeconds: config.CONSOLE_SESSION_TTL_SECONDS,
  topicPrefix: config.CONSOLE_TOPIC_PREFIX,
  groupPrefix: config.CONSOLE_GROUP_PREFIX,
  traceUrl: config.CONSOLE_TRACE_URL,
});
sampler.start();
const service = await runService({
  logger,
  port: config.CONSOLE_PORT,
  host: config.CONSOLE_HOST,
  metrics: registry,
  app,
  readiness: ({ stopping }) => ({
    ready: !stopping,
    body: { status: stopping ? 'stopping' : 'ok' },
  }),
  stopDescription: 'ending the streams and the sampling',
  stop: () => sampler.stop(),
  async close() {
    await kafka.close();
    await pool.end();
  },
  stopTimeoutMs: 10_000,
});
logger.info({ address: service.address }, 'console listening');

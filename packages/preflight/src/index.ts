import { SluiceError, errorMessage } from '@sluice/errors';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';

/** Options shared by the preflight checks. */
export interface PreflightOptions {
  /** How long to wait for a connection before giving up. Default 5000. */
  connectTimeoutMs?: number;
}

/** What {@link checkPostgres} found. */
export interface PostgresInfo {
  /** `server_version`, e.g. `15.18`. */
  serverVersion: string;
  walLevel: string;
  maxReplicationSlots: number;
}

/**
 * Where a PostgreSQL URL points, without credentials, for messages and logs.
 *
 * @example describeDatabaseUrl('postgres://app:secret@db:5432/shop') // 'db:5432/shop'
 */
export function describeDatabaseUrl(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.hostname}:${parsed.port || '5432'}${parsed.pathname}`;
  } catch {
    return '<unparseable DATABASE_URL>';
  }
}

/**
 * Proves that the PostgreSQL server at `url` answers queries and can feed Sluice:
 * `wal_level = logical` and at least one replication slot allowed.
 *
 * @throws SluiceError `postgres_unreachable` (retriable), `postgres_wal_level`,
 *   `postgres_no_replication_slots`.
 */
export async function checkPostgres(
  url: string,
  options: PreflightOptions = {},
): Promise<PostgresInfo> {
  const where = describeDatabaseUrl(url);
  const client = new pg.Client({
    connectionString: url,
    connectionTimeoutMillis: options.connectTimeoutMs ?? 5000,
  });
  // A server that dies mid-check emits 'error' on the client; the awaited query reports it.
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (error) {
    throw new SluiceError(
      'postgres_unreachable',
      `PostgreSQL at ${where} is unreachable: ${errorMessage(error)}. ` +
        'Start the embedded stack with `pnpm stack:up` or point DATABASE_URL at a running server.',
      { cause: error, retriable: true },
    );
  }
  try {
    const { rows } = await client.query<{ name: string; setting: string }>(
      `SELECT name, setting FROM pg_settings
        WHERE name IN ('server_version', 'wal_level', 'max_replication_slots')`,
    );
    const setting = (name: string): string => rows.find((row) => row.name === name)?.setting ?? '';
    const info: PostgresInfo = {
      serverVersion: setting('server_version'),
      walLevel: setting('wal_level'),
      maxReplicationSlots: Number(setting('max_replication_slots')),
    };
    if (info.walLevel !== 'logical') {
      throw new SluiceError(
        'postgres_wal_level',
        `PostgreSQL at ${where} has wal_level=${info.walLevel}; Sluice reads the WAL through ` +
          'logical replication and needs wal_level=logical (set it in postgresql.conf and restart).',
      );
    }
    if (info.maxReplicationSlots < 1) {
      throw new SluiceError(
        'postgres_no_replication_slots',
        `PostgreSQL at ${where} allows no replication slots (max_replication_slots=0); raise it and restart.`,
      );
    }
    return info;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * Proves that the Kafka cluster at `brokers` answers metadata requests.
 *
 * @throws SluiceError `kafka_unreachable` (retriable).
 */
export async function checkKafka(
  brokers: readonly string[],
  options: PreflightOptions = {},
): Promise<{ brokerCount: number }> {
  const kafka = new Kafka({
    clientId: 'sluice-preflight',
    brokers: [...brokers],
    connectionTimeout: options.connectTimeoutMs ?? 5000,
    retry: { retries: 1, initialRetryTime: 200 },
    logLevel: logLevel.NOTHING,
  });
  const admin = kafka.admin();
  try {
    await admin.connect();
    const cluster = await admin.describeCluster();
    return { brokerCount: cluster.brokers.length };
  } catch (error) {
    throw new SluiceError(
      'kafka_unreachable',
      `Kafka at ${brokers.join(',')} is unreachable: ${errorMessage(error)}. ` +
        'Start the embedded stack with `pnpm stack:up` or point KAFKA_BROKERS at a running cluster.',
      { cause: error, retriable: true },
    );
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}

/** Splits `KAFKA_BROKERS`-style text (`host:port,host:port`) into a broker list. */
export function parseBrokers(text: string): string[] {
  return text
    .split(',')
    .map((broker) => broker.trim())
    .filter((broker) => broker.length > 0);
}

/** Options for {@link createTopicEnsurer}. */
export interface EnsureTopicsOptions {
  /** Partitions of the topics created here. Default 6. */
  partitions?: number;
  /** How long to wait for every partition to have a leader. Default 30000. */
  leaderTimeoutMs?: number;
}

async function ensureTopics(
  kafka: Kafka,
  topics: readonly string[],
  options: EnsureTopicsOptions = {},
): Promise<void> {
  if (topics.length === 0) return;
  const admin = kafka.admin();
  await admin.connect();
  try {
    const existing = new Set(await admin.listTopics());
    const create = topics.filter((topic) => !existing.has(topic));
    if (create.length > 0) {
      // kafkajs's own wait retries LEADER_NOT_AVAILABLE only; a topic that metadata does not
      // list yet (UNKNOWN_TOPIC_OR_PARTITION) would fail it, so the loop below waits instead.
      await admin
        .createTopics({
          waitForLeaders: false,
          topics: create.map((topic) => ({
            topic,
            numPartitions: options.partitions ?? 6,
            configEntries: [
              { name: 'retention.ms', value: '-1' },
              { name: 'retention.bytes', value: '-1' },
            ],
          })),
        })
        .catch((error: unknown) => {
          if (!/already exists/i.test(errorMessage(error))) throw error;
        });
    }
    const deadline = Date.now() + (options.leaderTimeoutMs ?? 30_000);
    for (;;) {
      const led = await admin.fetchTopicMetadata({ topics: [...topics] }).then(
        (metadata) =>
          metadata.topics.every((topic) =>
            topic.partitions.every((partition) => partition.leader >= 0),
          ),
        () => false,
      );
      if (led) return;
      if (Date.now() > deadline) {
        throw new SluiceError('topic_not_ready', `No partition leader for ${topics.join(', ')}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}

/**
 * Returns a function that makes sure topics exist. It creates those that are missing, keeping
 * their records forever (consumers rebuild read models from the beginning), and waits until
 * every partition of every one has a leader: a topic created a moment ago, here or by another
 * process, refuses produce and fetch until then. Another process creating the same topic at the
 * same time is fine. It remembers what it ensured, so each topic costs admin requests once.
 * It rejects with SluiceError `topic_not_ready` when a partition has no leader within the timeout.
 */
export function createTopicEnsurer(
  kafka: Kafka,
  options: EnsureTopicsOptions = {},
): (topics: Iterable<string>) => Promise<void> {
  const known = new Set<string>();
  return async (topics) => {
    const missing = [...topics].filter((topic) => !known.has(topic));
    await ensureTopics(kafka, missing, options);
    for (const topic of missing) known.add(topic);
  };
}

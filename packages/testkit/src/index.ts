import { SluiceError, errorMessage } from '@sluice/errors';
import {
  Kafka,
  logLevel,
  type Admin,
  type IHeaders,
  type ITopicConfig,
  type KafkaConfig,
} from 'kafkajs';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import pg from 'pg';
import { inject, vi } from 'vitest';

declare module 'vitest' {
  export interface ProvidedContext {
    /** URL of the test run's PostgreSQL (any database; tests create their own). */
    databaseUrl: string;
    /** The test run's Kafka brokers. */
    kafkaBrokers: string[];
  }
}

/** The servers this test run uses, chosen once by the global setup. */
export interface TestServers {
  databaseUrl: string;
  kafkaBrokers: string[];
}

/** The servers the global setup provided to this test run. */
export function testServers(): TestServers {
  return { databaseUrl: inject('databaseUrl'), kafkaBrokers: inject('kafkaBrokers') };
}

/** Options for {@link waitFor}. */
export interface WaitForOptions {
  /** Give up after this long. Default 10000. */
  timeoutMs?: number;
  /** Pause between probes. Default 50. */
  intervalMs?: number;
  /** Says what was awaited, in the timeout error. */
  message?: string;
}

/**
 * Probes until `probe` returns a truthy value and returns it; the last probe error or a
 * timeout error otherwise. Tests wait for conditions, never for time.
 *
 * @example
 * const row = await waitFor(() => findRow(id), { timeoutMs: 5000, message: 'row projected' });
 */
export async function waitFor<T>(
  probe: () => T | Promise<T>,
  options: WaitForOptions = {},
): Promise<NonNullable<T>> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value) return value;
      lastError = undefined;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      const why = lastError === undefined ? '' : ` (last error: ${errorMessage(lastError)})`;
      throw new SluiceError(
        'wait_timeout',
        `Timed out after ${timeoutMs} ms waiting for ${options.message ?? 'a condition'}${why}`,
        { cause: lastError },
      );
    }
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 50));
  }
}

/**
 * A name unique to this call, valid as a PostgreSQL identifier, slot name and Kafka topic.
 *
 * @example uniqueName('relay') // 'relay_m3k2x1_9f8e7d'
 */
export function uniqueName(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`.toLowerCase();
}

/** A database of its own for one test file. */
export interface TestDatabase {
  name: string;
  url: string;
  /** Drops the database with its replication slots and connections. */
  drop(): Promise<void>;
}

/** `url` with its database replaced by `database`. */
export function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

/** Runs `action` on a connection to the `postgres` database of `serverUrl`'s server. */
export async function withAdminClient<T>(
  serverUrl: string,
  action: (client: pg.Client) => Promise<T>,
): Promise<T> {
  const client = new pg.Client({ connectionString: withDatabase(serverUrl, 'postgres') });
  await client.connect();
  try {
    return await action(client);
  } finally {
    await client.end();
  }
}

/**
 * Creates an empty database named after `prefix` on the server of `serverUrl`.
 *
 * @example
 * const db = await createTestDatabase(testServers().databaseUrl, 'relay');
 * afterAll(() => db.drop());
 */
export async function createTestDatabase(serverUrl: string, prefix: string): Promise<TestDatabase> {
  const name = uniqueName(prefix);
  await withAdminClient(serverUrl, (client) =>
    client.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`),
  );
  return {
    name,
    url: withDatabase(serverUrl, name),
    drop: () =>
      withAdminClient(serverUrl, async (client) => {
        // Logical slots pin their database; free them first.
        await client.query(
          `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
            WHERE database = $1 AND active_pid IS NOT NULL`,
          [name],
        );
        await waitFor(
          async () => {
            await client.query(
              `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                WHERE database = $1 AND NOT active`,
              [name],
            );
            const { rowCount } = await client.query(
              'SELECT 1 FROM pg_replication_slots WHERE database = $1',
              [name],
            );
            return rowCount === 0;
          },
          { timeoutMs: 10_000, message: `replication slots of ${name} to drop` },
        );
        await client.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`);
      }),
  };
}

/**
 * A kafkajs client for tests: quiet, few retries, so failures surface fast; `socketFactory` to
 * stand between it and the brokers.
 */
export function testKafka(
  brokers: readonly string[],
  clientId = uniqueName('test'),
  options: Pick<KafkaConfig, 'socketFactory'> = {},
): Kafka {
  return new Kafka({
    clientId,
    brokers: [...brokers],
    logLevel: logLevel.NOTHING,
    retry: { retries: 3, initialRetryTime: 100 },
    ...options,
  });
}

/** A record as {@link readRecords} read it. */
export interface ReadRecord {
  key: Buffer | null;
  value: Buffer | null;
  headers: IHeaders;
}

/**
 * The records of `topic` from its beginning, read by a consumer group of its own, once there are
 * at least `count` (30 s at most).
 */
export async function readRecords(
  kafka: Kafka,
  topic: string,
  count: number,
): Promise<ReadRecord[]> {
  const consumer = kafka.consumer({ groupId: uniqueName('read') });
  const seen: ReadRecord[] = [];
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ message }) => {
      seen.push({ key: message.key, value: message.value, headers: message.headers ?? {} });
      await Promise.resolve();
    },
  });
  try {
    await waitFor(() => seen.length >= count, {
      timeoutMs: 30_000,
      message: `${count} records of ${topic}`,
    });
  } finally {
    await consumer.disconnect();
  }
  return seen;
}

/**
 * Commits `groupId`'s offsets of `topic` at its earliest or latest records, as
 * `kafka-consumer-groups --reset-offsets` does (kafkajs' own `resetOffsets` commits -1 or -2, which
 * a consumer treats as no offset at all). Kafka refuses while the group still rebalances after a
 * member left, or until a member that never left (a join a stop overtook) outlives its session
 * (30 s by default); a broker may not yet lead a partition of a new topic. It tries again for up to
 * 60 s.
 */
export async function commitGroupOffsets(
  kafka: Kafka,
  groupId: string,
  topic: string,
  at: 'earliest' | 'latest',
): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const commit = async () => {
      const ends = await admin.fetchTopicOffsets(topic);
      const partitions = ends.map((end) => ({
        partition: end.partition,
        offset: at === 'earliest' ? end.low : end.high,
      }));
      await admin.setOffsets({ groupId, topic, partitions });
      return true;
    };
    await waitFor(commit, {
      timeoutMs: 60_000,
      intervalMs: 250,
      message: `the offsets of ${groupId} committed at the ${at}`,
    });
  } finally {
    await admin.disconnect();
  }
}

/** Creates topics (waiting for their leaders) for one test file. */
export async function createTopics(
  brokers: readonly string[],
  topics: readonly ITopicConfig[],
): Promise<void> {
  const admin = testKafka(brokers).admin();
  await admin.connect();
  try {
    await createTopicsWith(admin, topics);
  } finally {
    await admin.disconnect();
  }
}

/**
 * Creates topics through a connected admin and waits until the metadata lists a leader for every
 * partition. kafkajs' own `waitForLeaders` gives up when a broker does not know a new topic yet
 * (UNKNOWN_TOPIC_OR_PARTITION), as happens on a loaded machine; this waits through it.
 */
export async function createTopicsWith(
  admin: Admin,
  topics: readonly ITopicConfig[],
): Promise<void> {
  await admin.createTopics({ topics: [...topics], waitForLeaders: false });
  await waitForTopicLeaders(
    admin,
    topics.map(({ topic }) => topic),
  );
}

/** Waits until the metadata `admin` reads lists every topic of `names` with all partitions led. */
export async function waitForTopicLeaders(admin: Admin, names: readonly string[]): Promise<void> {
  await waitFor(
    async () => {
      const { topics } = await admin.fetchTopicMetadata({ topics: [...names] });
      return names.every((name) => {
        const partitions = topics.find((topic) => topic.name === name)?.partitions ?? [];
        return partitions.length > 0 && partitions.every((partition) => partition.leader >= 0);
      });
    },
    { timeoutMs: 30_000, message: `a leader for every partition of ${names.join(', ')}` },
  );
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/**
 * A TCP port on 127.0.0.1 that was free a moment ago, for servers a test starts itself. It lies
 * below Linux's ephemeral range (32768–60999), so no outgoing connection takes it before a slow
 * server (Kafka binds seconds after it was spawned) gets to bind it; `port + 1` is as safe.
 */
/**
 * What `run` returns, and what it sends to PostgreSQL through pg's clients in this process: one
 * entry per round trip, the texts of its statements in order (a pipeline of `@sluice/database`
 * sends several).
 */
export async function roundTrips<T>(
  run: () => Promise<T>,
): Promise<{ result: T; trips: string[][] }> {
  const query = vi.spyOn(pg.Client.prototype, 'query');
  try {
    const result = await run();
    const trips = query.mock.calls.map(([config]) =>
      typeof config === 'string'
        ? [config]
        : 'texts' in config
          ? (config as { texts: string[] }).texts
          : [(config as { text: string }).text],
    );
    return { result, trips };
  } finally {
    query.mockRestore();
  }
}

export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt += 1) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (await canListen(port)) return port;
  }
  throw new Error('No free TCP port between 20000 and 32000');
}
export { rawProduce, type RawProducedRecord } from './raw-produce.js';
export { fakeOpen, fakeSeal } from './fake-seal.js';

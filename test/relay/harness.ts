// Test support for the relay: a database with an outbox, bulk outbox writes, the relay as a
// real process, and a reader that collects every record of the relay's topics.
import { outboxMigrations } from '@sluice/outbox';
import { createDatabase, migrate } from '@sluice/database';
import {
  createTestDatabase,
  type TestDatabase,
  testKafka,
  testServers,
  uniqueName,
  waitFor,
} from '@sluice/testkit';
import type { Kysely } from 'kysely';
import pg from 'pg';
import { onTestFinished } from 'vitest';
import { findPostgresBinDir } from '@sluice/stack';
import { listeningAddress, startService, type ServiceProcess } from '../support/services.js';

export const AGGREGATE_TYPE = 'cart';

/** A database with `shop.outbox`, and names (slot, publication, topic prefix) of its own. */
export interface RelayFixture {
  database: TestDatabase;
  db: Kysely<Record<string, never>>;
  pool: pg.Pool;
  slot: string;
  publication: string;
  topicPrefix: string;
  topic: string;
  close(): Promise<void>;
}

export async function createRelayFixture(
  serverUrl: string,
  prefix: string,
  options: { migrate?: boolean } = {},
): Promise<RelayFixture> {
  const database = await createTestDatabase(serverUrl, prefix);
  const db = createDatabase<Record<string, never>>({ url: database.url, maxConnections: 4 });
  if (options.migrate !== false)
    await migrate(db, 'outbox_migrations', outboxMigrations({ schema: 'shop' }));
  const pool = new pg.Pool({ connectionString: database.url, max: 4 });
  pool.on('error', () => undefined);
  const topicPrefix = `${uniqueName(prefix)}.`;
  return {
    database,
    db,
    pool,
    slot: uniqueName(`${prefix}_slot`),
    publication: uniqueName(`${prefix}_pub`),
    topicPrefix,
    topic: `${topicPrefix}outbox.event.${AGGREGATE_TYPE}`,
    async close() {
      await db.destroy();
      await pool.end();
      await database.drop();
    },
  };
}

/**
 * Appends `perAggregate` events to each of `aggregates` carts in transactions of `perTransaction`
 * rows, continuing the versions already there. Returns the ids written.
 */
export async function writeOutboxEvents(
  pool: pg.Pool,
  options: {
    aggregates: number;
    perAggregate: number;
    aggregateOffset?: number;
    payloadBytes?: number;
  },
): Promise<number> {
  const filler = 'x'.repeat(Math.max(0, (options.payloadBytes ?? 200) - 150));
  const { rows } = await pool.query<{ n: number }>(
    `WITH heads AS (
       INSERT INTO shop.outbox_heads (aggregate_type, aggregate_id, version)
       SELECT 'cart', lpad(a::text, 12, '0'), $2 FROM generate_series($3 + 1, $3 + $1) a
       ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET version = shop.outbox_heads.version + $2
       RETURNING aggregate_id, version)
     INSERT INTO shop.outbox (id, aggregate_type, aggregate_id, aggregate_version, type, payload, metadata)
     SELECT gen_random_uuid(), 'cart', h.aggregate_id, h.version - $2 + v, 'cart.item_added.v1',
            jsonb_build_object('cartId', '00000000-0000-7000-8000-' || h.aggregate_id,
                               'productId', '00000000-0000-7000-8000-000000000001',
                               'quantity', v, 'unitPriceCents', 100, 'note', $4::text),
            '{"actor":"test"}'::jsonb
       FROM heads h, generate_series(1, $2) v
     RETURNING 1 AS n`,
    [options.aggregates, options.perAggregate, options.aggregateOffset ?? 0, filler],
  );
  return rows.length;
}

/** All outbox rows: id → (aggregate id, version). */
export async function outboxIndex(
  pool: pg.Pool,
): Promise<Map<string, { aggregateId: string; version: number }>> {
  const { rows } = await pool.query<{
    id: string;
    aggregate_id: string;
    aggregate_version: string;
  }>('SELECT id, aggregate_id, aggregate_version FROM shop.outbox');
  return new Map(
    rows.map((r) => [r.id, { aggregateId: r.aggregate_id, version: Number(r.aggregate_version) }]),
  );
}

export interface ReadRecord {
  id: string;
  key: string;
  version: number;
  partition: number;
  offset: bigint;
  headers: Record<string, string>;
  value: string | null;
}

/** How many records `topic` holds (0 when it does not exist yet). */
export async function topicSize(brokers: readonly string[], topic: string): Promise<number> {
  const admin = testKafka(brokers).admin();
  await admin.connect();
  try {
    if (!(await admin.listTopics()).includes(topic)) return 0;
    const offsets = await admin.fetchTopicOffsets(topic);
    return offsets.reduce((sum, o) => sum + Number(o.high), 0);
  } finally {
    await admin.disconnect();
  }
}

/**
 * Reads every record currently in `topic` (up to the end offsets at call time), failing after
 * `timeoutMs` (default 120 s).
 */
export async function readTopic(
  brokers: readonly string[],
  topic: string,
  timeoutMs = 120_000,
): Promise<ReadRecord[]> {
  const kafka = testKafka(brokers);
  const admin = kafka.admin();
  await admin.connect();
  const ends = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  const target = new Map(ends.map((e) => [e.partition, BigInt(e.high)]));
  const total = [...target.values()].reduce((sum, high) => sum + high, 0n);
  const records: ReadRecord[] = [];
  if (total === 0n) return records;
  const consumer = kafka.consumer({ groupId: uniqueName('reader'), maxBytes: 50 * 1024 * 1024 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = new Map<number, bigint>();
  await consumer.run({
    eachBatch: async ({ batch }) => {
      for (const message of batch.messages) {
        const headers: Record<string, string> = {};
        for (const [name, value] of Object.entries(message.headers ?? {}))
          headers[name] = String(value);
        const offset = BigInt(message.offset);
        if (offset >= (target.get(batch.partition) ?? 0n)) continue;
        records.push({
          id: headers.ce_id ?? '',
          key: message.key?.toString() ?? '',
          version: Number(headers.ce_aggregateversion),
          partition: batch.partition,
          offset,
          headers,
          value: message.value?.toString() ?? null,
        });
        seen.set(batch.partition, offset + 1n);
      }
      await Promise.resolve();
    },
  });
  try {
    await waitFor(
      () => [...target].every(([partition, high]) => (seen.get(partition) ?? 0n) >= high),
      {
        timeoutMs,
        intervalMs: 100,
        message: `all ${total} records of ${topic}`,
      },
    );
  } finally {
    await consumer.disconnect();
  }
  return records;
}

/**
 * The invariants: every outbox id is in Kafka (set equality), each aggregate's versions appear in
 * one partition, non-decreasing, complete. Returns how many records were duplicates.
 */
export function checkDelivery(
  outbox: Map<string, { aggregateId: string; version: number }>,
  records: readonly ReadRecord[],
): { duplicates: number; missing: string[]; unexpected: string[]; orderViolations: string[] } {
  const ids = new Set(records.map((r) => r.id));
  const missing = [...outbox.keys()].filter((id) => !ids.has(id));
  const unexpected = [...ids].filter((id) => !outbox.has(id));
  const orderViolations: string[] = [];
  const byKey = new Map<string, ReadRecord[]>();
  for (const record of records) byKey.set(record.key, [...(byKey.get(record.key) ?? []), record]);
  for (const [key, list] of byKey) {
    if (new Set(list.map((r) => r.partition)).size !== 1)
      orderViolations.push(`${key}: several partitions`);
    list.sort((a, b) => (a.offset < b.offset ? -1 : 1));
    let highest = 0;
    for (const record of list) {
      // Redelivery after a crash may repeat a suffix, but never goes back past a gap.
      if (record.version > highest + 1)
        orderViolations.push(`${key}: v${record.version} after v${highest}`);
      highest = Math.max(highest, record.version);
    }
  }
  return { duplicates: records.length - ids.size, missing, unexpected, orderViolations };
}

export type RelayProcess = ServiceProcess;

/** Starts `services/relay/dist/main.js` for the fixture. */
export function startRelay(
  fixture: RelayFixture,
  brokers: readonly string[],
  env: Record<string, string> = {},
): RelayProcess {
  return startService('relay', {
    DATABASE_URL: fixture.database.url,
    KAFKA_BROKERS: brokers.join(','),
    RELAY_SLOT: fixture.slot,
    RELAY_PUBLICATION: fixture.publication,
    RELAY_TOPIC_PREFIX: fixture.topicPrefix,
    RELAY_METRICS_PORT: '0',
    RELAY_HEARTBEAT_MS: '1000',
    RELAY_LEADER_POLL_MS: '200',
    ...env,
  });
}

/** The slot's confirmed position as a number (bytes). */
export async function confirmedFlush(pool: pg.Pool, slot: string): Promise<bigint> {
  const { rows } = await pool.query<{ lsn: string | null }>(
    `SELECT (confirmed_flush_lsn - '0/0')::text AS lsn FROM pg_replication_slots WHERE slot_name = $1`,
    [slot],
  );
  return BigInt(rows[0]?.lsn ?? '0');
}

/**
 * Every record of the fixture's topic, once every id of `outbox` has reached Kafka; fails on
 * the timeout.
 */
export async function awaitAllDelivered(
  brokers: readonly string[],
  fixture: RelayFixture,
  outbox: ReadonlyMap<string, unknown>,
  timeoutMs: number,
): Promise<ReadRecord[]> {
  let records: ReadRecord[] = [];
  await waitFor(
    async () => {
      if ((await topicSize(brokers, fixture.topic)) < outbox.size) return false;
      records = await readTopic(brokers, fixture.topic);
      const ids = new Set(records.map((r) => r.id));
      return [...outbox.keys()].every((id) => ids.has(id));
    },
    { timeoutMs, intervalMs: 250, message: `all ${outbox.size} outbox events in Kafka` },
  );
  return records;
}

/** Each key's versions in offset order. */
export function versionsByKey(records: readonly ReadRecord[]): Map<string, number[]> {
  const sorted = [...records].sort((a, b) => (a.offset < b.offset ? -1 : 1));
  const byKey = new Map<string, number[]>();
  for (const record of sorted)
    byKey.set(record.key, [...(byKey.get(record.key) ?? []), record.version]);
  return byKey;
}

/** The relay's exit code, or a timeout error carrying the end of its output. */
export async function exitCodeWithin(
  relay: RelayProcess,
  timeoutMs: number,
): Promise<number | null> {
  let code: number | null | undefined;
  void relay.exited().then((c) => (code = c));
  await waitFor(() => code !== undefined, { timeoutMs, message: 'the relay to exit' }).catch(
    (error: unknown) => {
      throw new Error(`${String(error)}\n--- relay output ---\n${relay.output().slice(-4000)}`, {
        cause: error,
      });
    },
  );
  return code ?? null;
}

/** The message of the first error the relay logged with `code`, or undefined. */
export function loggedError(relay: RelayProcess, code: string): string | undefined {
  for (const line of relay.output().split('\n')) {
    if (!line.includes(`"code":"${code}"`)) continue;
    const entry = JSON.parse(line) as { err?: { message?: string } };
    return entry.err?.message;
  }
  return undefined;
}

/** The base URL of a relay's metrics and probes server, once it logged it. */
export function relayAddress(relay: RelayProcess): string {
  const address = listeningAddress(relay);
  if (address === undefined) throw new Error(`the relay is not listening yet:\n${relay.output()}`);
  return address;
}

/** The relay's `/readyz` answer. */
export async function readiness(
  relay: RelayProcess,
): Promise<{ code: number; body: Record<string, unknown> }> {
  const response = await fetch(`${relayAddress(relay)}/readyz`);
  return { code: response.status, body: (await response.json()) as Record<string, unknown> };
}

/** The relay's log lines so far, parsed (lines that are not JSON are left out). */
export function relayLogs(relay: RelayProcess): Record<string, unknown>[] {
  return relay
    .output()
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .flatMap((line) => {
      try {
        return [JSON.parse(line) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
}

/**
 * A fixture of the current test's own, and the relays it starts (on the test run's Kafka, or
 * `brokers`), killed and dropped when the test ends.
 */
export async function useRelayFixture(
  prefix: string,
  options: { migrate?: boolean; brokers?: readonly string[] } = {},
): Promise<{ fixture: RelayFixture; start: (env?: Record<string, string>) => RelayProcess }> {
  const { databaseUrl, kafkaBrokers } = testServers();
  const fixture = await createRelayFixture(databaseUrl, prefix, options);
  const relays: RelayProcess[] = [];
  onTestFinished(async () => {
    for (const relay of relays) {
      if (relay.child.exitCode === null && relay.child.signalCode === null) {
        relay.kill('SIGKILL');
        await relay.exited();
      }
    }
    await fixture.close();
  });
  return {
    fixture,
    start: (env = {}) => {
      const relay = startRelay(fixture, options.brokers ?? kafkaBrokers, env);
      relays.push(relay);
      return relay;
    },
  };
}

/** Whether this machine can run private PostgreSQL and Kafka servers (suites that restart them). */
export function hasLocalServers(): boolean {
  try {
    findPostgresBinDir();
    return true;
  } catch {
    return false;
  }
}

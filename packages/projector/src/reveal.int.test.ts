// The reveal hook against real PostgreSQL and Kafka: a problem of the settings (a master key
// missing) fails the batch and retries it, a problem of one event sets that event aside.
import { toKafkaRecord, type DomainEvent } from '@sluice/contracts';
import { createDatabase, migrate } from '@sluice/database';
import { SluiceError } from '@sluice/errors';
import {
  createTestDatabase,
  createTopicsWith,
  testKafka,
  testServers,
  uniqueName,
  waitFor,
  fakeOpen,
  fakeSeal,
} from '@sluice/testkit';
import type { TestDatabase } from '@sluice/testkit';
import { shopCatalog } from '@sluice/shop-catalog';
import { sql, type Kysely } from 'kysely';
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  createProjector,
  defineProjection,
  projectorMigrations,
  type BatchSql,
  type Projector,
  type Reveal,
} from './index.js';

const { databaseUrl, kafkaBrokers } = testServers();
const kafka = testKafka(kafkaBrokers);
const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
let database: TestDatabase;
let db: Kysely<Record<string, never>>;
let running: Projector | undefined;

const people = defineProjection<Record<string, never>, typeof shopCatalog>({
  catalog: shopCatalog,
  name: 'reveal_people',
  aggregateTypes: ['customer'],
  personalData: 'reveal',
  tables: ['public.reveal_people'],
  async createTables(trx, table) {
    await sql`CREATE TABLE ${sql.table(table('public.reveal_people'))}
                (person_id text PRIMARY KEY, name text NOT NULL)`.execute(trx);
  },
  async apply(events, { trx, table }) {
    for (const event of events) {
      if (event.type !== 'customer.renamed.v1') continue;
      const { payload } = event;
      await sql`INSERT INTO ${sql.table(table('public.reveal_people'))} (person_id, name)
                VALUES (${payload.customerId}, ${payload.name})
                ON CONFLICT (person_id) DO UPDATE SET name = excluded.name`.execute(trx);
    }
  },
});

/** What the hook does: open names, or fail as a missing master key would. */
const hook = { masterKeyMissing: false, batches: new Set<BatchSql>() };
const reveal: Reveal = async (event, batch) => {
  hook.batches.add(batch);
  if (hook.masterKeyMissing)
    throw new SluiceError('master_key_unknown', 'wrapped by a master key not configured', {
      retriable: true,
    });
  const payload = event.payload as { customerId: string; name: string };
  const name = fakeOpen(payload.name);
  if (name === 'garbled')
    throw new SluiceError('envelope_invalid', 'A sealed field does not decrypt with its key');
  await batch.query('SELECT 1');
  return { ...event, payload: { ...payload, name } };
};

function named(personId: string, version: number, name: string): DomainEvent {
  return {
    id: randomUUID(),
    type: 'customer.renamed.v1',
    aggregateType: 'customer',
    aggregateId: personId,
    aggregateVersion: version,
    occurredAt: new Date().toISOString(),
    payload: { customerId: personId, name: fakeSeal(name) },
    metadata: {},
  };
}

async function start(prefix: string): Promise<Projector> {
  const projector = createProjector({
    db,
    kafka,
    projections: [people],
    topicPrefix: prefix,
    groupPrefix: `${prefix}g.`,
    retryDelayMs: 1,
    generationPollMs: 100,
    sessionTimeoutMs: 6000,
    stalledAfterMs: 1000,
    reveal,
  });
  await projector.start();
  running = projector;
  return projector;
}

async function produce(prefix: string, events: readonly DomainEvent[]): Promise<void> {
  const topic = `${prefix}outbox.event.customer`;
  const admin = kafka.admin();
  await admin.connect();
  try {
    await createTopicsWith(admin, [{ topic, numPartitions: 1 }]);
  } finally {
    await admin.disconnect();
  }
  const messages = events.map((event) => toKafkaRecord(event, { source: '/test' }));
  await producer.send({ topic, acks: -1, messages });
}

async function nameOf(personId: string): Promise<string | undefined> {
  const { rows } = await sql<{ name: string }>`
    SELECT name FROM public.reveal_people WHERE person_id = ${personId}`.execute(db);
  return rows[0]?.name;
}

async function parked(): Promise<{ reason: string; error: string | null }[]> {
  const { rows } = await sql<{ reason: string; error: string | null }>`
    SELECT reason, error FROM sluice.parked_events ORDER BY record_offset`.execute(db);
  return rows;
}

/** How many records a dead-letter topic holds (none when it does not exist). */
async function deadLetters(prefix: string): Promise<number> {
  const topic = `${prefix}sluice.dlq.reveal_people`;
  const admin = kafka.admin();
  await admin.connect();
  try {
    if (!(await admin.listTopics()).includes(topic)) return 0;
    const offsets = await admin.fetchTopicOffsets(topic);
    return offsets.reduce((sum, { high, low }) => sum + Number(high) - Number(low), 0);
  } finally {
    await admin.disconnect();
  }
}

beforeAll(async () => {
  database = await createTestDatabase(databaseUrl, 'reveal');
  db = createDatabase({ url: database.url, maxConnections: 6 });
  await migrate(db, 'projector_migrations', projectorMigrations);
  await producer.connect();
});

afterEach(async () => {
  await running?.stop();
  running = undefined;
  hook.masterKeyMissing = false;
  hook.batches.clear();
  await sql`DROP VIEW IF EXISTS public.reveal_people`.execute(db);
  await sql`DROP TABLE IF EXISTS public.reveal_people_g1`.execute(db);
  await sql`TRUNCATE sluice.projection_generations, sluice.projection_checkpoints,
            sluice.projection_versions, sluice.parked_events`.execute(db);
});

afterAll(async () => {
  await producer.disconnect();
  await db.destroy();
  await database.drop();
});

describe('revealing personal fields', () => {
  it('fails the whole batch on a master key problem: nothing parked or dead-lettered, readiness names the code, then it applies', async () => {
    const prefix = `${uniqueName('reveal')}.`;
    const person = randomUUID();
    hook.masterKeyMissing = true;
    const projector = await start(prefix);
    await produce(prefix, [named(person, 1, 'Ada'), named(person, 2, 'Ada L.')]);
    const health = await waitFor(
      async () => {
        const found = await projector.health();
        return found.ready ? undefined : found;
      },
      { timeoutMs: 30_000, message: 'readiness red' },
    );
    expect(health.problems).toEqual([
      expect.objectContaining({
        code: 'stalled',
        detail: expect.stringContaining('(master_key_unknown)'),
      }),
    ]);
    expect(await parked()).toEqual([]);
    expect(await deadLetters(prefix)).toBe(0);
    expect(await nameOf(person)).toBeUndefined();
    hook.masterKeyMissing = false;
    await waitFor(async () => (await nameOf(person)) === 'Ada L.', {
      timeoutMs: 30_000,
      message: 'applied once the master key is there',
    });
    await waitFor(async () => (await projector.health()).ready, { message: 'ready again' });
    expect(await parked()).toEqual([]);
  });

  it('sets aside an event whose own data is wrong, with one sql per batch', async () => {
    const prefix = `${uniqueName('reveal')}.`;
    const [garbled, fine] = [randomUUID(), randomUUID()];
    await start(prefix);
    await produce(prefix, [named(garbled, 1, 'garbled'), named(fine, 1, 'Grace')]);
    await waitFor(async () => (await nameOf(fine)) === 'Grace', { message: 'the other applied' });
    await waitFor(async () => (await parked()).length > 0, { message: 'the garbled one parked' });
    expect(await parked()).toEqual([
      { reason: 'envelope_invalid', error: expect.stringContaining('does not decrypt') as unknown },
    ]);
    expect(await deadLetters(prefix)).toBe(1);
    expect(hook.batches.size).toBeLessThanOrEqual(2);
  });

  it('sets aside an event with a protected field in clear text: it does not match the published schema', async () => {
    const prefix = `${uniqueName('reveal')}.`;
    const [clear, fine] = [randomUUID(), randomUUID()];
    await start(prefix);
    const inClear = named(clear, 1, 'Ada');
    await produce(prefix, [
      { ...inClear, payload: { customerId: clear, name: 'Ada Lovelace' } },
      named(fine, 1, 'Grace'),
    ]);
    await waitFor(async () => (await nameOf(fine)) === 'Grace', { message: 'the other applied' });
    await waitFor(async () => (await parked()).length > 0, { message: 'the one in clear parked' });
    const [row] = await parked();
    expect(row).toEqual({
      reason: 'schema_invalid',
      error: expect.stringMatching(/^customer.renamed.v1: \/name must match pattern/) as unknown,
    });
    expect(row?.error).not.toContain('Ada');
    expect(await deadLetters(prefix)).toBe(1);
    expect(await nameOf(clear)).toBeUndefined();
  });
});

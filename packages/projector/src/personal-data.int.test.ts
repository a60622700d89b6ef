// Personal data against real PostgreSQL and Kafka: only a projection that opts in receives clear
// values, and a handler failure that carries one (a unique violation naming an email) leaves
// no trace of it in the parked row, the dead letter or the error thrown to the consumer.
import { toKafkaRecord, type DomainEvent } from '@sluice/contracts';
import { createDatabase, migrate } from '@sluice/database';
import {
  createTestDatabase,
  createTopicsWith,
  readRecords,
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
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  applyBatch,
  createProjector,
  defineProjection,
  HandlerRetry,
  projectorMigrations,
  type Projector,
  type Reveal,
} from './index.js';

const { databaseUrl, kafkaBrokers } = testServers();
const kafka = testKafka(kafkaBrokers);
const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
const prefix = `${uniqueName('personal')}.`;
let database: TestDatabase;
let db: Kysely<Record<string, never>>;
let running: Projector | undefined;

const reveal: Reveal = (event) => {
  const payload = event.payload as { email: string; name: string };
  return Promise.resolve({
    ...event,
    payload: { ...payload, email: fakeOpen(payload.email), name: fakeOpen(payload.name) },
  });
};

/** Emails by customer; unique whatever their case, and a failure names the duplicate. */
const emails = defineProjection<Record<string, never>, typeof shopCatalog>({
  catalog: shopCatalog,
  name: 'pii_emails',
  personalData: 'reveal',
  aggregateTypes: ['customer'],
  tables: ['public.pii_emails'],
  async createTables(trx, table) {
    const name = table('public.pii_emails');
    await sql`CREATE TABLE ${sql.table(name)} (customer_id text PRIMARY KEY, email text NOT NULL)`.execute(
      trx,
    );
    await sql`CREATE UNIQUE INDEX ${sql.id(`${name.split('.')[1] ?? ''}_email`)}
                ON ${sql.table(name)} (lower(email))`.execute(trx);
  },
  async apply(events, { trx, table }) {
    for (const event of events) {
      if (event.type !== 'customer.registered.v1') continue;
      const { customerId, email } = event.payload;
      try {
        await sql`INSERT INTO ${sql.table(table('public.pii_emails'))} (customer_id, email)
                  VALUES (${customerId}, ${email})`.execute(trx);
      } catch (error) {
        // As many handlers report a database error: with its detail.
        const { message, detail } = error as { message: string; detail?: string };
        throw new Error(`${message}: ${detail ?? ''}`, { cause: error });
      }
    }
  },
});

/** The same events, for a projection that did not opt in. */
const sealedEmails = defineProjection<Record<string, never>, typeof shopCatalog>({
  catalog: shopCatalog,
  name: 'pii_sealed',
  aggregateTypes: ['customer'],
  tables: ['public.pii_sealed'],
  async createTables(trx, table) {
    await sql`CREATE TABLE ${sql.table(table('public.pii_sealed'))}
                (customer_id text PRIMARY KEY, email text NOT NULL)`.execute(trx);
  },
  async apply(events, { trx, table }) {
    for (const event of events) {
      if (event.type !== 'customer.registered.v1') continue;
      const { customerId, email } = event.payload;
      await sql`INSERT INTO ${sql.table(table('public.pii_sealed'))} (customer_id, email)
                VALUES (${customerId}, ${email})`.execute(trx);
    }
  },
});

function registered(email: string): DomainEvent {
  const customerId = randomUUID();
  return {
    id: randomUUID(),
    type: 'customer.registered.v1',
    aggregateType: 'customer',
    aggregateId: customerId,
    aggregateVersion: 1,
    occurredAt: new Date().toISOString(),
    payload: { customerId, email: fakeSeal(email), name: fakeSeal('Alice Liddell') },
    metadata: {},
  };
}

/** Every string an error holds, its causes' included (what a log line may print). */
function textsOf(error: unknown, depth = 0): string[] {
  if (typeof error === 'string') return [error];
  if (typeof error !== 'object' || error === null || depth > 8) return [];
  return Reflect.ownKeys(error).flatMap((key) =>
    textsOf((error as Record<PropertyKey, unknown>)[key], depth + 1),
  );
}

const EMAIL = /alice@example\.com/i;
const NAME = /Alice Liddell/i;

beforeAll(async () => {
  database = await createTestDatabase(databaseUrl, 'personal');
  db = createDatabase({ url: database.url, maxConnections: 6 });
  await migrate(db, 'projector_migrations', projectorMigrations);
  await producer.connect();
});

afterAll(async () => {
  await running?.stop();
  await producer.disconnect();
  await db.destroy();
  await database.drop();
});

describe('personal data', () => {
  const logged: unknown[] = [];
  const first = registered('alice@example.com');
  const duplicate = registered('Alice@Example.COM');
  const other = registered('bob@example.com');

  it('opens personal fields for a projection that opts in only, and redacts them from a failure', async () => {
    const topic = `${prefix}outbox.event.customer`;
    const admin = kafka.admin();
    await admin.connect();
    await createTopicsWith(admin, [{ topic, numPartitions: 1 }]);
    await admin.disconnect();
    running = createProjector({
      db,
      kafka,
      projections: [emails, sealedEmails],
      topicPrefix: prefix,
      groupPrefix: `${prefix}g.`,
      retryDelayMs: 1,
      maxAttempts: 2,
      generationPollMs: 100,
      sessionTimeoutMs: 6000,
      reveal,
      hooks: {
        failed: (_projection, error) => logged.push(error),
        crashed: (_projection, _generation, error) => logged.push(error),
      },
    });
    await running.start();
    const messages = [first, duplicate, other].map((e) => toKafkaRecord(e, { source: '/test' }));
    await producer.send({ topic, acks: -1, messages });

    const rows = async (table: string) =>
      (
        await sql<{ email: string }>`SELECT email FROM ${sql.table(table)} ORDER BY email`.execute(
          db,
        )
      ).rows;
    await waitFor(async () => (await rows('public.pii_sealed')).length === 3, {
      timeoutMs: 30_000,
      message: 'the sealed projection applied',
    });
    await waitFor(async () => (await rows('public.pii_emails')).length === 2, {
      timeoutMs: 30_000,
      message: 'the other customer applied',
    });
    expect(await rows('public.pii_emails')).toEqual([
      { email: 'alice@example.com' },
      { email: 'bob@example.com' },
    ]);
    for (const { email } of await rows('public.pii_sealed'))
      expect(email).toMatch(/^sluice:enc:v1:/);

    const { rows: parked } = await sql<{ reason: string; error: string }>`
      SELECT reason, error FROM sluice.parked_events`.execute(db);
    expect(parked).toHaveLength(1);
    expect(parked[0]?.reason).toBe('handler_failed');
    expect(parked[0]?.error).toContain('unique constraint "pii_emails_g1_email"');
    expect(parked[0]?.error).toContain('[redacted]');
    expect(parked[0]?.error).not.toMatch(EMAIL);

    const [letter] = (await readRecords(kafka, `${prefix}sluice.dlq.pii_emails`, 1)).map(
      (record) => record.headers,
    );
    const message = String(letter?.sluice_error_message);
    expect(message).toContain('unique constraint "pii_emails_g1_email"');
    expect(message).not.toMatch(EMAIL);
    for (const text of logged.flatMap((error) => textsOf(error))) {
      expect(text).not.toMatch(EMAIL);
      expect(text).not.toMatch(NAME);
    }
  });

  it('redacts the error a retried handler failure throws, keeping what tells the cause', async () => {
    await running?.stop();
    running = undefined;
    const again = registered('ALICE@example.com');
    const record = {
      topic: `${prefix}outbox.event.customer`,
      partition: 0,
      offset: 3n,
      ...toKafkaRecord(again, { source: '/test' }),
    };
    const thrown = await applyBatch(
      db,
      emails,
      [record],
      { send: () => Promise.resolve() },
      {
        topicPrefix: prefix,
        reveal,
        failures: new Map(),
        maxAttempts: 3,
        retryDelayMs: 1,
      },
    ).catch((error: unknown) => error);

    expect(thrown).toBeInstanceOf(HandlerRetry);
    const texts = textsOf(thrown);
    expect(texts.join('\n')).toContain('[redacted]');
    for (const text of texts) expect(text).not.toMatch(EMAIL);
    const database = (thrown as { cause: { cause: Record<string, unknown> } }).cause.cause;
    expect(database).toMatchObject({ code: '23505', constraint: 'pii_emails_g1_email' });
    expect(database.detail).toBe('Key (lower(email))=([redacted]) already exists.');
  });
});

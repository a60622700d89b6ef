// The projector runtime against real PostgreSQL and Kafka, with records produced the way the
// relay produces them: exactly-once application, duplicates absorbed, poison isolated.
import { toKafkaRecord, type DomainEvent } from '@sluice/contracts';
import { createDatabase, migrate } from '@sluice/database';
import {
  commitGroupOffsets,
  createTestDatabase,
  createTopics,
  testKafka,
  testServers,
  uniqueName,
  waitFor,
  type TestDatabase,
} from '@sluice/testkit';
import { shopCatalog } from '@sluice/shop-catalog';
import { sql, type Kysely } from 'kysely';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createProjector,
  defineProjection,
  listParked,
  projectorMigrations,
  redriveParked,
  skipParked,
  type DeadLetter,
  type DeadLetterSink,
  type Projector,
} from './index.js';

const { databaseUrl, kafkaBrokers } = testServers();
let database: TestDatabase;
let db: Kysely<Record<string, never>>;
let projector: Projector | undefined;
const prefix = `${uniqueName('proj')}.`;
const topic = `${prefix}outbox.event.cart`;
const kafka = testKafka(kafkaBrokers);
const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
/** Carts whose handler throws: the poison case. */
const explosive = new Set<string>();

const carts = defineProjection<Record<string, never>, typeof shopCatalog>({
  catalog: shopCatalog,
  name: 'test_carts',
  aggregateTypes: ['cart'],
  tables: ['public.test_applied', 'public.test_cart_totals'],
  async createTables(trx, table) {
    await sql`CREATE TABLE ${sql.table(table('public.test_applied'))} (event_id uuid PRIMARY KEY)`.execute(
      trx,
    );
    await sql`CREATE TABLE ${sql.table(table('public.test_cart_totals'))}
                (cart_id text PRIMARY KEY, total_cents bigint NOT NULL, version bigint NOT NULL)`.execute(
      trx,
    );
  },
  async apply(events, { trx, table }) {
    for (const event of events) {
      if (explosive.has(event.aggregateId))
        throw new Error(`cannot project cart ${event.aggregateId}`);
      // Every application is recorded: a second one for the same event would violate the key.
      await sql`INSERT INTO ${sql.table(table('public.test_applied'))} (event_id) VALUES (${event.id}::uuid)`.execute(
        trx,
      );
      if (event.type === 'cart.item_added.v1') {
        const { quantity, unitPriceCents } = event.payload as {
          quantity: number;
          unitPriceCents: number;
        };
        await sql`INSERT INTO ${sql.table(table('public.test_cart_totals'))} AS t (cart_id, total_cents, version)
                  VALUES (${event.aggregateId}, ${quantity * unitPriceCents}, ${event.aggregateVersion})
                  ON CONFLICT (cart_id) DO UPDATE SET total_cents = t.total_cents + excluded.total_cents,
                  version = excluded.version`.execute(trx);
      }
    }
  },
});

function added(cartId: string, version: number, quantity = 1): DomainEvent {
  return {
    id: randomUUID(),
    type: 'cart.item_added.v1',
    aggregateType: 'cart',
    aggregateId: cartId,
    aggregateVersion: version,
    occurredAt: new Date().toISOString(),
    payload: {
      cartId,
      productId: '0190a6e2-8d7e-7c3a-9b1e-000000000001',
      quantity,
      unitPriceCents: 100,
    },
    metadata: {},
  };
}

async function produce(events: readonly DomainEvent[]): Promise<void> {
  await producer.send({
    topic,
    acks: -1,
    messages: events.map((event) => toKafkaRecord(event, { source: '/test' })),
  });
}

async function totals(): Promise<Record<string, number>> {
  const { rows } = await sql<{
    cart_id: string;
    total_cents: number;
  }>`SELECT cart_id, total_cents::int FROM test_cart_totals`.execute(db);
  return Object.fromEntries(rows.map((r) => [r.cart_id, r.total_cents]));
}

async function appliedCount(): Promise<number> {
  const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM test_applied`.execute(
    db,
  );
  return rows[0]?.n ?? 0;
}

beforeAll(async () => {
  database = await createTestDatabase(databaseUrl, 'projector');
  db = createDatabase({ url: database.url, maxConnections: 4 });
  await migrate(db, 'projector_migrations', projectorMigrations);
  // Tables that exist before the projector first runs are adopted as its first generation.
  await sql`CREATE TABLE test_applied (event_id uuid PRIMARY KEY);
            CREATE TABLE test_cart_totals (cart_id text PRIMARY KEY, total_cents bigint NOT NULL, version bigint NOT NULL)`.execute(
    db,
  );
  await createTopics(kafkaBrokers, [{ topic, numPartitions: 3 }]);
  await producer.connect();
  projector = await startProjector();
});

async function startProjector(): Promise<Projector> {
  const started = createProjector({
    db,
    kafka,
    projections: [carts],
    topicPrefix: prefix,
    groupPrefix: `${prefix}g.`,
    retryDelayMs: 1,
    generationPollMs: 100,
  });
  await started.start();
  return started;
}

afterAll(async () => {
  await projector?.stop();
  await producer.disconnect();
  await db.destroy();
  await database.drop();
});

describe('projector', () => {
  it('applies each event once, absorbing duplicates at new offsets', async () => {
    const cartA = randomUUID();
    const cartB = randomUUID();
    const events = [added(cartA, 1, 2), added(cartB, 1, 1), added(cartA, 2, 3), added(cartB, 2, 4)];
    await produce(events);
    await waitFor(async () => (await appliedCount()) === 4, {
      timeoutMs: 30_000,
      message: '4 events applied',
    });
    expect(await totals()).toMatchObject({ [cartA]: 500, [cartB]: 500 });

    // The relay re-sends after a crash: the same events at new offsets change nothing.
    await produce(events);
    await produce([added(cartA, 3, 1)]);
    await waitFor(async () => (await totals())[cartA] === 600, {
      timeoutMs: 30_000,
      message: 'v3 applied',
    });
    expect(await appliedCount()).toBe(5);
    expect((await totals())[cartB]).toBe(500);
  });

  it('dead-letters poison, parks only its aggregate, and lets the others flow', async () => {
    const good = randomUUID();
    const bad = randomUUID();
    const garbage = randomUUID();
    explosive.add(bad);
    await produce([added(bad, 1), added(good, 1)]);
    await producer.send({
      topic,
      acks: -1,
      messages: [
        {
          key: garbage,
          value: '{not json',
          headers: toKafkaRecord(added(garbage, 1), { source: '/t' }).headers,
        },
        { key: null, value: '{}', headers: { ce_specversion: '1.0' } },
      ],
    });
    await produce([added(bad, 2), added(good, 2)]);
    await waitFor(async () => (await totals())[good] === 200, {
      timeoutMs: 30_000,
      message: 'the good cart',
    });
    // Records of the four aggregates sit in different partitions: wait for all of them.
    const parked = await waitFor(
      async () => {
        const { rows } = await sql<{
          aggregate_id: string | null;
          reason: string;
          aggregate_version: number | null;
        }>`
          SELECT aggregate_id, reason, aggregate_version::int FROM sluice.parked_events
           WHERE projection = 'test_carts' ORDER BY aggregate_id, aggregate_version`.execute(db);
        return rows.length >= 4 ? rows : undefined;
      },
      { timeoutMs: 30_000, message: 'four parked records' },
    );
    expect(parked).toEqual(
      expect.arrayContaining([
        { aggregate_id: bad, reason: 'handler_failed', aggregate_version: 1 },
        { aggregate_id: bad, reason: 'behind_parked', aggregate_version: 2 },
        { aggregate_id: garbage, reason: 'record_malformed', aggregate_version: null },
        { aggregate_id: null, reason: 'record_malformed', aggregate_version: null },
      ]),
    );
    expect((await totals())[bad]).toBeUndefined();

    const dlq = testKafka(kafkaBrokers).consumer({ groupId: uniqueName('dlq') });
    const letters: Record<string, string>[] = [];
    await dlq.connect();
    await dlq.subscribe({ topic: `${prefix}sluice.dlq.test_carts`, fromBeginning: true });
    await dlq.run({
      eachMessage: async ({ message }) => {
        letters.push(
          Object.fromEntries(Object.entries(message.headers ?? {}).map(([k, v]) => [k, String(v)])),
        );
        await Promise.resolve();
      },
    });
    try {
      await waitFor(() => letters.length >= 3, {
        timeoutMs: 30_000,
        message: 'three dead letters',
      });
    } finally {
      await dlq.disconnect();
    }
    const byClass: Record<string, Record<string, string>> = Object.fromEntries(
      letters.map((h) => [h.sluice_error_class ?? '', h]),
    );
    expect(letters.map((h) => h.sluice_error_class).sort()).toEqual([
      'handler_failed',
      'record_malformed',
      'record_malformed',
    ]);
    expect(byClass.handler_failed).toMatchObject({
      sluice_error_projection: 'test_carts',
      sluice_error_topic: topic,
      sluice_error_attempts: '3',
      sluice_error_message: `cannot project cart ${bad}`,
      ce_subject: bad,
    });
    expect(byClass.handler_failed?.sluice_error_offset).toMatch(/^\d+$/);
    expect(byClass.handler_failed?.sluice_error_first_failure).toMatch(/^\d{4}-/);
  });

  it('redrives a parked aggregate once the cause is fixed, and skips what cannot be applied', async () => {
    const letters: DeadLetter[] = [];
    const sink: DeadLetterSink = {
      send: (_projection, batch) => {
        letters.push(...batch);
        return Promise.resolve();
      },
    };
    const parked = await listParked(db, 'test_carts');
    const bad = parked.find((p) => p.reason === 'handler_failed')?.aggregateId ?? '';
    expect(bad).not.toBe('');
    explosive.delete(bad);
    const redriven = await redriveParked(db, carts, { type: 'cart', id: bad }, sink, {});
    expect(redriven.result.applied).toBe(2);
    expect((await totals())[bad]).toBe(200);
    expect((await listParked(db, 'test_carts')).filter((p) => p.aggregateId === bad)).toEqual([]);

    const garbage = (await listParked(db, 'test_carts')).find(
      (p) => p.aggregateId !== null && p.reason === 'record_malformed',
    );
    expect(garbage).toBeDefined();
    await skipParked(
      db,
      carts,
      {
        topic: garbage?.topic ?? '',
        partition: garbage?.partition ?? 0,
        offset: garbage?.offset ?? '0',
      },
      sink,
      {},
    );
    expect(
      (await listParked(db, 'test_carts')).some(
        (p) =>
          p.offset === garbage?.offset &&
          p.partition === garbage.partition &&
          p.topic === garbage.topic,
      ),
    ).toBe(false);
    expect(letters).toEqual([]);
  });

  it('lists parked records in offset order, not in the order of their offsets as text', async () => {
    // Parked in one transaction, so at one time: offset 10 must still follow offset 9.
    await sql`
      INSERT INTO sluice.parked_events (projection, topic, partition, record_offset, aggregate_type,
          aggregate_id, aggregate_version, record_key, record_value, record_headers, reason, attempts)
      SELECT 'test_order', 't', 0, o, 'cart', 'c', o - 8, NULL, NULL, convert_to('[]', 'UTF8'), 'behind_parked', 0
        FROM generate_series(8, 11) AS o`.execute(db);
    const listed = await listParked(db, 'test_order');
    expect(listed.map((p) => p.offset)).toEqual(['8', '9', '10', '11']);
  });

  it('rebuilds blue/green: replays into a new generation, then swaps the readers to it', async () => {
    const before = await totals();
    const appliedBefore = await appliedCount();
    // Asked twice at once: one starts generation 2, the other is refused while it builds. (Asked
    // one after the other, a swap could come between them.)
    const attempts = await Promise.allSettled([
      projector?.rebuild('test_carts'),
      projector?.rebuild('test_carts'),
    ]);
    expect(attempts.flatMap((a) => (a.status === 'fulfilled' ? [a.value] : []))).toMatchObject([
      { generation: 2, instance: 'test_carts.g2', state: 'building' },
    ]);
    expect(
      attempts.flatMap((a) => (a.status === 'rejected' ? [a.reason as unknown] : [])),
    ).toMatchObject([{ code: 'rebuild_in_progress' }]);
    // Until the swap, readers see generation 1; it keeps applying new events meanwhile.
    const late = randomUUID();
    await produce([added(late, 1, 7)]);
    await waitFor(
      async () =>
        (await projector?.generations('test_carts'))?.generations.find((g) => g.generation === 2)
          ?.state === 'active',
      { timeoutMs: 30_000, message: 'generation 2 active' },
    );
    const { rows } = await sql<{ definition: string }>`
      SELECT pg_get_viewdef('public.test_cart_totals'::regclass) AS definition`.execute(db);
    expect(rows[0]?.definition).toContain('test_cart_totals_g2');
    await waitFor(async () => (await totals())[late] === 700, {
      timeoutMs: 30_000,
      message: 'the late event in generation 2',
    });
    // Every event applied once in the new tables, the views equal to the old ones.
    expect(await totals()).toEqual({ ...before, [late]: 700 });
    expect(await appliedCount()).toBe(appliedBefore + 1);
    const { generations } = (await projector?.generations('test_carts')) ?? { generations: [] };
    expect(generations.map((g) => [g.generation, g.state])).toEqual([
      [1, 'retired'],
      [2, 'active'],
    ]);
    // The retired generation's consumer group leaves Kafka, so lag tools stop reporting it.
    const admin = kafka.admin();
    await admin.connect();
    try {
      const groupIds = async () => (await admin.listGroups()).groups.map((g) => g.groupId);
      expect(await groupIds()).toContain(`${prefix}g.test_carts.g2`);
      await waitFor(async () => !(await groupIds()).includes(`${prefix}g.test_carts`), {
        timeoutMs: 30_000,
        message: "generation 1's consumer group deleted",
      });
    } finally {
      await admin.disconnect();
    }
  });

  it('starts each partition at its checkpoint, even where Kafka committed offsets past it', async () => {
    // A process that died with fetched batches in hand may have committed offsets it never
    // applied; a partition that receives nothing new would never show the gap.
    await projector?.stop();
    const cart = randomUUID();
    await produce([added(cart, 1, 4), added(cart, 2, 5)]);
    await commitGroupOffsets(kafka, `${prefix}g.test_carts.g2`, topic, 'latest');
    projector = await startProjector();
    // A join can wait out the session timeout (30 s) on a loaded machine before it fetches.
    await waitFor(async () => (await totals())[cart] === 900, {
      timeoutMs: 60_000,
      message: 'the events past the committed offsets applied',
    });
  });
});

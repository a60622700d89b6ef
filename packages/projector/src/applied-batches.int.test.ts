// A batch's bookkeeping against real PostgreSQL: its round trips (the checkpoints locked and the
// aggregates read in one, progress saved with the commit), what a batch that waited for another
// process's checkpoint lock reads, several projections' batches applied in one transaction (and
// alone when one of them fails), and the event journey's record of applied batches: one row
// per partition of a batch, written by the checkpoint's own statement, none when recording is
// off, and old rows deleted by the retention.
import { toKafkaRecord, type DomainEvent } from '@sluice/contracts';
import { createDatabase, migrate } from '@sluice/database';
import { shopCatalog } from '@sluice/shop-catalog';
import {
  createTestDatabase,
  roundTrips,
  testServers,
  waitFor,
  type TestDatabase,
} from '@sluice/testkit';
import { Kysely, PostgresDialect, sql, type KyselyPlugin } from 'kysely';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { purgeAppliedBatches } from './applied-batches.js';
import { createBatchGroup } from './batch-group.js';
import type { BatchRequest } from './batch.js';
import { applyAlone } from './consume.js';
import { instanceOf } from './generations.js';
import { applyBatch, defineProjection, projectorMigrations } from './index.js';
import type { IncomingRecord } from './records.js';

let database: TestDatabase;
let db: Kysely<Record<string, never>>;
/** Statements sent through `counted` (not the transaction's begin and commit). */
let statements = 0;
const counting: KyselyPlugin = {
  transformQuery: ({ node }) => {
    statements += 1;
    return node;
  },
  transformResult: ({ result }) => Promise.resolve(result),
};
let counted: Kysely<Record<string, never>>;

const carts = defineProjection<Record<string, never>, typeof shopCatalog>({
  catalog: shopCatalog,
  name: 'journey_carts',
  aggregateTypes: ['cart'],
  tables: [],
  async createTables() {},
  async apply(_events, { trx }) {
    await sql`SELECT 1`.execute(trx);
  },
});

const noLetters = { send: () => Promise.resolve() };

beforeAll(async () => {
  database = await createTestDatabase(testServers().databaseUrl, 'applied_batches');
  db = createDatabase({ url: database.url, maxConnections: 2 });
  counted = db.withPlugin(counting);
  await migrate(db, 'projector_migrations', projectorMigrations);
});

afterAll(async () => {
  await db.destroy();
  await database.drop();
});

function records(topic: string, partition: number, from: number, cartId: string, count: number) {
  return Array.from({ length: count }, (_, i): IncomingRecord => {
    const event: DomainEvent = {
      id: randomUUID(),
      type: 'cart.item_added.v1',
      aggregateType: 'cart',
      aggregateId: cartId,
      aggregateVersion: from + i + 1,
      occurredAt: new Date().toISOString(),
      payload: { cartId, productId: randomUUID(), quantity: 1, unitPriceCents: 100 },
      metadata: {},
    };
    const record = toKafkaRecord(event, { source: '/test' });
    return {
      topic,
      partition,
      offset: BigInt(from + i),
      key: record.key,
      value: record.value,
      headers: record.headers,
    };
  });
}

async function batchRows() {
  const { rows } = await sql<{
    projection: string;
    generation: number;
    topic: string;
    partition: number;
    from_offset: string;
    to_offset: string;
  }>`SELECT projection, generation, topic, partition, from_offset::text, to_offset::text
       FROM sluice.projection_applied_batches ORDER BY topic, partition, from_offset`.execute(db);
  return rows;
}

/** How many round trips `run` takes to PostgreSQL. */
const trips = async (run: () => Promise<unknown>): Promise<number> =>
  (await roundTrips(run)).trips.length;

/** Three of a cart's four records applied through `on` (its round trips), then all four. */
async function appliedTwice(on: Kysely<Record<string, never>>, partition: number) {
  const four = records('outbox.event.cart', partition, 0, randomUUID(), 4);
  const options = { generation: 3, recordBatches: false };
  const sent = await trips(() => applyBatch(on, carts, four.slice(0, 3), noLetters, options));
  const again = await applyBatch(on, carts, four, noLetters, options);
  return { sent, again: again.result };
}

/** Another connection's transaction holding `instance`'s new checkpoint of a cart partition. */
async function holdCheckpoint(instance: string, partition: number): Promise<pg.Client> {
  const holder = new pg.Client({ connectionString: database.url });
  await holder.connect();
  try {
    await holder.query('BEGIN');
    await holder.query(
      `INSERT INTO sluice.projection_checkpoints (projection, topic, partition, next_offset)
       VALUES ($1, 'outbox.event.cart', $2, 0)`,
      [instance, partition],
    );
    return holder;
  } catch (error) {
    await holder.end();
    throw error;
  }
}

describe('a batch', () => {
  it('takes two round trips besides its handler’s: checkpoints locked and aggregates read; progress saved with the commit', async () => {
    const { sent, again } = await appliedTwice(db, 2);
    // BEGIN, checkpoints, versions and parked; the handler's statement; versions and
    // checkpoints, COMMIT.
    expect(sent).toBe(3);
    expect(again).toMatchObject({ applied: 1, duplicates: 3 });
  });

  it('on a pool not made by createDatabase, sends them one at a time with the same outcome', async () => {
    const pool = new pg.Pool({ connectionString: database.url, max: 1 });
    const foreign = new Kysely<Record<string, never>>({ dialect: new PostgresDialect({ pool }) });
    try {
      const { sent, again } = await appliedTwice(foreign, 3);
      expect(sent).toBe(6);
      expect(again).toMatchObject({ applied: 1, duplicates: 3 });
    } finally {
      await foreign.destroy();
    }
  });

  it('that waited for another process’s checkpoint lock reads the versions it committed', async () => {
    const cart = randomUUID();
    const batch = records('outbox.event.cart', 4, 0, cart, 3);
    const instance = instanceOf(carts.name, 1);
    const holder = await holdCheckpoint(instance, 4);
    try {
      const waiting = applyBatch(db, carts, batch, noLetters, { recordBatches: false });
      await waitFor(
        async () => {
          const { rows } = await holder.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'`,
          );
          return (rows[0]?.n ?? 0) > 0;
        },
        { timeoutMs: 10_000, message: 'the batch waiting for the checkpoint lock' },
      );
      // Meanwhile the holder applied the same three events.
      await holder.query(
        `INSERT INTO sluice.projection_versions (projection, aggregate_type, aggregate_id, version)
         VALUES ($1, 'cart', $2, 3)`,
        [instance, cart],
      );
      await holder.query(
        `UPDATE sluice.projection_checkpoints SET next_offset = 3
          WHERE projection = $1 AND topic = 'outbox.event.cart' AND partition = 4`,
        [instance],
      );
      await holder.query('COMMIT');
      const { result } = await waiting;
      expect(result).toMatchObject({ applied: 0, duplicates: 3, belowCheckpoint: 0 });
    } finally {
      await holder.end();
    }
  });
});

/** Carts whose events make the `group_b` handler throw. */
const poison = new Set<string>();

/** A projection that records each event it applies in `public.<name>_applied` (once: a key). */
const recording = (name: 'group_a' | 'group_b') =>
  defineProjection<Record<string, never>, typeof shopCatalog>({
    catalog: shopCatalog,
    name,
    aggregateTypes: ['cart'],
    tables: [],
    async createTables() {},
    async apply(events, { trx }) {
      for (const event of events) {
        if (name === 'group_b' && poison.has(event.aggregateId)) throw new Error('poison');
        await sql`INSERT INTO ${sql.table(`public.${name}_applied`)} VALUES (${event.id}::uuid)`.execute(
          trx,
        );
      }
    },
  });
const groupA = recording('group_a');
const groupB = recording('group_b');

async function appliedIn(name: string): Promise<number> {
  const { rows } = await sql<{ n: number }>`
    SELECT count(*)::int AS n FROM ${sql.table(`public.${name}_applied`)}`.execute(db);
  return rows[0]?.n ?? 0;
}

describe('batches of several projections asked together', () => {
  const request = (
    projection: typeof groupA,
    records: IncomingRecord[],
  ): BatchRequest<Record<string, never>> => ({
    projection,
    records,
    deadLetters: noLetters,
    options: { recordBatches: false, maxAttempts: 1 },
  });
  /** Failures the groups reported, by projection. */
  const reported: { projection: string; error: unknown }[] = [];
  const report = (one: BatchRequest<Record<string, never>>, error: unknown) =>
    void reported.push({ projection: one.projection.name, error });
  const group = (on = db) => createBatchGroup(on, (one) => applyAlone(db, one), report);

  beforeAll(async () => {
    for (const name of ['group_a', 'group_b'])
      await sql`CREATE TABLE ${sql.table(`public.${name}_applied`)} (event_id uuid PRIMARY KEY)`.execute(
        db,
      );
  });

  it('apply in one transaction: checkpoints locked and aggregates read for all in one round trip', async () => {
    const batch = records('outbox.event.cart', 0, 0, randomUUID(), 3);
    const together = group();
    let results: Awaited<ReturnType<typeof together.apply>>[] = [];
    const sent = await trips(async () => {
      results = await Promise.all([
        together.apply(request(groupA, batch)),
        together.apply(request(groupB, batch)),
      ]);
    });
    // Locks and reads with BEGIN; each handler's three statements; versions, checkpoints, COMMIT.
    expect(sent).toBe(1 + 3 + 3 + 1);
    expect(results.map((r) => r.result.applied)).toEqual([3, 3]);
    expect([await appliedIn('group_a'), await appliedIn('group_b')]).toEqual([3, 3]);
    const again = await Promise.all([
      together.apply(request(groupA, batch)),
      together.apply(request(groupB, batch)),
    ]);
    expect(again.map((r) => r.result.duplicates)).toEqual([3, 3]);
  });

  it('of more than 500 records each apply alone, in a transaction of its own', async () => {
    let transactions = 0;
    // The group's own transactions, not those of the batches applied alone.
    const watched = Object.assign(Object.create(db) as typeof db, {
      transaction: () => {
        transactions += 1;
        return db.transaction();
      },
    });
    const together = group(watched);
    const ask = (batches: [IncomingRecord[], IncomingRecord[]]) =>
      Promise.all([
        together.apply(request(groupA, batches[0])),
        together.apply(request(groupB, batches[1])),
      ]);
    const large = records('outbox.event.cart', 20, 0, randomUUID(), 501);
    const small = records('outbox.event.cart', 21, 0, randomUUID(), 500);
    const [a, b] = await ask([large, small]);
    expect([a.result.applied, b.result.applied, transactions]).toEqual([501, 500, 0]);
    const [c, d] = await ask([small, records('outbox.event.cart', 22, 0, randomUUID(), 1)]);
    expect([c.result.applied, d.result.applied, transactions]).toEqual([500, 1, 1]);
  });

  it('do not wait with one whose checkpoint is locked: the others apply alone meanwhile', async () => {
    const cart = randomUUID();
    const batch = records('outbox.event.cart', 30, 0, cart, 2);
    const holder = await holdCheckpoint('group_b', 30);
    try {
      const before = await appliedIn('group_a');
      const together = group();
      const locked = together.apply(request(groupB, batch));
      const free = await together.apply(request(groupA, batch));
      expect(free.result.applied).toBe(2);
      expect(await appliedIn('group_a')).toBe(before + 2);
      await holder.query('COMMIT');
      expect((await locked).result.applied).toBe(2);
    } finally {
      await holder.end();
    }
    expect(reported).toEqual([]);
  });

  it('report a failure of the database for each of their projections, and apply each alone', async () => {
    const away = Object.assign(Object.create(db) as typeof db, {
      transaction: () => ({ execute: () => Promise.reject(new Error('database away')) }),
    });
    const batch = records('outbox.event.cart', 31, 0, randomUUID(), 1);
    const together = group(away);
    const both = await Promise.all([
      together.apply(request(groupA, batch)),
      together.apply(request(groupB, batch)),
    ]);
    expect(both.map((one) => one.result.applied)).toEqual([1, 1]);
    expect(reported.splice(0)).toEqual([
      { projection: 'group_a', error: new Error('database away') },
      { projection: 'group_b', error: new Error('database away') },
    ]);
  });

  it('apply alone when one fails: the other once, the failing one as it would alone', async () => {
    const bad = randomUUID();
    poison.add(bad);
    const batch = [
      ...records('outbox.event.cart', 1, 0, randomUUID(), 2),
      ...records('outbox.event.cart', 2, 0, bad, 2),
    ];
    const before = [await appliedIn('group_a'), await appliedIn('group_b')];
    const together = group();
    const [a, b] = await Promise.all([
      together.apply(request(groupA, batch)),
      together.apply(request(groupB, batch)),
    ]);
    expect(a.result).toMatchObject({ applied: 4, parked: 0 });
    // Its poison parked (the second behind the first), the rest applied.
    expect(b.result).toMatchObject({ applied: 2, parked: 2, deadLettered: 1 });
    // A handler's failure is its projection's to report, applied alone.
    expect(reported).toEqual([]);
    expect([await appliedIn('group_a'), await appliedIn('group_b')]).toEqual([
      (before[0] ?? 0) + 4,
      (before[1] ?? 0) + 2,
    ]);
  });

  it('apply a projection’s second batch of the same turn alone, and two processes’ groups of the same records without a deadlock', async () => {
    const carts = Array.from({ length: 6 }, () => randomUUID());
    const partitions = carts.map((cart, index) =>
      records('outbox.event.cart', 3 + index, 0, cart, 2),
    );
    const before = [await appliedIn('group_a'), await appliedIn('group_b')];
    const one = group();
    const two = group();
    const asked = partitions.flatMap((batch) => [
      one.apply(request(groupA, batch)),
      one.apply(request(groupB, batch)),
      two.apply(request(groupB, batch)),
      two.apply(request(groupA, batch)),
    ]);
    const results = await Promise.all(asked);
    const applied = results.reduce((sum, r) => sum + r.result.applied, 0);
    const duplicates = results.reduce((sum, r) => sum + r.result.duplicates, 0);
    expect([applied, duplicates]).toEqual([24, 24]);
    expect([await appliedIn('group_a'), await appliedIn('group_b')]).toEqual([
      (before[0] ?? 0) + 12,
      (before[1] ?? 0) + 12,
    ]);
  });
});

describe('sluice.projection_applied_batches', () => {
  it('records each partition of a batch in the checkpoint statement, at no extra round trip', async () => {
    const cart = randomUUID();
    statements = 0;
    const first = [
      ...records('outbox.event.cart', 0, 0, cart, 3),
      ...records('outbox.event.cart', 1, 0, randomUUID(), 2),
    ];
    await applyBatch(counted, carts, first, noLetters, { generation: 2 });
    // Between begin and commit: checkpoints; versions and parked; versions, checkpoints and
    // batches — and the handler's one statement.
    expect(statements).toBe(4);
    expect(await batchRows()).toEqual([
      {
        projection: 'journey_carts',
        generation: 2,
        topic: 'outbox.event.cart',
        partition: 0,
        from_offset: '0',
        to_offset: '2',
      },
      {
        projection: 'journey_carts',
        generation: 2,
        topic: 'outbox.event.cart',
        partition: 1,
        from_offset: '0',
        to_offset: '1',
      },
    ]);

    statements = 0;
    await applyBatch(counted, carts, records('outbox.event.cart', 0, 3, cart, 2), noLetters, {
      generation: 2,
      recordBatches: false,
    });
    expect(statements).toBe(4);
    expect(await batchRows()).toHaveLength(2);
  });

  it('deletes rows past the retention, in batches, and keeps the rest', async () => {
    await sql`
      INSERT INTO sluice.projection_applied_batches
             (projection, generation, topic, partition, from_offset, to_offset, applied_at)
      SELECT 'old', 1, 't', 0, n, n, now() - interval '3 hours' FROM generate_series(1, 25) n`.execute(
      db,
    );
    const before = (await batchRows()).length;
    const stop = purgeAppliedBatches(db, { retentionHours: 2, intervalMs: 50, batchRows: 10 });
    try {
      await waitFor(async () => (await batchRows()).length === before - 25, {
        timeoutMs: 10_000,
        message: 'the old rows deleted',
      });
    } finally {
      await stop();
    }
    expect((await batchRows()).every((row) => row.projection === 'journey_carts')).toBe(true);
  });
});

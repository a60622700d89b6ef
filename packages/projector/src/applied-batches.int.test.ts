// A batch's bookkeeping against real PostgreSQL: its round trips (the checkpoints locked and the
// aggregates read in one, progress saved with the commit), what a batch that waited for another
// process's checkpoint lock reads, and the event journey's record of applied batches: one row
// per partition of a batch, written by the checkpoint's own statement, none when recording is
// off, and old rows deleted by the retention.
import { toKafkaRecord, type DomainEvent } from '@sluice/contracts';
import { createDatabase, migrate } from '@sluice/database';
import { shopCatalog } from '@sluice/shop-catalog';
import { createTestDatabase, testServers, waitFor, type TestDatabase } from '@sluice/testkit';
import { Kysely, PostgresDialect, sql, type KyselyPlugin } from 'kysely';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { purgeAppliedBatches } from './applied-batches.js';
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

/** What `run` sends to PostgreSQL: one entry per round trip. */
async function trips(run: () => Promise<unknown>): Promise<number> {
  const query = vi.spyOn(pg.Client.prototype, 'query');
  try {
    await run();
    return query.mock.calls.length;
  } finally {
    query.mockRestore();
  }
}

describe('a batch', () => {
  it('takes three round trips besides its handler’s: checkpoints locked and aggregates read; progress saved with the commit', async () => {
    const four = records('outbox.event.cart', 2, 0, randomUUID(), 4);
    const sent = await trips(() =>
      applyBatch(db, carts, four.slice(0, 3), noLetters, {
        generation: 3,
        recordBatches: false,
      }),
    );
    // BEGIN, checkpoints, versions and parked; the handler's statement; versions and
    // checkpoints, COMMIT.
    expect(sent).toBe(3);
    const again = await applyBatch(db, carts, four, noLetters, {
      generation: 3,
      recordBatches: false,
    });
    expect(again.result).toMatchObject({ applied: 1, duplicates: 3 });
  });

  it('on a pool not made by createDatabase, sends them one at a time with the same outcome', async () => {
    const pool = new pg.Pool({ connectionString: database.url, max: 1 });
    const foreign = new Kysely<Record<string, never>>({ dialect: new PostgresDialect({ pool }) });
    try {
      const four = records('outbox.event.cart', 3, 0, randomUUID(), 4);
      const sent = await trips(() =>
        applyBatch(foreign, carts, four.slice(0, 3), noLetters, {
          generation: 3,
          recordBatches: false,
        }),
      );
      expect(sent).toBe(6);
      const again = await applyBatch(foreign, carts, four, noLetters, {
        generation: 3,
        recordBatches: false,
      });
      expect(again.result).toMatchObject({ applied: 1, duplicates: 3 });
    } finally {
      await foreign.destroy();
    }
  });

  it('that waited for another process’s checkpoint lock reads the versions it committed', async () => {
    const cart = randomUUID();
    const batch = records('outbox.event.cart', 4, 0, cart, 3);
    const instance = instanceOf(carts.name, 1);
    const holder = new pg.Client({ connectionString: database.url });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query(
        `INSERT INTO sluice.projection_checkpoints (projection, topic, partition, next_offset)
         VALUES ($1, 'outbox.event.cart', 4, 0)`,
        [instance],
      );
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

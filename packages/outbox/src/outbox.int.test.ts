import { defineCatalog, defineEvent, type NewEventOf } from '@sluice/contracts';
import { isSluiceError } from '@sluice/errors';
import { Type } from '@sinclair/typebox';
import pg from 'pg';
import { atCommit, createDatabase, migrate } from '@sluice/database';
import { createTestDatabase, testServers, type TestDatabase } from '@sluice/testkit';
import { CompiledQuery, Kysely, PostgresDialect, sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOutbox, outboxMigrations, outboxSchemaSql } from './index.js';

let database: TestDatabase;
let db: Kysely<Record<string, never>>;
const Id = Type.String({ format: 'uuid' });
/** A team's own catalog: carts, and a customer event that belongs to another aggregate. */
const catalog = defineCatalog({
  'cart.item_added.v1': defineEvent(
    'cart.item_added.v1',
    'cart',
    'Units of a product were put in a cart.',
    Type.Object({
      cartId: Id,
      productId: Id,
      quantity: Type.Integer({ minimum: 1 }),
      unitPriceCents: Type.Integer(),
    }),
  ),
  'customer.erased.v1': defineEvent(
    'customer.erased.v1',
    'customer',
    'A customer was erased.',
    Type.Object({ customerId: Id }),
  ),
});
type NewEvent = NewEventOf<typeof catalog>;
const outbox = createOutbox({ schema: 'shop', catalog });
const cartId = '0190a6e2-8d7e-7c3a-9b1e-000000000001';
const productId = '0190a6e2-8d7e-7c3a-9b1e-000000000002';
const added = (quantity: number, id = cartId): NewEvent => ({
  type: 'cart.item_added.v1',
  payload: { cartId: id, productId, quantity, unitPriceCents: 100 },
});

beforeAll(async () => {
  database = await createTestDatabase(testServers().databaseUrl, 'outbox');
  db = createDatabase({ url: database.url });
  await migrate(db, 'outbox_migrations', outboxMigrations({ schema: 'shop' }));
});
afterAll(async () => {
  await db.destroy();
  await database.drop();
});

async function rows(aggregateId = cartId) {
  const result = await sql<{
    id: string;
    aggregate_version: number;
    type: string;
    metadata: object;
  }>`
    SELECT id, aggregate_version, type, metadata FROM shop.outbox
     WHERE aggregate_id = ${aggregateId} ORDER BY aggregate_version`.execute(db);
  return result.rows;
}

async function caught(action: () => Promise<unknown>): Promise<unknown> {
  try {
    await action();
  } catch (error) {
    return error;
  }
  throw new Error('expected an error');
}

describe('append', () => {
  it('assigns UUIDv7 ids and consecutive versions, with the context as metadata', async () => {
    const appended = await db.transaction().execute((trx) =>
      outbox.append(trx, { type: 'cart', id: cartId, expectedVersion: 0 }, [added(1), added(2)], {
        correlationId: 'corr-1',
        actor: 'user:1',
        reason: 'test',
        traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
      }),
    );
    expect(appended.map((e) => e.aggregateVersion)).toEqual([1, 2]);
    for (const event of appended)
      expect(event.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab]/);
    await db
      .transaction()
      .execute((trx) =>
        outbox.append(trx, { type: 'cart', id: cartId, expectedVersion: 2 }, [added(3)]),
      );
    const stored = await rows();
    expect(stored.map((r) => r.aggregate_version)).toEqual([1, 2, 3]);
    expect(stored[0]?.metadata).toEqual({
      correlation_id: 'corr-1',
      actor: 'user:1',
      reason: 'test',
      traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
    });
  });

  it('counts versions across digit boundaries, appended one way or the other', async () => {
    const id = '0190a6e2-8d7e-7c3a-9b1e-000000000010';
    let version = 0;
    // Ends at 9, 10, 99, 100, 999, 1000 and 1001; the COMMIT-pipelined and the plain append in turn.
    for (const [index, count] of [9, 1, 89, 1, 899, 1, 1].entries()) {
      const events = Array.from({ length: count }, (_, i) => added(version + i + 1, id));
      const aggregate = { type: 'cart', id, expectedVersion: version };
      const appended = await db.transaction().execute(async (trx) => {
        if (index % 2 === 0) return outbox.append(trx, aggregate, events);
        const prepared = outbox.prepare(aggregate, events);
        await atCommit(trx, [CompiledQuery.raw(prepared.text, prepared.values)], prepared);
        return prepared.events;
      });
      expect(appended.map((e) => e.aggregateVersion)).toEqual(
        events.map((_, i) => version + i + 1),
      );
      version += count;
      // A version of fewer digits than the head's is stale.
      const stale = await caught(() =>
        db
          .transaction()
          .execute((trx) =>
            outbox.append(trx, { type: 'cart', id, expectedVersion: Math.floor(version / 10) }, [
              added(1, id),
            ]),
          ),
      );
      expect(isSluiceError(stale, 'version_conflict')).toBe(true);
    }
    const stored = await rows(id);
    expect(stored.map((r) => r.aggregate_version)).toEqual(
      Array.from({ length: 1001 }, (_, i) => i + 1),
    );
    // Ids grow with versions (UUIDv7), so ordering by either gives the same sequence.
    expect(stored.map((r) => r.id)).toEqual(stored.map((r) => r.id).sort());
  });

  it('refuses a stale or repeated version and writes nothing', async () => {
    const before = await rows();
    for (const expectedVersion of [0, 2, 4]) {
      const error = await caught(() =>
        db
          .transaction()
          .execute((trx) =>
            outbox.append(trx, { type: 'cart', id: cartId, expectedVersion }, [added(1)]),
          ),
      );
      expect(isSluiceError(error, 'version_conflict')).toBe(true);
    }
    expect(await rows()).toEqual(before);
  });

  it('validates every event before inserting any, and rolls back with the caller', async () => {
    const before = await rows();
    const invalid = {
      type: 'cart.item_added.v1',
      payload: { cartId, quantity: -1 },
    } as unknown as NewEvent;
    const unknown = { type: 'cart.teleported.v1', payload: {} } as unknown as NewEvent;
    const mismatch: NewEvent = { type: 'customer.erased.v1', payload: { customerId: cartId } };
    const cases: [NewEvent, string][] = [
      [invalid, 'event_payload_invalid'],
      [unknown, 'event_type_unknown'],
      [mismatch, 'event_aggregate_mismatch'],
    ];
    for (const [event, code] of cases) {
      const error = await caught(() =>
        db
          .transaction()
          .execute((trx) =>
            outbox.append(trx, { type: 'cart', id: cartId, expectedVersion: 3 }, [added(1), event]),
          ),
      );
      expect(isSluiceError(error, code), String(error)).toBe(true);
    }
    const rolledBack = await caught(() =>
      db.transaction().execute(async (trx) => {
        await outbox.append(trx, { type: 'cart', id: cartId, expectedVersion: 3 }, [added(1)]);
        throw new Error('caller failed after appending');
      }),
    );
    expect(String(rolledBack)).toMatch(/caller failed/);
    expect(await rows()).toEqual(before);
  });

  it('accepts only a transaction', async () => {
    const error = await caught(() =>
      outbox.append(db, { type: 'cart', id: cartId, expectedVersion: 3 }, [added(1)]),
    );
    expect(isSluiceError(error, 'outbox_requires_transaction')).toBe(true);
  });

  it('appends with a plain pg client inside BEGIN, and refuses one outside a transaction or a pool', async () => {
    const pool = new pg.Pool({ connectionString: database.url, max: 2 });
    const client = await pool.connect();
    try {
      const otherCart = '0190a6e2-8d7e-7c3a-9b1e-000000000009';
      const event: NewEvent = {
        type: 'cart.item_added.v1',
        payload: { cartId: otherCart, productId, quantity: 1, unitPriceCents: 5 },
      };
      const outside = await caught(() =>
        outbox.append(client, { type: 'cart', id: otherCart, expectedVersion: 0 }, [event]),
      );
      expect(isSluiceError(outside, 'outbox_requires_transaction')).toBe(true);
      const viaPool = await caught(() =>
        outbox.append(pool, { type: 'cart', id: otherCart, expectedVersion: 0 }, [event]),
      );
      expect(isSluiceError(viaPool, 'outbox_requires_transaction')).toBe(true);
      await client.query('BEGIN');
      await outbox.append(client, { type: 'cart', id: otherCart, expectedVersion: 0 }, [event]);
      await client.query('ROLLBACK');
      expect(await rows(otherCart)).toEqual([]);
      await client.query('BEGIN');
      await outbox.append(client, { type: 'cart', id: otherCart, expectedVersion: 0 }, [
        event,
        event,
      ]);
      await client.query('COMMIT');
      expect((await rows(otherCart)).map((r) => r.aggregate_version)).toEqual([1, 2]);
    } finally {
      client.release();
      await pool.end();
    }
  });
});

describe('prepare', () => {
  const otherCart = '0190a6e2-8d7e-7c3a-9b1e-000000000013';
  const appendAtCommit = (
    db: Kysely<Record<string, never>>,
    expectedVersion: number,
    id = otherCart,
  ) =>
    db.transaction().execute(async (trx) => {
      const prepared = outbox.prepare({ type: 'cart', id, expectedVersion }, [added(1, id)]);
      await atCommit(trx, [CompiledQuery.raw(prepared.text, prepared.values)], prepared);
      // Not appended yet, in the transaction itself: it goes with the COMMIT.
      const inTransaction = await sql<{ n: number }>`
        SELECT count(*)::int AS n FROM shop.outbox WHERE aggregate_id = ${id}`.execute(trx);
      expect(inTransaction.rows).toEqual([{ n: expectedVersion }]);
      return prepared.events;
    });

  it('appends with the COMMIT as append does, and a conflict fails the commit as version_conflict', async () => {
    const [first] = await appendAtCommit(db, 0);
    const [second] = await appendAtCommit(db, 1);
    expect((await rows(otherCart)).map((r) => [r.id, r.aggregate_version])).toEqual([
      [first?.id, 1],
      [second?.id, 2],
    ]);
    const before = await rows(otherCart);
    for (const expectedVersion of [0, 1, 3]) {
      const error = await caught(() =>
        db.transaction().execute(async (trx) => {
          await sql`INSERT INTO shop.outbox_heads VALUES ('cart', ${`state ${expectedVersion}`}, 1)`.execute(
            trx,
          );
          const prepared = outbox.prepare({ type: 'cart', id: otherCart, expectedVersion }, [
            added(1),
          ]);
          await atCommit(trx, [CompiledQuery.raw(prepared.text, prepared.values)], prepared);
        }),
      );
      expect(isSluiceError(error, 'version_conflict'), String(error)).toBe(true);
      expect((error as Error).message).toBe(
        `cart ${otherCart} is not at version ${expectedVersion}`,
      );
    }
    // Nothing of the failed transactions stayed.
    expect(await rows(otherCart)).toEqual(before);
    const heads =
      await sql`SELECT 1 FROM shop.outbox_heads WHERE aggregate_id LIKE 'state %'`.execute(db);
    expect(heads.rows).toEqual([]);
  });

  it('on a pool not made by createDatabase appends at once, with the same refusal', async () => {
    const pool = new pg.Pool({ connectionString: database.url, max: 1 });
    const foreign = new Kysely<Record<string, never>>({ dialect: new PostgresDialect({ pool }) });
    try {
      const id = '0190a6e2-8d7e-7c3a-9b1e-000000000014';
      await expect(
        foreign.transaction().execute(async (trx) => {
          const prepared = outbox.prepare({ type: 'cart', id, expectedVersion: 0 }, [added(1)]);
          await atCommit(trx, [CompiledQuery.raw(prepared.text, prepared.values)], prepared);
          // Appended at once, in the transaction: not committed yet.
          expect(await rows(id)).toEqual([]);
          return (
            await sql`SELECT count(*)::int AS n FROM shop.outbox WHERE aggregate_id = ${id}`.execute(
              trx,
            )
          ).rows;
        }),
      ).resolves.toEqual([{ n: 1 }]);
      const error = await caught(() => appendAtCommit(foreign, 0, id));
      expect(isSluiceError(error, 'version_conflict')).toBe(true);
      expect(await rows(id)).toHaveLength(1);
    } finally {
      await foreign.destroy();
    }
  });

  it('names a conflict in a schema whose name needs quoting, or PostgreSQL shortens', async () => {
    for (const schema of ['Odd "Schema"', `s${'x'.repeat(70)}`]) {
      await sql.raw(outboxSchemaSql(schema)).execute(db);
      const odd = createOutbox({ schema, catalog });
      const appendOdd = (expectedVersion: number) =>
        db.transaction().execute(async (trx) => {
          const prepared = odd.prepare({ type: 'cart', id: cartId, expectedVersion }, [added(1)]);
          await atCommit(trx, [CompiledQuery.raw(prepared.text, prepared.values)], prepared);
        });
      await appendOdd(0);
      const error = await caught(() => appendOdd(0));
      expect(isSluiceError(error, 'version_conflict'), String(error)).toBe(true);
      await appendOdd(1);
    }
  });

  it('passes other errors through, and without events does nothing', async () => {
    const prepared = outbox.prepare({ type: 'cart', id: cartId, expectedVersion: 9 }, [added(1)]);
    const refusal = (fields: object) => Object.assign(new Error('refused'), fields);
    const unclaimed = { code: '23502', table: 'outbox', column: 'aggregate_version' };
    expect(prepared.refused(refusal(unclaimed))).toMatchObject({ code: 'version_conflict' });
    for (const other of [
      refusal({ ...unclaimed, code: '23505' }),
      refusal({ ...unclaimed, table: 'invoices' }),
      refusal({ ...unclaimed, column: 'type' }),
      new Error('connection terminated'),
    ])
      expect(prepared.refused(other)).toBe(other);
    const empty = outbox.prepare({ type: 'cart', id: cartId, expectedVersion: 9 }, []);
    expect(empty.events).toEqual([]);
    const before = await rows();
    await db.transaction().execute(async (trx) => {
      await atCommit(trx, [CompiledQuery.raw(empty.text, empty.values)], empty);
    });
    expect(await rows()).toEqual(before);
    expect(() =>
      outbox.prepare({ type: 'customer', id: cartId, expectedVersion: 0 }, [added(1)]),
    ).toThrow(expect.objectContaining({ code: 'event_aggregate_mismatch' }));
  });
});

describe('purge', () => {
  it('deletes old rows in batches, keeps young ones, and versions never repeat afterwards', async () => {
    const aggregateId = '0190a6e2-8d7e-7c3a-9b1e-000000000003';
    const events = Array.from({ length: 25 }, () => ({
      type: 'cart.item_added.v1' as const,
      payload: { cartId: aggregateId, productId, quantity: 1, unitPriceCents: 1 },
    }));
    await db
      .transaction()
      .execute((trx) =>
        outbox.append(trx, { type: 'cart', id: aggregateId, expectedVersion: 0 }, events),
      );
    await sql`UPDATE shop.outbox SET occurred_at = now() - interval '8 days' WHERE aggregate_id = ${aggregateId} AND aggregate_version <= 20`.execute(
      db,
    );
    const purged = await outbox.purge(db, {
      olderThan: new Date(Date.now() - 7 * 86_400_000),
      batchSize: 6,
    });
    expect(purged).toBe(20);
    expect((await rows(aggregateId)).map((r) => r.aggregate_version)).toEqual([21, 22, 23, 24, 25]);
    const next = await db
      .transaction()
      .execute((trx) =>
        outbox.append(trx, { type: 'cart', id: aggregateId, expectedVersion: 25 }, [
          events[0] as NewEvent,
        ]),
      );
    expect(next[0]?.aggregateVersion).toBe(26);
  });
});

// The pool against a real PostgreSQL: statements run often become prepared statements.
import { createTestDatabase, testServers, type TestDatabase } from '@sluice/testkit';
import { sql, type Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Migration } from 'kysely/migration';
import { createDatabase, migrate } from './index.js';

const { databaseUrl } = testServers();
let database: TestDatabase;

beforeAll(async () => {
  database = await createTestDatabase(databaseUrl, 'database');
});
afterAll(async () => {
  await database.drop();
});

/** Runs `test` on a one-connection pool with `prepareThreshold`, then closes the pool. */
async function withPool(
  prepareThreshold: number,
  test: (db: Kysely<unknown>) => Promise<void>,
): Promise<void> {
  const db = createDatabase<unknown>({ url: database.url, maxConnections: 1, prepareThreshold });
  try {
    await test(db);
  } finally {
    await db.destroy();
  }
}

/** The statements prepared on the (only) connection of `db`. */
async function prepared(db: Kysely<unknown>): Promise<string[]> {
  const { rows } = await sql<{ statement: string }>`
    SELECT statement FROM pg_prepared_statements
     WHERE NOT from_sql AND statement NOT LIKE '%pg_prepared_statements%' ORDER BY prepare_time`.execute(
    db,
  );
  return rows.map((row) => row.statement);
}

describe('createDatabase', () => {
  it('prepares a statement once it has run prepareThreshold times, and not before', async () => {
    await withPool(3, async (db) => {
      const square = (n: number) =>
        sql<{ n: number }>`SELECT ${n}::int * ${n}::int AS n`.execute(db);
      await square(1);
      await square(2);
      expect(await prepared(db)).toEqual([]);
      const { rows } = await square(3);
      expect(rows).toEqual([{ n: 9 }]);
      expect(await prepared(db)).toEqual(['SELECT $1::int * $2::int AS n']);
      expect((await square(4)).rows).toEqual([{ n: 16 }]);
      // Transaction control is never prepared.
      for (let i = 0; i < 4; i += 1)
        await db
          .transaction()
          .execute((trx) => sql`SELECT ${i}::int * ${i}::int AS n`.execute(trx));
      expect(await prepared(db)).toEqual(['SELECT $1::int * $2::int AS n']);
    });
  });

  it('prepares nothing with prepareThreshold 0', async () => {
    await withPool(0, async (db) => {
      for (let i = 0; i < 10; i += 1) await sql`SELECT ${i}::int AS n`.execute(db);
      expect(await prepared(db)).toEqual([]);
    });
  });

  it('a prepared read follows a view recreated over another table (a rebuild swap)', async () => {
    await withPool(1, async (db) => {
      await sql`CREATE TABLE swap_g1 (id int PRIMARY KEY, label text NOT NULL)`.execute(db);
      await sql`CREATE TABLE swap_g2 (id int PRIMARY KEY, label text NOT NULL)`.execute(db);
      await sql`INSERT INTO swap_g1 VALUES (1, 'old'); INSERT INTO swap_g2 VALUES (1, 'new')`.execute(
        db,
      );
      await sql`CREATE VIEW swap AS SELECT * FROM swap_g1`.execute(db);
      const read = async () =>
        (await sql<{ label: string }>`SELECT label FROM swap WHERE id = ${1}`.execute(db)).rows;
      for (let i = 0; i < 6; i += 1) expect(await read()).toEqual([{ label: 'old' }]);
      await db.transaction().execute(async (trx) => {
        await sql`DROP VIEW swap`.execute(trx);
        await sql`CREATE VIEW swap AS SELECT * FROM swap_g2`.execute(trx);
      });
      expect(await read()).toEqual([{ label: 'new' }]);
      // A view whose columns change fails the prepared read once; the next one prepares afresh.
      await sql`DROP VIEW swap`.execute(db);
      await sql`CREATE VIEW swap AS SELECT id, length(label) AS label FROM swap_g2`.execute(db);
      await expect(read()).rejects.toThrow(/cached plan must not change result type/);
      expect(await read()).toEqual([{ label: 3 }]);
    });
  });
});

describe('migrate', () => {
  /** A migration that counts its runs in `public.migration_runs`. */
  const counting = (name: string): Migration => ({
    async up(db) {
      await sql`CREATE TABLE IF NOT EXISTS public.migration_runs (name text)`.execute(db);
      await sql`INSERT INTO public.migration_runs VALUES (${name})`.execute(db);
    },
  });

  it('lets sets that share a table keep each other’s migrations when shared, and refuses otherwise', async () => {
    await withPool(0, async (db) => {
      const first = { '0001_a': counting('0001_a') };
      const second = { '0001_b': counting('0001_b') };
      await migrate(db, 'shared_migrations', first, { shared: true });
      await migrate(db, 'shared_migrations', second, { shared: true });
      await migrate(
        db,
        'shared_migrations',
        { ...first, '0002_a': counting('0002_a') },
        { shared: true },
      );
      await expect(migrate(db, 'shared_migrations', second)).rejects.toMatchObject({
        code: 'migration_failed',
      });
      const { rows } = await sql<{ name: string }>`
        SELECT name FROM public.migration_runs ORDER BY name`.execute(db);
      expect(rows.map((row) => row.name)).toEqual(['0001_a', '0001_b', '0002_a']);
    });
  });

  it('applies a set whole or not at all', async () => {
    await withPool(0, async (db) => {
      const failing: Migration = {
        up: () => Promise.reject(new Error('not this time')),
      };
      await expect(
        migrate(db, 'whole_migrations', { '0001_c': counting('0001_c'), '0002_c': failing }),
      ).rejects.toMatchObject({ code: 'migration_failed', message: 'Migration 0002_c failed' });
      const { rows } = await sql<{ name: string }>`
        SELECT name FROM public.migration_runs WHERE name = '0001_c'`.execute(db);
      expect(rows).toEqual([]);
      expect(await tableExists(db, 'sluice.whole_migrations')).toBe(false);
    });
  });

  it('lets concurrent callers with different sets all succeed on a table none created yet', async () => {
    const db = createDatabase<unknown>({ url: database.url, maxConnections: 8 });
    try {
      const sets = Array.from({ length: 6 }, (_, i) => ({
        [`0001_raced_${i}`]: counting(`r${i}`),
      }));
      await Promise.all(sets.map((set) => migrate(db, 'raced_migrations', set, { shared: true })));
      const { rows } = await sql<{ name: string }>`
        SELECT name FROM sluice.raced_migrations ORDER BY name`.execute(db);
      expect(rows.map((row) => row.name)).toEqual(sets.flatMap((set) => Object.keys(set)));
    } finally {
      await db.destroy();
    }
  });
});

async function tableExists(db: Kysely<unknown>, name: string): Promise<boolean> {
  const { rows } = await sql<{ exists: boolean }>`
    SELECT to_regclass(${name}) IS NOT NULL AS exists`.execute(db);
  return rows[0]?.exists === true;
}

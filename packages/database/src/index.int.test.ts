// The pool against a real PostgreSQL: statements run often become prepared statements.
import { createTestDatabase, roundTrips, testServers, type TestDatabase } from '@sluice/testkit';
import fc from 'fast-check';
import { Kysely, PostgresDialect, sql, type QueryResult } from 'kysely';
import pg from 'pg';
import { SluiceError } from '@sluice/errors';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Migration } from 'kysely/migration';
import { atCommit, createDatabase, migrate, pipelined } from './index.js';

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

/** Runs `test` on a one-connection Kysely over a plain pg pool (not createDatabase's). */
async function withForeignPool(test: (db: Kysely<unknown>) => Promise<void>): Promise<void> {
  const pool = new pg.Pool({ connectionString: database.url, max: 1 });
  const foreign = new Kysely<unknown>({ dialect: new PostgresDialect({ pool }) });
  try {
    await test(foreign);
  } finally {
    await foreign.destroy();
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

describe('transactions', () => {
  /** What each transaction sends to PostgreSQL: one entry per round trip. */
  async function sent(run: () => Promise<unknown>): Promise<string[]> {
    const query = vi.spyOn(pg.Client.prototype, 'query');
    try {
      await run();
      return query.mock.calls.map(([config]) => {
        if (typeof config === 'string') return config;
        const { text } = config as { text: string };
        return 'submit' in config ? `BEGIN, then ${text}` : text;
      });
    } finally {
      query.mockRestore();
    }
  }

  it('send BEGIN with their first statement: one round trip fewer, the statements in one transaction', async () => {
    await withPool(1, async (db) => {
      for (let i = 0; i < 3; i += 1) {
        const trips = await sent(() =>
          db.transaction().execute(async (trx) => {
            await sql`SELECT set_config('sluice.step', ${String(i)}, true)`.execute(trx);
            // A local setting lives as long as its transaction: the next statement sees it.
            const { rows } = await sql<{ step: string }>`
              SELECT current_setting('sluice.step', true) AS step, ${i}::int8 AS n`.execute(trx);
            expect(rows).toEqual([{ step: String(i), n: i }]);
          }),
        );
        expect(trips).toEqual([
          "BEGIN, then SELECT set_config('sluice.step', $1, true)",
          expect.stringMatching(/current_setting/),
          'commit',
        ]);
      }
      expect(await prepared(db)).toEqual([
        "SELECT set_config('sluice.step', $1, true)",
        expect.stringMatching(/current_setting/),
      ]);
    });
  });

  it('a first statement that fails leaves the transaction to roll back, and its prepared statement usable', async () => {
    await withPool(1, async (db) => {
      await sql`CREATE TABLE first_fails (id int PRIMARY KEY)`.execute(db);
      const insert = (trx: Kysely<unknown>, id: number) =>
        sql`INSERT INTO first_fails VALUES (${id})`.execute(trx);
      await insert(db, 1);
      const failed = db.transaction().execute(async (trx) => {
        await insert(trx, 1);
      });
      await expect(failed).rejects.toThrow(/duplicate key/);
      await db.transaction().execute(async (trx) => {
        await insert(trx, 2);
        await insert(trx, 3);
      });
      const rows = await sql<{ id: number }>`SELECT id FROM first_fails ORDER BY id`.execute(db);
      expect(rows.rows).toEqual([{ id: 1 }, { id: 2 }, { id: 3 }]);
    });
  });

  it('a BEGIN that fails runs nothing, not even statements after its error was caught', async () => {
    await withPool(1, async (db) => {
      await sql`CREATE TABLE begin_fails (id int PRIMARY KEY)`.execute(db);
      const insert = (trx: Kysely<unknown>, id: number) =>
        sql`INSERT INTO begin_fails VALUES (${id})`.execute(trx);
      for (let round = 0; round < 2; round += 1) {
        const failed = db.connection().execute(async (conn) => {
          await sql.raw('BEGIN ISOLATION LEVEL no such level').execute(conn);
          await insert(conn, 1).catch(() => undefined);
          await insert(conn, 2);
        });
        await expect(failed).rejects.toThrow(/syntax error/);
      }
      await db.transaction().execute((trx) => insert(trx, 3));
      const rows = await sql<{ id: number }>`SELECT id FROM begin_fails`.execute(db);
      expect(rows.rows).toEqual([{ id: 3 }]);
    });
  });

  it('a first statement whose values cannot be sent fails alone: the transaction goes on, the statement stays usable', async () => {
    await withPool(1, async (db) => {
      await sql`CREATE TABLE unsendable (id int PRIMARY KEY, v text)`.execute(db);
      const unsendable = {
        toPostgres: () => {
          throw new Error('cannot be sent');
        },
      };
      const insert = (trx: Kysely<unknown>, id: number, v: unknown) =>
        sql`INSERT INTO unsendable VALUES (${id}, ${v})`.execute(trx);
      // Prepared on its first run (threshold 1): once failing there, once when already prepared.
      for (const first of [unsendable, 'a']) {
        const id = first === 'a' ? 10 : 20;
        await db.transaction().execute(async (trx) => {
          if (first === 'a') await insert(trx, id - 1, first);
          await expect(insert(trx, id, unsendable)).rejects.toThrow('cannot be sent');
          await insert(trx, id, 'b');
        });
      }
      const { rows } = await sql<{ id: number }>`SELECT id FROM unsendable ORDER BY id`.execute(db);
      expect(rows).toEqual([{ id: 9 }, { id: 10 }, { id: 20 }]);
      const failed = db.transaction().execute((trx) => insert(trx, 30, unsendable));
      await expect(failed).rejects.toThrow('cannot be sent');
      // The first statement of a transaction starts at the transaction's start.
      const fresh = await sql<{ fresh: boolean }>`
        SELECT transaction_timestamp() = statement_timestamp() AS fresh`.execute(db);
      expect(fresh.rows).toEqual([{ fresh: true }]);
    });
  });

  it('a connection given back inside a transaction is not reused; ROLLBACK WORK ends a failed BEGIN', async () => {
    await withPool(1, async (db) => {
      await db.connection().execute(async (conn) => {
        await sql.raw('BEGIN').execute(conn);
        await sql`SELECT ${1}::int AS one`.execute(conn);
      });
      const fresh = await sql<{ fresh: boolean }>`
        SELECT transaction_timestamp() = statement_timestamp() AS fresh`.execute(db);
      expect(fresh.rows).toEqual([{ fresh: true }]);
      await db.connection().execute(async (conn) => {
        await sql.raw('BEGIN ISOLATION LEVEL no such level').execute(conn);
        await expect(sql`SELECT ${1}::int AS one`.execute(conn)).rejects.toThrow(/syntax error/);
        await expect(sql`SELECT ${2}::int AS two`.execute(conn)).rejects.toMatchObject({
          code: 'transaction_not_begun',
        });
        await sql.raw('ROLLBACK WORK').execute(conn);
        const { rows } = await sql<{ n: number }>`SELECT ${3}::int AS n`.execute(conn);
        expect(rows).toEqual([{ n: 3 }]);
      });
    });
  });

  it('that send nothing cost no round trip; a statement without parameters follows its BEGIN', async () => {
    await withPool(1, async (db) => {
      expect(await sent(() => db.transaction().execute(() => Promise.resolve()))).toEqual([]);
      const thrown = db.transaction().execute(() => Promise.reject(new Error('before any SQL')));
      await expect(thrown).rejects.toThrow('before any SQL');
      const plain = await sent(() =>
        db.transaction().execute((trx) => sql`SELECT 1 AS one`.execute(trx)),
      );
      expect(plain).toEqual(['begin', 'SELECT 1 AS one', 'commit']);
      // A text that begins a transaction and goes on runs as it is.
      await sql`CREATE TABLE whole_text (id int)`.execute(db);
      await sql`BEGIN; INSERT INTO whole_text VALUES (1); COMMIT`.execute(db);
      const { rows } = await sql<{ id: number }>`
        SELECT id FROM whole_text WHERE id = ${1}`.execute(db);
      expect(rows).toEqual([{ id: 1 }]);
    });
  });

  it('read int8 through the first statement as through any other', async () => {
    await withPool(1, async (db) => {
      const big = db
        .transaction()
        .execute((trx) => sql`SELECT ${'9007199254740993'}::int8 AS n`.execute(trx));
      await expect(big).rejects.toThrow(/exceeds JavaScript's safe integers/);
    });
  });
});

describe('pipelined', () => {
  /** What `run` sends to PostgreSQL: one entry per round trip. */
  const trips = async (run: () => Promise<unknown>): Promise<string[]> =>
    (await roundTrips(run)).trips.map((texts) => texts.join(' | '));

  const ticks = async (db: Kysely<unknown>) =>
    (await sql<{ n: number }>`SELECT last_value AS n FROM pipe_ticks`.execute(db)).rows[0]?.n;

  beforeAll(async () => {
    await withPool(0, async (db) => {
      await sql`CREATE TABLE pipe_items (id int PRIMARY KEY, label text NOT NULL)`.execute(db);
      // A sequence moves whether or not its transaction commits: it shows what ran. (Its first
      // nextval leaves last_value as it was: taken here.)
      await sql`CREATE SEQUENCE pipe_ticks`.execute(db);
      await sql`SELECT nextval('pipe_ticks')`.execute(db);
    });
  });

  it('sends its statements with the BEGIN in one round trip; each sees what the ones before it wrote', async () => {
    // Threshold 1: prepared in the first round, run as prepared in the second.
    await withPool(1, async (db) => {
      for (const id of [1, 2]) {
        let results: QueryResult<unknown>[] = [];
        const sent = await trips(() =>
          db.transaction().execute(async (trx) => {
            results = await pipelined(trx, [
              sql`INSERT INTO pipe_items VALUES (${id}, ${`item ${id}`})`.compile(trx),
              sql`SELECT count(*)::int AS n, max(label) AS last FROM pipe_items WHERE id <= ${id}`.compile(
                trx,
              ),
              sql`UPDATE pipe_items SET label = label || ${'!'} WHERE id = ${id}`.compile(trx),
            ]);
          }),
        );
        expect(sent).toEqual([
          expect.stringMatching(/^INSERT .* \| SELECT .* \| UPDATE /),
          'commit',
        ]);
        expect(results).toEqual([
          { rows: [], numAffectedRows: 1n },
          { rows: [{ n: id, last: `item ${id}` }] },
          { rows: [], numAffectedRows: 1n },
        ]);
      }
      expect(await prepared(db)).toHaveLength(3);
      const { rows } = await sql`SELECT * FROM pipe_items ORDER BY id`.execute(db);
      expect(rows).toEqual([
        { id: 1, label: 'item 1!' },
        { id: 2, label: 'item 2!' },
      ]);
    });
  });

  it('stops at the first statement that fails: nothing after it runs, the transaction rolls back, the connection goes on', async () => {
    await withPool(1, async (db) => {
      const before = await ticks(db);
      for (let round = 0; round < 2; round += 1) {
        const failed = db.transaction().execute(async (trx) => {
          await pipelined(trx, [
            sql`INSERT INTO pipe_items VALUES (${10 + round}, ${'kept?'})`.compile(trx),
            sql`INSERT INTO pipe_items VALUES (${1}, ${'duplicate'})`.compile(trx),
            sql`SELECT nextval(${'pipe_ticks'}) AS n`.compile(trx),
          ]);
        });
        await expect(failed).rejects.toThrow(/duplicate key/);
      }
      expect(await ticks(db)).toBe(before);
      const { rows } = await sql`SELECT id FROM pipe_items WHERE id >= 10`.execute(db);
      expect(rows).toEqual([]);
      // The prepared statements of the failed rounds are sound.
      await db.transaction().execute(async (trx) => {
        const [, , next] = await pipelined(trx, [
          sql`INSERT INTO pipe_items VALUES (${12}, ${'kept'})`.compile(trx),
          sql`INSERT INTO pipe_items VALUES (${13}, ${'duplicate'})`.compile(trx),
          sql`SELECT nextval(${'pipe_ticks'}) AS n`.compile(trx),
        ]);
        expect(next?.rows).toHaveLength(1);
      });
      expect((await sql`SELECT id FROM pipe_items WHERE id >= 10`.execute(db)).rows).toHaveLength(
        2,
      );
    });
  });

  it('a BEGIN that fails runs none of them; a row pg cannot read fails the pipeline', async () => {
    await withPool(1, async (db) => {
      const before = await ticks(db);
      const refused = db.connection().execute(async (conn) => {
        await sql.raw('BEGIN ISOLATION LEVEL no such level').execute(conn);
        // The connection inside its (refused) BEGIN, as pipelined sees a transaction.
        const trx = {
          isTransaction: true,
          executeQuery: conn.executeQuery.bind(conn),
        } as unknown as Kysely<unknown>;
        await pipelined(trx, [sql`SELECT nextval(${'pipe_ticks'})`.compile(conn)]).catch(
          () => undefined,
        );
        await sql`SELECT nextval(${'pipe_ticks'})`.execute(conn);
      });
      await expect(refused).rejects.toThrow(/syntax error/);
      expect(await ticks(db)).toBe(before);
      const unreadable = db
        .transaction()
        .execute((trx) =>
          pipelined(trx, [
            sql`SELECT ${2 ** 60}::int8 AS n`.compile(trx),
            sql`SELECT 1 AS one`.compile(trx),
          ]),
        );
      await expect(unreadable).rejects.toMatchObject({ code: 'int8_out_of_range' });
      const { rows } = await sql<{ ok: number }>`SELECT ${1}::int AS ok`.execute(db);
      expect(rows).toEqual([{ ok: 1 }]);
    });
  });

  it('a statement whose values cannot be sent fails the pipeline; what was sent before it ran, the connection goes on', async () => {
    await withPool(1, async (db) => {
      const unsendable = {
        toPostgres: () => {
          throw new Error('cannot be sent');
        },
      };
      const before = await ticks(db);
      for (let round = 0; round < 2; round += 1) {
        const failed = db
          .transaction()
          .execute((trx) =>
            pipelined(trx, [
              sql`SELECT nextval(${'pipe_ticks'}) AS n`.compile(trx),
              sql`SELECT ${unsendable}::text AS v`.compile(trx),
              sql`INSERT INTO pipe_items VALUES (${20 + round}, ${'after'})`.compile(trx),
            ]),
          );
        await expect(failed).rejects.toThrow('cannot be sent');
      }
      expect(await ticks(db)).toBe((before ?? 0) + 2);
      const { rows } = await sql`SELECT id FROM pipe_items WHERE id >= 20`.execute(db);
      expect(rows).toEqual([]);
      // One Sync ended each: the connection answers the next statement, prepared or not.
      const [next] = await db
        .transaction()
        .execute((trx) => pipelined(trx, [sql`SELECT ${'ok'}::text AS v`.compile(trx)]));
      expect(next?.rows).toEqual([{ v: 'ok' }]);
    });
  });

  it('sends nothing for no statements', async () => {
    await withPool(1, async (db) => {
      const sent = await trips(() =>
        db.transaction().execute(async (trx) => expect(await pipelined(trx, [])).toEqual([])),
      );
      expect(sent).toEqual([]);
    });
  });

  it('gives what the same statements give sent one at a time (generated)', async () => {
    await withPool(2, async (db) => {
      await sql`CREATE TABLE pipe_gen (id int PRIMARY KEY, n int NOT NULL)`.execute(db);
      await sql`INSERT INTO pipe_gen SELECT i, i * 10 FROM generate_series(1, 3) i`.execute(db);
      const statement = fc.oneof(
        fc.record({
          kind: fc.constant('insert'),
          id: fc.integer({ min: 1, max: 5 }),
          n: fc.integer({ min: -9, max: 9 }),
        }),
        fc.record({
          kind: fc.constant('update'),
          id: fc.integer({ min: 1, max: 5 }),
          n: fc.integer({ min: -9, max: 9 }),
        }),
        fc.record({
          kind: fc.constant('select'),
          id: fc.integer({ min: 1, max: 5 }),
          n: fc.constant(0),
        }),
        fc.record({
          kind: fc.constant('divide'),
          id: fc.constant(0),
          n: fc.integer({ min: 0, max: 2 }),
        }),
      );
      type Generated = { kind: string; id: number; n: number };
      const compile = (trx: Kysely<unknown>, { kind, id, n }: Generated) =>
        kind === 'insert'
          ? sql`INSERT INTO pipe_gen VALUES (${id}, ${n})`.compile(trx)
          : kind === 'update'
            ? sql`UPDATE pipe_gen SET n = n + ${n} WHERE id = ${id} RETURNING id, n`.compile(trx)
            : kind === 'select'
              ? sql`SELECT id, n, (SELECT count(*)::int FROM pipe_gen) AS rows FROM pipe_gen WHERE id = ${id}`.compile(
                  trx,
                )
              : sql`SELECT 6 / ${n}::int AS q`.compile(trx);
      /** What a transaction of `run` gave, and the table inside it; always rolled back. */
      const outcome = async (run: (trx: Kysely<unknown>) => Promise<unknown>) => {
        let seen: unknown;
        await db
          .transaction()
          .execute(async (trx) => {
            const given = await run(trx).then(
              (value) => ({ value }),
              (error: unknown) => ({ error: (error as Error).message }),
            );
            const table = await sql`SELECT * FROM pipe_gen ORDER BY id`.execute(trx);
            seen = { given, table: 'error' in given ? undefined : table.rows };
            throw new Error('roll back');
          })
          .catch(() => undefined);
        return seen;
      };
      await fc.assert(
        fc.asyncProperty(fc.array(statement, { minLength: 1, maxLength: 6 }), async (generated) => {
          const oneAtATime = await outcome(async (trx) => {
            const results = [];
            for (const one of generated) {
              const { rows, numAffectedRows } = await trx.executeQuery(compile(trx, one));
              results.push({ rows, ...(numAffectedRows === undefined ? {} : { numAffectedRows }) });
            }
            return results;
          });
          const together = await outcome((trx) =>
            pipelined(
              trx,
              generated.map((one) => compile(trx, one)),
            ),
          );
          expect(together).toEqual(oneAtATime);
        }),
        { numRuns: 150 },
      );
    });
  });

  it('is refused outside a transaction; on a pool not made by createDatabase it runs one at a time', async () => {
    await withPool(1, async (db) => {
      await expect(pipelined(db, [sql`SELECT 1`.compile(db)])).rejects.toMatchObject({
        code: 'pipeline_outside_transaction',
      });
    });
    await withForeignPool(async (foreign) => {
      // int8 as text on a plain pool.
      const before = Number(await ticks(foreign));
      let results: QueryResult<unknown>[] = [];
      const sent = await trips(() =>
        foreign.transaction().execute(async (trx) => {
          results = await pipelined(trx, [
            sql`SELECT nextval(${'pipe_ticks'})::int AS n`.compile(trx),
            sql`UPDATE pipe_items SET label = label WHERE id < ${0}`.compile(trx),
          ]);
        }),
      );
      expect(sent.filter((text) => /nextval|UPDATE/.test(text))).toHaveLength(2);
      expect(sent.some((text) => text.includes('sluice_pipeline'))).toBe(false);
      expect(results).toEqual([{ rows: [{ n: before + 1 }] }, { rows: [], numAffectedRows: 0n }]);
      const failing = foreign
        .transaction()
        .execute((trx) =>
          pipelined(trx, [
            sql`SELECT 1/0`.compile(trx),
            sql`SELECT nextval(${'pipe_ticks'})`.compile(trx),
          ]),
        );
      await expect(failing).rejects.toThrow(/division by zero/);
      expect(Number(await ticks(foreign))).toBe(before + 1);
    });
  });

  describe('atCommit', () => {
    const labelOf = async (db: Kysely<unknown>, id: number) =>
      (await sql<{ label: string }>`SELECT label FROM pipe_items WHERE id = ${id}`.execute(db))
        .rows[0]?.label;

    it('sends its statements with the COMMIT, after everything else the transaction ran', async () => {
      await withPool(1, async (db) => {
        const sent = await trips(() =>
          db.transaction().execute(async (trx) => {
            await atCommit(trx, [
              sql`UPDATE pipe_items SET label = label || ${'+at-commit'} WHERE id = ${100}`.compile(
                trx,
              ),
            ]);
            await sql`INSERT INTO pipe_items VALUES (${100}, ${'ten'})`.execute(trx);
            // Not run yet: the row as inserted.
            expect(await labelOf(trx, 100)).toBe('ten');
          }),
        );
        expect(sent).toEqual([
          expect.stringMatching(/INSERT/),
          expect.stringMatching(/SELECT label/),
          expect.stringMatching(/UPDATE .* \| COMMIT$/s),
        ]);
        expect(await labelOf(db, 100)).toBe('ten+at-commit');
        // Alone in its transaction: BEGIN, the statements and COMMIT in one round trip.
        const alone = await trips(() =>
          db
            .transaction()
            .execute((trx) =>
              atCommit(trx, [
                sql`UPDATE pipe_items SET label = ${'alone'} WHERE id = ${100}`.compile(trx),
              ]),
            ),
        );
        expect(alone).toHaveLength(1);
        expect(await labelOf(db, 100)).toBe('alone');
      });
    });

    it('fails the commit when one fails: nothing of the transaction stays, the connection goes on', async () => {
      await withPool(1, async (db) => {
        const before = await ticks(db);
        const run = db.transaction().execute(async (trx) => {
          await sql`INSERT INTO pipe_items VALUES (${101}, ${'eleven'})`.execute(trx);
          await atCommit(trx, [
            sql`SELECT nextval(${'pipe_ticks'})`.compile(trx),
            sql`INSERT INTO pipe_items VALUES (${101}, ${'again'})`.compile(trx),
            sql`SELECT nextval(${'pipe_ticks'})`.compile(trx),
          ]);
        });
        await expect(run).rejects.toMatchObject({ code: '23505' });
        expect(await labelOf(db, 101)).toBeUndefined();
        // The first ran, the one after the failure did not.
        expect(await ticks(db)).toBe((before ?? 0) + 1);
        await db.transaction().execute(async (trx) => {
          await atCommit(trx, [sql`INSERT INTO pipe_items VALUES (${101}, ${'ok'})`.compile(trx)]);
        });
        expect(await labelOf(db, 101)).toBe('ok');
      });
    });

    it("rejects with what the failed statement's `refused` makes of its error, on either pool, and of no other", async () => {
      const refusedBy = (who: string) => (error: Error) =>
        new Error(`${who}: ${(error as { code?: string }).code}`);
      const failingAt = (db: Kysely<unknown>, when: 'now' | 'atCommit') =>
        db.transaction().execute(async (trx) => {
          const duplicate = sql`INSERT INTO pipe_items VALUES (${103}, ${'twice'})`.compile(trx);
          const tick = sql`SELECT nextval(${'pipe_ticks'})`.compile(trx);
          await atCommit(trx, [tick], { refused: refusedBy('tick') });
          if (when === 'now') await trx.executeQuery(duplicate);
          else await atCommit(trx, [duplicate, tick], { refused: refusedBy('duplicate') });
        });
      const pools = [
        (run: (db: Kysely<unknown>) => Promise<void>) => withPool(1, run),
        withForeignPool,
      ];
      for (const withAnyPool of pools) {
        await withAnyPool(async (db) => {
          await sql`INSERT INTO pipe_items VALUES (${103}, ${'once'})`.execute(db);
          await expect(failingAt(db, 'atCommit')).rejects.toThrow('duplicate: 23505');
          await expect(failingAt(db, 'now')).rejects.toMatchObject({ code: '23505' });
          await sql`DELETE FROM pipe_items WHERE id = ${103}`.execute(db);
        });
      }
    });

    it('does not name a failure of the COMMIT itself, and a statement prepared again recovers', async () => {
      // A SluiceError, which says nothing of the statement's name: the name is settled first.
      const refused = (cause: Error) => new SluiceError('refused', 'refused', { cause });
      await withPool(1, async (db) => {
        // A constraint checked at COMMIT: the deferred statements ran, the COMMIT failed.
        await sql`CREATE TABLE at_commit_once (id int UNIQUE DEFERRABLE INITIALLY DEFERRED)`.execute(
          db,
        );
        const twice = db.transaction().execute(async (trx) => {
          await sql`INSERT INTO at_commit_once VALUES (${1}), (${1})`.execute(trx);
          await atCommit(trx, [sql`SELECT ${1}::int`.compile(trx)], { refused });
        });
        await expect(twice).rejects.toMatchObject({ code: '23505' });
        // A prepared deferred statement whose result columns changed fails once, named, then
        // runs prepared afresh.
        await sql`CREATE VIEW at_commit_view AS SELECT 1 AS n`.execute(db);
        const read = () =>
          db.transaction().execute(async (trx) => {
            await atCommit(trx, [sql`SELECT * FROM at_commit_view WHERE n > ${0}`.compile(trx)], {
              refused,
            });
          });
        for (let i = 0; i < 3; i += 1) await read();
        await sql`DROP VIEW at_commit_view`.execute(db);
        await sql`CREATE VIEW at_commit_view AS SELECT 'one'::text AS n2, 1 AS n`.execute(db);
        await expect(read()).rejects.toMatchObject({
          code: 'refused',
          cause: { message: expect.stringMatching(/cached plan must not change result type/) },
        });
        await read();
      });
    });

    it('runs nothing when the transaction rolls back', async () => {
      await withPool(1, async (db) => {
        const before = await ticks(db);
        const run = db.transaction().execute(async (trx) => {
          await sql`SELECT ${1}::int`.execute(trx);
          await atCommit(trx, [sql`SELECT nextval(${'pipe_ticks'})`.compile(trx)]);
          throw new Error('changed my mind');
        });
        await expect(run).rejects.toThrow('changed my mind');
        expect(await ticks(db)).toBe(before);
        const empty = db.transaction().execute(async (trx) => {
          await atCommit(trx, [sql`SELECT nextval(${'pipe_ticks'})`.compile(trx)]);
          throw new Error('nothing sent at all');
        });
        await expect(empty).rejects.toThrow('nothing sent at all');
        expect(await ticks(db)).toBe(before);
      });
    });

    it('is refused outside a transaction; on a pool not made by createDatabase it runs at once', async () => {
      await withPool(1, async (db) => {
        await expect(atCommit(db, [sql`SELECT 1`.compile(db)])).rejects.toMatchObject({
          code: 'pipeline_outside_transaction',
        });
      });
      await withForeignPool(async (foreign) => {
        await foreign.transaction().execute(async (trx) => {
          await atCommit(trx, [
            sql`INSERT INTO pipe_items VALUES (${102}, ${'at once'})`.compile(trx),
          ]);
          expect(await labelOf(trx, 102)).toBe('at once');
        });
        expect(await labelOf(foreign, 102)).toBe('at once');
      });
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

// prepareReplication against a real PostgreSQL: it refuses a publication that would hide outbox
// inserts (saying how to fix it), waits for an outbox that does not exist yet, and reports a slot
// it adopts.
import { outboxMigrations } from '@sluice/outbox';
import { createDatabase, migrate } from '@sluice/database';
import { Lsn, prepareReplication, type ReplicationNames } from '@sluice/relay';
import { testServers, uniqueName } from '@sluice/testkit';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRelayFixture, writeOutboxEvents, type RelayFixture } from './harness.js';

const { databaseUrl } = testServers();
const OUTBOX = { schema: 'shop', table: 'outbox' };
const FIX = 'then start the relay again: ';
const ALL_COLUMNS =
  'id, aggregate_type, aggregate_id, aggregate_version, type, payload, metadata, occurred_at';

let fixture: RelayFixture;
beforeAll(async () => {
  fixture = await createRelayFixture(databaseUrl, 'relay_setup');
  await fixture.pool.query('CREATE TABLE shop.other (id int PRIMARY KEY)');
});
afterAll(async () => {
  await fixture.close();
});

function namesFor(prefix: string): ReplicationNames {
  return {
    publication: uniqueName(`${prefix}_pub`),
    slot: uniqueName(`${prefix}_slot`),
    outbox: OUTBOX,
  };
}

async function slotExists(pool: pg.Pool, slot: string): Promise<boolean> {
  const { rowCount } = await pool.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [
    slot,
  ]);
  return rowCount === 1;
}

async function failure(url: string, names: ReplicationNames): Promise<Error & { code?: string }> {
  const outcome = await prepareReplication(url, names).then(
    async (state) => {
      await state.initialSnapshot?.abandon();
      return undefined;
    },
    (error: unknown) => error as Error & { code?: string },
  );
  if (outcome === undefined) throw new Error('prepareReplication succeeded');
  return outcome;
}

describe('publication check', () => {
  it.each([
    ['another table', 'FOR TABLE shop.other', ['does not include "shop"."outbox"']],
    [
      'updates only',
      `FOR TABLE shop.outbox WITH (publish = 'update')`,
      [`publishes no inserts (publish = 'update')`],
    ],
    [
      'a row filter',
      `FOR TABLE shop.outbox WHERE (false) WITH (publish = 'insert')`,
      ['filters the rows of "shop"."outbox" (WHERE false)'],
    ],
    [
      'a column list without metadata and occurred_at',
      `FOR TABLE shop.outbox (id, aggregate_type, aggregate_id, aggregate_version, type, payload)
         WITH (publish = 'insert')`,
      ['leaves out columns metadata, occurred_at of "shop"."outbox"'],
    ],
    [
      'everything wrong at once',
      `FOR TABLE shop.outbox (id) WHERE (aggregate_type = 'none') WITH (publish = 'delete, truncate')`,
      [
        `publishes no inserts (publish = 'delete, truncate')`,
        `filters the rows of "shop"."outbox" (WHERE (aggregate_type = 'none'::text))`,
        'leaves out columns aggregate_type, aggregate_id, aggregate_version, type, payload, metadata, occurred_at',
      ],
    ],
  ])(
    'refuses a publication of %s with publication_mismatch, and takes it once fixed as told',
    async (_, definition, problems) => {
      const names = namesFor('mismatch');
      await fixture.pool.query(
        `CREATE PUBLICATION ${pg.escapeIdentifier(names.publication)} ${definition}`,
      );
      const error = await failure(fixture.database.url, names);
      expect(error.code, error.message).toBe('publication_mismatch');
      expect(error.message).toContain(`Publication "${names.publication}"`);
      for (const problem of problems) expect(error.message).toContain(problem);
      expect(await slotExists(fixture.pool, names.slot)).toBe(false);

      expect(error.message).toContain(FIX);
      await fixture.pool.query(error.message.slice(error.message.indexOf(FIX) + FIX.length));
      const state = await prepareReplication(fixture.database.url, names);
      await state.initialSnapshot?.abandon();
      expect(state.created).toBe(true);
    },
  );

  it.each([
    ['all tables', 'FOR ALL TABLES'],
    ['the tables of its schema', `FOR TABLES IN SCHEMA shop WITH (publish = 'insert')`],
    [
      'a list of every column',
      `FOR TABLE shop.outbox (${ALL_COLUMNS}) WITH (publish = 'insert, update')`,
    ],
  ])('takes a publication of %s', async (_, definition) => {
    const names = namesFor('match');
    await fixture.pool.query(
      `CREATE PUBLICATION ${pg.escapeIdentifier(names.publication)} ${definition}`,
    );
    const state = await prepareReplication(fixture.database.url, names);
    await state.initialSnapshot?.abandon();
    expect(state.created).toBe(true);
  });

  it('says the slot it streamed from may have skipped events when the publication went wrong later', async () => {
    const names = namesFor('altered');
    const first = await prepareReplication(fixture.database.url, names);
    await first.initialSnapshot?.done();
    await fixture.pool.query(
      `ALTER PUBLICATION ${pg.escapeIdentifier(names.publication)} SET (publish = 'update')`,
    );
    const error = await failure(fixture.database.url, names);
    expect(error.code).toBe('publication_mismatch');
    expect(error.message).toContain(`Slot "${names.slot}" exists`);
    expect(error.message).toMatch(/reconcile/i);
  });

  it('waits, with a retriable outbox_missing, for an outbox that does not exist yet', async () => {
    const bare = await createRelayFixture(databaseUrl, 'relay_setup_bare', { migrate: false });
    try {
      const allTables = { ...namesFor('early'), publication: uniqueName('early_all') };
      await bare.pool.query(`CREATE PUBLICATION ${allTables.publication} FOR ALL TABLES`);
      const forOther = namesFor('early');
      await bare.pool.query('CREATE TABLE public.other (id int PRIMARY KEY)');
      await bare.pool.query(`CREATE PUBLICATION ${forOther.publication} FOR TABLE public.other`);
      for (const names of [allTables, forOther, namesFor('early')]) {
        const error = await failure(bare.database.url, names);
        expect(error, error.message).toMatchObject({ code: 'outbox_missing', retriable: true });
        expect(error.message).toContain('"shop"."outbox"');
        expect(await slotExists(bare.pool, names.slot)).toBe(false);
      }

      const db = createDatabase<Record<string, never>>({
        url: bare.database.url,
        maxConnections: 1,
      });
      await migrate(db, 'outbox_migrations', outboxMigrations({ schema: 'shop' }));
      await db.destroy();
      const state = await prepareReplication(bare.database.url, allTables);
      await state.initialSnapshot?.abandon();
      expect(state.created).toBe(true);
      expect((await failure(bare.database.url, forOther)).code).toBe('publication_mismatch');
    } finally {
      await bare.close();
    }
  });
});

describe('adopted slot', () => {
  it('takes a slot it did not create as it is, reporting its position and the outbox rows that may predate it', async () => {
    const names = namesFor('adopted');
    await fixture.pool.query(
      `CREATE PUBLICATION ${names.publication} FOR TABLE shop.outbox WITH (publish = 'insert')`,
    );
    await writeOutboxEvents(fixture.pool, { aggregates: 5, perAggregate: 2 });
    const { rows } = await fixture.pool.query<{ lsn: string }>(
      `SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')`,
      [names.slot],
    );
    await writeOutboxEvents(fixture.pool, { aggregates: 5, perAggregate: 2 });
    const { rows: outbox } = await fixture.pool.query<{ n: string }>(
      'SELECT count(*)::text AS n FROM shop.outbox',
    );
    const outboxRows = Number(outbox[0]?.n);
    const position = rows[0]?.lsn ?? '';

    const state = await prepareReplication(fixture.database.url, names);
    expect(state).toMatchObject({
      created: false,
      confirmedFlushLsn: Lsn.parse(position),
      adopted: { outboxRows },
    });
    expect(state.initialSnapshot).toBeUndefined();
    const warning = state.adopted?.warning ?? '';
    expect(warning).toContain(`"${names.slot}"`);
    expect(warning).toContain(position);
    expect(warning).toContain(`${outboxRows} rows of "shop"."outbox"`);
    expect(warning).toContain(`pg_drop_replication_slot('${names.slot}')`);

    const again = await prepareReplication(fixture.database.url, names);
    expect(again.created).toBe(false);
    expect(again.adopted).toBeUndefined();
  });
});

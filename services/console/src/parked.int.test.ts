// GET /api/parked's reads against real PostgreSQL while the projector parks records: the groups
// and the records of one page come from one moment, however the writes interleave.
import { createDatabase, migrate } from '@sluice/database';
import { projectorMigrations } from '@sluice/projector';
import { createTestDatabase, testServers } from '@sluice/testkit';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { parkedPage } from './parked.js';

let database: Awaited<ReturnType<typeof createTestDatabase>>;
let pool: pg.Pool;

beforeAll(async () => {
  database = await createTestDatabase(testServers().databaseUrl, 'console_parked');
  const db = createDatabase({ url: database.url, maxConnections: 1 });
  await migrate(db, 'projector_migrations', projectorMigrations);
  await db.destroy();
  pool = new pg.Pool({ connectionString: database.url, max: 4 });
  await pool.query(`INSERT INTO sluice.projection_generations (projection, generation, instance, state)
                    VALUES ('cart_summary', 1, 'cart_summary', 'active')`);
});

afterAll(async () => {
  await pool.end();
  await database.drop();
});

/** Parks one record of a new aggregate, as the projector does: one row, committed on its own. */
async function park(offset: number) {
  await pool.query(
    `INSERT INTO sluice.parked_events (projection, topic, partition, record_offset, aggregate_type,
        aggregate_id, aggregate_version, record_headers, reason, attempts)
     VALUES ('cart_summary', 'carts', 0, $1, 'cart', $2, 1, convert_to('[]', 'UTF8'),
             'schema_invalid', 1)`,
    [offset, `cart-${offset}`],
  );
}

it('reads the groups and the records of one page from one snapshot while records are parked', async () => {
  let parked = 0;
  const state = { reading: true };
  const writer = (async () => {
    while (state.reading && parked < 900) await park(parked++);
  })();
  const mismatches: string[] = [];
  let pages = 0;
  try {
    while (pages < 150 && parked < 900) {
      const { groups, rows } = await parkedPage(pool, { projection: 'cart_summary', limit: 1000 });
      const grouped = groups.reduce((sum, group) => sum + group.count, 0);
      if (grouped !== rows.length) mismatches.push(`${grouped} grouped, ${rows.length} listed`);
      pages++;
    }
  } finally {
    state.reading = false;
    await writer;
  }
  expect(pages).toBeGreaterThan(20);
  expect(mismatches).toEqual([]);
});

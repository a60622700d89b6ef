// appliedVersions against real PostgreSQL: the versions readers may rely on are the active
// generation's, whatever other generations, projections or aggregates hold.
import { createDatabase, migrate } from '@sluice/database';
import { createTestDatabase, testServers, type TestDatabase } from '@sluice/testkit';
import { sql, type Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appliedVersions, projectorMigrations } from './index.js';

let database: TestDatabase;
let db: Kysely<unknown>;

beforeAll(async () => {
  database = await createTestDatabase(testServers().databaseUrl, 'applied_versions');
  db = createDatabase({ url: database.url, maxConnections: 2 });
  await migrate(db, 'projector_migrations', projectorMigrations);
  await sql`
    INSERT INTO sluice.projection_versions (projection, aggregate_type, aggregate_id, version) VALUES
      ('sales', 'cart', 'a', 3), ('sales', 'cart', 'b', 7), ('sales', 'order', 'a', 9),
      ('sales.g2', 'cart', 'a', 5), ('other', 'cart', 'a', 11),
      ('fresh', 'cart', 'a', 2), ('fresh.g3', 'cart', 'a', 4)`.execute(db);
  // `sales` was rebuilt: generation 2 serves reads. `fresh` is rebuilding, its first still serves.
  await sql`
    INSERT INTO sluice.projection_generations (projection, generation, instance, state) VALUES
      ('sales', 1, 'sales', 'retired'), ('sales', 2, 'sales.g2', 'active'),
      ('fresh', 1, 'fresh', 'active'), ('fresh', 3, 'fresh.g3', 'building')`.execute(db);
});

afterAll(async () => {
  await db.destroy();
  await database.drop();
});

describe('appliedVersions', () => {
  it("reads the active generation's versions of the named aggregates only", async () => {
    expect(await appliedVersions(db, 'sales', 'cart', ['a', 'b', 'c'])).toEqual(
      new Map([['a', 5]]),
    );
    expect(await appliedVersions(db, 'fresh', 'cart', ['a'])).toEqual(new Map([['a', 2]]));
  });

  it('reads the projection under its own name before any generation exists', async () => {
    expect(await appliedVersions(db, 'other', 'cart', ['a', 'b'])).toEqual(new Map([['a', 11]]));
    expect(await appliedVersions(db, 'other', 'order', ['a'])).toEqual(new Map());
  });

  it('finds nothing for no aggregates', async () => {
    expect(await appliedVersions(db, 'sales', 'cart', [])).toEqual(new Map());
  });
});

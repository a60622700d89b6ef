// infra/postgres/roles.sql: the app role writes state and appends events, and cannot reshape
// or rewrite the outbox.
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql } from 'kysely';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startShopApi, type ShopApiHarness } from './test-harness.js';

const rolesFile = join(
  dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  '..',
  'infra',
  'postgres',
  'roles.sql',
);
let api: ShopApiHarness;

beforeAll(async () => {
  api = await startShopApi('shop_roles');
  // Roles are cluster-wide; parallel files applying roles.sql may race on CREATE ROLE.
  const text = await readFile(rolesFile, 'utf8');
  await sql
    .raw(`SELECT pg_advisory_lock(4242); ${text}; SELECT pg_advisory_unlock(4242);`)
    .execute(api.db);
});
afterAll(() => api.close());

async function asApp(statement: string): Promise<string> {
  try {
    await api.db.transaction().execute(async (trx) => {
      await sql`SET LOCAL ROLE sluice_app`.execute(trx);
      await sql.raw(statement).execute(trx);
    });
    return 'ok';
  } catch (error) {
    return (error as Error).message;
  }
}

it('lets sluice_app write state and append events, but not alter or update the outbox', async () => {
  expect(
    await asApp(
      `INSERT INTO shop.customers (id, email, name, version) VALUES ('0190a6e2-8d7e-7c3a-9b1e-000000000009', 'r@example.com', 'R', 1)`,
    ),
  ).toBe('ok');
  expect(
    await asApp(`INSERT INTO shop.outbox (id, aggregate_type, aggregate_id, aggregate_version, type, payload)
      VALUES ('0190a6e2-8d7e-7c3a-9b1e-00000000000a', 'customer', '0190a6e2-8d7e-7c3a-9b1e-000000000009', 1,
              'customer.erased.v1', '{"customerId":"0190a6e2-8d7e-7c3a-9b1e-000000000009"}')`),
  ).toBe('ok');
  expect(await asApp(`UPDATE shop.outbox SET payload = '{}'`)).toMatch(/permission denied/);
  expect(await asApp(`ALTER TABLE shop.outbox ADD COLUMN sneaky text`)).toMatch(/must be owner/);
  expect(await asApp(`ALTER TABLE shop.outbox DROP CONSTRAINT outbox_pkey`)).toMatch(
    /must be owner/,
  );
  expect(await asApp(`TRUNCATE shop.outbox`)).toMatch(/permission denied/);
  // It reads the consistency-token key the migrations made, and cannot replace it.
  expect(await asApp(`SELECT secret FROM sluice.api_secrets`)).toBe('ok');
  expect(await asApp(`UPDATE sluice.api_secrets SET secret = '\\x00'`)).toMatch(
    /permission denied/,
  );
});

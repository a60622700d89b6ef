// infra/postgres/roles.sql in use: the owner migrates, an administrator applies the roles and
// creates the publication, then shop-api, the relay and a projector run as sluice_app,
// sluice_relay and sluice_projector; the pipeline converges and each role does its job and
// nothing more.
import { createDatabase, migrate } from '@sluice/database';
import { CLAIM_CHECKS_TABLE } from '@sluice/outbox/claim-checks';
import { viewMigrations } from '@sluice/shop-views';
import {
  createTestDatabase,
  testServers,
  uniqueName,
  waitFor,
  type TestDatabase,
} from '@sluice/testkit';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shopAdminHeaders, viewerHeaders } from '../support/access.js';
import {
  listeningAddress,
  startService,
  startShopApi,
  type ServiceProcess,
} from '../support/services.js';

const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const ROLES_SQL = join(rootDir, 'infra', 'postgres', 'roles.sql');
const PASSWORD = 'sluice-roles-test';
const ROLES = ['sluice_app', 'sluice_relay', 'sluice_projector', 'sluice_viewer'] as const;
type Role = (typeof ROLES)[number];

const { databaseUrl, kafkaBrokers } = testServers();
const prefix = uniqueName('roles');
const names = { slot: `${prefix}_slot`, publication: `${prefix}_pub` };
let database: TestDatabase;
let owner: pg.Pool;
let base: string;
const services: ServiceProcess[] = [];

function roleUrl(role: Role): string {
  const url = new URL(database.url);
  url.username = role;
  url.password = PASSWORD;
  return url.toString();
}

async function applyRoles(): Promise<void> {
  await owner.query(await readFile(ROLES_SQL, 'utf8'));
}

async function migrateAsOwner(): Promise<void> {
  const shopMigrate = join(rootDir, 'services', 'shop-api', 'dist', 'migrate.js');
  await promisify(execFile)(process.execPath, [shopMigrate], {
    env: { ...process.env, DATABASE_URL: database.url },
  });
  const db = createDatabase<unknown>({ url: database.url, maxConnections: 1 });
  try {
    await migrate(db, 'projector_migrations', viewMigrations, { shared: true });
  } finally {
    await db.destroy();
  }
}

/** Runs `statement` as `role`: 'ok', or the error's message. */
async function as(role: Role, statement: string): Promise<string> {
  const client = new pg.Client({ connectionString: roleUrl(role) });
  await client.connect();
  try {
    await client.query(statement);
    return 'ok';
  } catch (error) {
    return (error as Error).message;
  } finally {
    await client.end();
  }
}

function start(name: 'relay' | 'projector', env: Record<string, string>, args: string[] = []) {
  const service = startService(name, { KAFKA_BROKERS: kafkaBrokers.join(','), ...env }, [], {
    args,
  });
  services.push(service);
  return service;
}

function startRelay(role: Role, publication: string, args: string[] = [], slot = names.slot) {
  return start(
    'relay',
    {
      DATABASE_URL: roleUrl(role),
      RELAY_SLOT: slot,
      RELAY_PUBLICATION: publication,
      RELAY_TOPIC_PREFIX: `${prefix}.`,
      RELAY_METRICS_PORT: '0',
    },
    args,
  );
}

async function post(path: string, body: unknown): Promise<Record<string, unknown>> {
  const response = await fetch(`${base}${path}`, {
    method: 'POST',
    headers: { ...shopAdminHeaders(), 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return (await response.json()) as Record<string, unknown>;
}

async function rows(query: string): Promise<string> {
  const result = await owner.query<{ row: string }>(query);
  return JSON.stringify(result.rows.map((r) => r.row));
}

const VIEW = `SELECT concat_ws('|', cart_id, status, item_count, total_cents, version) AS row
                FROM views.cart_summaries ORDER BY 1`;
const FOLD = `SELECT concat_ws('|', c.id, c.status, COALESCE(sum(i.quantity), 0),
                     COALESCE(sum(i.quantity * i.unit_price_cents), 0), c.version) AS row
                FROM shop.carts c LEFT JOIN shop.cart_items i ON i.cart_id = c.id
               GROUP BY c.id ORDER BY 1`;

let projector: ServiceProcess;

beforeAll(async () => {
  database = await createTestDatabase(databaseUrl, 'roles');
  owner = new pg.Pool({ connectionString: database.url, max: 2 });
  owner.on('error', () => undefined);
  await migrateAsOwner();
  await applyRoles();
  // Roles are cluster-wide: change them under the lock roles.sql takes.
  const passwords = ROLES.map((role) => `ALTER ROLE ${role} PASSWORD '${PASSWORD}';`).join(' ');
  await owner.query(
    `SELECT pg_advisory_lock(hashtext('sluice roles.sql')); ${passwords} SELECT pg_advisory_unlock(hashtext('sluice roles.sql'));`,
  );
  await owner.query(
    `CREATE PUBLICATION ${names.publication} FOR TABLE shop.outbox WITH (publish = 'insert')`,
  );
  const api = await startShopApi({
    DATABASE_URL: roleUrl('sluice_app'),
    MIGRATE_ON_START: 'false',
  });
  services.push(api.service);
  base = api.base;
  startRelay('sluice_relay', names.publication);
  projector = start('projector', {
    DATABASE_URL: roleUrl('sluice_projector'),
    PROJECTOR_TOPIC_PREFIX: `${prefix}.`,
    PROJECTOR_GROUP_PREFIX: `${prefix}.g.`,
    PROJECTOR_METRICS_PORT: '0',
    PROJECTOR_SESSION_TIMEOUT_MS: '6000',
  });
  await projector.waitForOutput('"msg":"consuming"', {
    timeoutMs: 60_000,
    message: 'the projector to consume as sluice_projector',
  });
}, 120_000);

afterAll(async () => {
  const exits = services.map((service) => service.exited());
  for (const service of services) service.kill('SIGKILL');
  await Promise.all(exits);
  await owner.end();
  await database.drop();
});

describe('services under least-privilege roles', () => {
  it('converge: views equal the fold of shop.*, and shop-api reads its writes', async () => {
    const customer = await post('/customers', { email: `${prefix}@example.com`, name: 'R' });
    const product = await post('/products', {
      sku: prefix,
      name: 'R',
      priceCents: 250,
      stock: 100,
    });
    const carts = await Promise.all(
      [1, 2, 3].map(() => post('/carts', { customerId: customer.id })),
    );
    for (const [i, cart] of carts.entries()) {
      const added = await post(`/carts/${String(cart.id)}/items`, {
        productId: product.id,
        quantity: i + 1,
      });
      expect(added).not.toHaveProperty('code');
    }
    await waitFor(async () => (await rows(VIEW)) === (await rows(FOLD)), {
      timeoutMs: 90_000,
      intervalMs: 250,
      message: 'cart summaries to equal the fold of shop.*',
    });
    expect(JSON.parse(await rows(VIEW))).toHaveLength(3);
    for (const service of services) expect(service.output()).not.toMatch(/permission denied/i);
    // /views/* as sluice_app: the read model the projector owns.
    const view = await fetch(`${base}/views/carts/${String(carts[2]?.id)}`, {
      headers: shopAdminHeaders(),
    });
    expect(view.status).toBe(200);
    expect(await view.json()).toMatchObject({ itemCount: 3, totalCents: 750 });
  });

  it('keeps sluice_app to the shop: no slot, no outbox rewrite, no projector bookkeeping', async () => {
    expect(await as('sluice_app', `SELECT 1 FROM shop.outbox LIMIT 1`)).toBe('ok');
    expect(await as('sluice_app', `SELECT 1 FROM sluice.projection_versions LIMIT 1`)).toBe('ok');
    expect(
      await as(
        'sluice_app',
        `SELECT * FROM pg_logical_slot_peek_changes('${names.slot}', NULL, 1)`,
      ),
    ).toMatch(/permission denied|must be superuser or replication role/);
    expect(await as('sluice_app', `UPDATE shop.outbox SET payload = '{}'`)).toMatch(
      /permission denied/,
    );
    expect(await as('sluice_app', `SELECT 1 FROM sluice.projection_checkpoints`)).toMatch(
      /permission denied/,
    );
    expect(await as('sluice_app', `SELECT 1 FROM sluice.parked_events`)).toMatch(
      /permission denied/,
    );
  });

  it('keeps sluice_relay to the outbox and its own tables', async () => {
    expect(await as('sluice_relay', `SELECT count(*) FROM sluice.relay_slots`)).toBe('ok');
    expect(
      await as(
        'sluice_relay',
        `INSERT INTO shop.customers (id, email, name, version)
        VALUES (gen_random_uuid(), 'x@example.com', 'X', 1)`,
      ),
    ).toMatch(/permission denied/);
    expect(await as('sluice_relay', `DELETE FROM shop.outbox`)).toMatch(/permission denied/);
    expect(await as('sluice_relay', `SELECT 1 FROM sluice.parked_events`)).toMatch(
      /permission denied/,
    );
  });

  it('keeps sluice_projector to the views and its bookkeeping', async () => {
    expect(await as('sluice_projector', `SELECT 1 FROM views.cart_summaries LIMIT 1`)).toBe('ok');
    expect(await as('sluice_projector', `SELECT 1 FROM sluice.claim_checks LIMIT 1`)).toBe('ok');
    expect(await as('sluice_projector', `CREATE SCHEMA ${prefix}_probe`)).toMatch(
      /permission denied for database/,
    );
    expect(await as('sluice_projector', `SELECT 1 FROM shop.customers`)).toMatch(
      /permission denied/,
    );
    expect(await as('sluice_projector', `SELECT 1 FROM shop.outbox`)).toMatch(/permission denied/);
    expect(await as('sluice_projector', `SELECT 1 FROM sluice.idempotency_keys`)).toMatch(
      /permission denied/,
    );
  });

  it('lets a viewer read but never act: 403 on /parked/skip, no write to sluice.parked_events', async () => {
    const ops = listeningAddress(projector) ?? '';
    const skip = await fetch(`${ops}/parked/skip`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(await viewerHeaders()) },
      body: JSON.stringify({ projection: 'cart_summary', topic: 't', partition: 0, offset: '1' }),
    });
    expect(skip.status).toBe(403);
    // The relay made its journey table after the file was applied, which is not applied again.
    expect(await as('sluice_viewer', `SELECT count(*) FROM sluice.published_events`)).toBe('ok');
    expect(await as('sluice_viewer', `SELECT count(*) FROM sluice.parked_events`)).toBe('ok');
    expect(await as('sluice_viewer', `DELETE FROM sluice.parked_events`)).toMatch(
      /permission denied/,
    );
    expect(
      await as('sluice_viewer', `UPDATE sluice.projection_checkpoints SET next_offset = 0`),
    ).toMatch(/permission denied/);
    expect(await as('sluice_viewer', `SELECT 1 FROM shop.customers`)).toMatch(/permission denied/);
    expect(await as('sluice_viewer', `SELECT 1 FROM sluice.claim_checks`)).toMatch(
      /permission denied/,
    );
  });

  it('revokes the CREATE on the database an older roles.sql granted the projector', async () => {
    const database = (await owner.query<{ name: string }>('SELECT current_database() AS name'))
      .rows[0]?.name;
    await owner.query(`GRANT CREATE ON DATABASE "${database ?? ''}" TO sluice_projector`);
    await applyRoles();
    expect(await as('sluice_projector', `CREATE SCHEMA ${prefix}_probe`)).toMatch(
      /permission denied for database/,
    );
  });

  it('makes the claim-check table as @sluice/outbox would, the relay its owner', async () => {
    const columns = (table: string) =>
      rows(`SELECT concat_ws(' ', column_name, data_type, is_nullable, column_default) AS row
              FROM information_schema.columns
             WHERE table_schema || '.' || table_name = '${table}' ORDER BY ordinal_position`);
    const client = await owner.connect();
    try {
      await client.query(`BEGIN; CREATE SCHEMA ${prefix}_outbox`);
      await client.query(CLAIM_CHECKS_TABLE.replace('sluice.', `${prefix}_outbox.`));
      const expected = await client.query<{ row: string }>(
        `SELECT concat_ws(' ', column_name, data_type, is_nullable, column_default) AS row
           FROM information_schema.columns
          WHERE table_schema = '${prefix}_outbox' AND table_name = 'claim_checks'
          ORDER BY ordinal_position`,
      );
      expect(await columns('sluice.claim_checks')).toBe(
        JSON.stringify(expected.rows.map((r) => r.row)),
      );
    } finally {
      await client.query('ROLLBACK');
      client.release();
    }
    expect(
      await as(
        'sluice_relay',
        `INSERT INTO sluice.claim_checks (event_id, payload) VALUES (gen_random_uuid(), '{}')`,
      ),
    ).toBe('ok');
    expect(await as('sluice_relay', `DELETE FROM sluice.claim_checks`)).toBe('ok');
  });

  it('has the projector --check pass as sluice_projector and name what another role lacks', async () => {
    const urlFile = join(await mkdtemp(join(tmpdir(), 'sluice-roles-')), 'database-url');
    await writeFile(urlFile, `${roleUrl('sluice_projector')}\n`, { mode: 0o600 });
    const check = (env: Record<string, string>) =>
      start('projector', { PROJECTOR_METRICS_PORT: '0', ...env }, ['--check']);
    const ok = check({ DATABASE_URL: '', DATABASE_URL_FILE: urlFile });
    const absent = check({ DATABASE_URL: '', DATABASE_URL_FILE: `${urlFile}.absent` });
    const viewer = check({ DATABASE_URL: roleUrl('sluice_viewer') });
    const [okCode, absentCode, viewerCode] = await Promise.all(
      [ok, absent, viewer].map((service) => service.exited()),
    );
    expect(okCode, ok.output()).toBe(0);
    expect(absentCode).toBe(78);
    expect(absent.output()).toBe(
      `sluice-projector: DATABASE_URL_FILE ${JSON.stringify(`${urlFile}.absent`)} cannot be read (ENOENT)\n`,
    );
    expect(viewerCode, viewer.output()).toBe(1);
    expect(viewer.output()).toContain(
      "Role sluice_viewer may not write the projector's bookkeeping (sluice.projection_checkpoints",
    );
    expect(viewer.output()).toContain(
      "Role sluice_viewer may not create the projections' tables in schema views",
    );
    expect(viewer.output()).not.toContain(PASSWORD);
  }, 60_000);

  it('has the relay --check pass as sluice_relay and name what another role lacks', async () => {
    const ok = startRelay('sluice_relay', names.publication, ['--check']);
    const missing = startRelay('sluice_relay', `${prefix}_nopub`, ['--check']);
    const app = startRelay('sluice_app', names.publication, ['--check']);
    const refused = startRelay('sluice_relay', `${prefix}_nopub`, [], `${prefix}_slot2`);
    const [okCode, missingCode, appCode, refusedCode] = await Promise.all(
      [ok, missing, app, refused].map((service) => service.exited()),
    );
    // Started without its publication, the relay stops for an operator and names the SQL.
    expect(refusedCode).toBe(78);
    expect(refused.output()).toContain('publication_missing');
    expect(refused.output()).toContain(
      'Have an administrator create it, then start the relay again: CREATE PUBLICATION',
    );
    expect(okCode, ok.output()).toBe(0);
    expect(missingCode).not.toBe(0);
    expect(missing.output()).toContain(
      `Publication ${prefix}_nopub does not exist and role sluice_relay may not create it`,
    );
    expect(appCode).not.toBe(0);
    expect(app.output()).toContain('Role sluice_app may not replicate');
    expect(app.output()).toContain("Role sluice_app may not write the relay's tables");
  }, 60_000);
});

// Test support (not used by the service): a shop-api on a database of its own.
import { randomUUID } from 'node:crypto';
import { createPrivacy, parseMasterKey, type MasterKeys } from '@sluice/privacy';
import { shopCatalog, shopProtectedFields } from '@sluice/shop-catalog';
import { createDatabase, migrate } from '@sluice/database';
import { createTestDatabase, testServers, type TestDatabase } from '@sluice/testkit';
import type { FastifyBaseLogger, FastifyInstance, LightMyRequestResponse } from 'fastify';
import { SignJWT, type JWTPayload } from 'jose';
import { sql, type Kysely } from 'kysely';
import type { Tracer } from '@sluice/tracing';
import { pino } from 'pino';
import { buildApp } from './app.js';
import { storedTokenSecret } from './consistency-tokens.js';
import type { ShopDatabase } from './database.js';
import type { AuthSettings } from './http/authentication.js';
import { shopMigrations } from './migrations.js';

export interface ShopApiHarness {
  app: FastifyInstance;
  db: Kysely<ShopDatabase>;
  database: TestDatabase;
  /**
   * Sends a JSON request (or a raw string payload) through the app, with an admin's token
   * ({@link TEST_ADMIN}) unless `headers` has an `authorization` of its own (`''`: none at all).
   */
  request(
    method: 'GET' | 'POST' | 'PATCH' | 'DELETE' | 'PUT',
    url: string,
    options?: { body?: unknown; raw?: string; headers?: Record<string, string> },
  ): Promise<LightMyRequestResponse>;
  /** Every row of every shop table and the outbox, to prove a request changed nothing. */
  snapshot(): Promise<string>;
  outbox(): Promise<OutboxRow[]>;
  /** A new customer, a product of `stock` units at 10 cents, and an open cart of the customer's. */
  openCart(stock?: number): Promise<{ customer: string; product: string; cart: string }>;
  close(): Promise<void>;
}

export interface OutboxRow {
  id: string;
  aggregate_type: string;
  aggregate_id: string;
  aggregate_version: number;
  type: string;
  payload: Record<string, unknown>;
  metadata: Record<string, unknown>;
  occurred_at: Date;
}

/** The HS256 secret the harness's apps verify tokens with, unless `auth` says otherwise. */
export const TEST_SHOP_AUTH_SECRET = 'shop-api-test-auth-secret-not-for-production';

/** The master key (hex) of the harness's apps; never one to deploy. */
export const TEST_MASTER_KEY = '5e1ce0de'.repeat(8);

/** {@link TEST_MASTER_KEY} parsed, with no previous key. */
export const TEST_MASTER_KEYS: MasterKeys = { current: parseMasterKey(TEST_MASTER_KEY) };

/** What seals personal data in the harness's apps, with {@link TEST_MASTER_KEY}. */
export const TEST_PRIVACY = createPrivacy({ keys: TEST_MASTER_KEYS, fields: shopProtectedFields });

/** The subject of the harness's default token, which has the admin scope. */
export const TEST_ADMIN = 'test-admin';

const TEST_AUTH: AuthSettings = {
  mode: 'jwt',
  key: Buffer.from(TEST_SHOP_AUTH_SECRET),
  adminScope: 'admin',
};

/**
 * An app over `db` (migrated or not) with the harness's settings: its auth, sealing and master
 * keys, a fixed consistency-token secret, a silent log. For tests that bring their own pool.
 */
export function testApp(db: Kysely<ShopDatabase>): ReturnType<typeof buildApp> {
  return buildApp({
    db,
    logger: pino({ level: 'silent' }),
    consistencyTokenSecret: Buffer.alloc(32, 7),
    auth: TEST_AUTH,
    privacy: TEST_PRIVACY,
    masterKeys: TEST_MASTER_KEYS,
  });
}

/**
 * A token signed with `secret` (default {@link TEST_SHOP_AUTH_SECRET}) for `sub`, valid an hour;
 * `claims` add to or replace its claims (`scope: 'admin'` for an admin).
 */
export function testToken(
  sub: string,
  claims: JWTPayload = {},
  secret = TEST_SHOP_AUTH_SECRET,
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ sub, iat: now, exp: now + 3600, ...claims })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .sign(Buffer.from(secret));
}

/** `Authorization` headers of a token for `sub` (see {@link testToken}). */
export async function bearer(
  sub: string,
  claims: JWTPayload = {},
): Promise<Record<string, string>> {
  return { authorization: `Bearer ${await testToken(sub, claims)}` };
}

const TABLES = [
  'customers',
  'products',
  'carts',
  'cart_items',
  'orders',
  'order_lines',
  'outbox',
  'outbox_heads',
];

export interface ShopApiHarnessOptions {
  /** Another app on this harness's database (already migrated); closing it keeps the database. */
  sharing?: ShopApiHarness;
  logger?: FastifyBaseLogger;
  consistencyTimeoutMs?: number;
  /** Signs consistency tokens with this secret instead of the database's key. */
  consistencyTokenSecret?: string;
  tracer?: Tracer;
  /** Routes of the test's own, added before the app is ready. */
  routes?: (app: FastifyInstance) => void;
  /** How the app authenticates. Default: HS256 tokens signed with {@link TEST_SHOP_AUTH_SECRET}. */
  auth?: AuthSettings;
  /** The master keys of personal data and request hashes. Default: {@link TEST_MASTER_KEY}. */
  masterKeys?: MasterKeys;
}

function privacyOf(masterKeys: MasterKeys | undefined) {
  if (masterKeys === undefined) return { privacy: TEST_PRIVACY, masterKeys: TEST_MASTER_KEYS };
  return { privacy: createPrivacy({ keys: masterKeys, fields: shopProtectedFields }), masterKeys };
}

export async function startShopApi(
  prefix = 'shop',
  options: ShopApiHarnessOptions = {},
): Promise<ShopApiHarness> {
  const owned = options.sharing === undefined;
  const database =
    options.sharing?.database ?? (await createTestDatabase(testServers().databaseUrl, prefix));
  const db = createDatabase<ShopDatabase>({ url: database.url, maxConnections: 30 });
  if (owned) await migrate(db, 'shop_api_migrations', shopMigrations);
  const app = buildApp({
    db,
    logger: options.logger ?? pino({ level: 'silent' }),
    tracer: options.tracer,
    ...(options.consistencyTimeoutMs === undefined
      ? {}
      : { consistencyTimeoutMs: options.consistencyTimeoutMs }),
    consistencyTokenSecret:
      options.consistencyTokenSecret === undefined
        ? await storedTokenSecret(db)
        : Buffer.from(options.consistencyTokenSecret),
    auth: options.auth ?? TEST_AUTH,
    ...privacyOf(options.masterKeys),
  });
  const admin = await bearer(TEST_ADMIN, { scope: 'admin' });
  options.routes?.(app);
  await app.ready();
  const request: ShopApiHarness['request'] = (method, url, options = {}) => {
    const headers: Record<string, string> = { ...admin, ...options.headers };
    if (headers.authorization === '') delete headers.authorization;
    let payload: string | undefined = options.raw;
    if (options.body !== undefined) {
      payload = JSON.stringify(options.body);
      headers['content-type'] ??= 'application/json';
    }
    return app.inject({ method, url, headers, ...(payload === undefined ? {} : { payload }) });
  };
  return {
    app,
    db,
    database,
    request,
    async snapshot() {
      const parts: string[] = [];
      for (const table of TABLES) {
        const { rows } = await sql<{ row: string }>`
          SELECT t::text AS row FROM ${sql.table(`shop.${table}`)} t ORDER BY t::text`.execute(db);
        parts.push(`${table}:${rows.map((r) => r.row).join('|')}`);
      }
      return parts.join('\n');
    },
    async openCart(stock = 100) {
      const create = async (url: string, body: unknown): Promise<string> => {
        const res = await request('POST', url, { body });
        if (res.statusCode >= 300) throw new Error(`POST ${url}: ${res.statusCode} ${res.body}`);
        return res.json<{ id: string }>().id;
      };
      const name = randomUUID();
      const customer = await create('/customers', { email: `${name}@example.com`, name: 'Cart' });
      const product = await create('/products', {
        sku: name,
        name: 'Cart',
        priceCents: 10,
        stock,
      });
      const cart = await create('/carts', { customerId: customer });
      return { customer, product, cart };
    },
    async outbox() {
      const { rows } = await sql<OutboxRow>`
        SELECT * FROM shop.outbox ORDER BY aggregate_type, aggregate_id, aggregate_version`.execute(
        db,
      );
      return rows;
    },
    async close() {
      if (!owned) {
        await app.close();
        await db.destroy();
        return;
      }
      // Every event any test wrote must match its published JSON Schema.
      const { rows } = await sql<{
        type: string;
        payload: unknown;
      }>`SELECT type, payload FROM shop.outbox`.execute(db);
      const invalid = rows.flatMap((row) => {
        const errors = shopCatalog.payloadErrors(row.type, row.payload);
        return errors.length === 0 ? [] : [`${row.type}: ${errors.join('; ')}`];
      });
      await app.close();
      await db.destroy();
      await database.drop();
      if (invalid.length > 0)
        throw new Error(`Outbox rows violate their schemas:\n${invalid.join('\n')}`);
    },
  };
}

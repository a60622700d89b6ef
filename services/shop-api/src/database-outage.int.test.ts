// A database that goes away under a write: the connection lost while the COMMIT pipeline runs,
// the server refusing connections. The client gets a 503 it can retry, nothing half-written
// stays, and the next write goes through.
import { createDatabase } from '@sluice/database';
import { sql } from 'kysely';
import type { LightMyRequestResponse } from 'fastify';
import { once } from 'node:events';
import net from 'node:net';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ShopDatabase } from './database.js';
import { bearer, startShopApi, testApp, type ShopApiHarness } from './test-harness.js';

let api: ShopApiHarness;
let killer: pg.Client;
beforeAll(async () => {
  api = await startShopApi('shop_outage');
  killer = new pg.Client({ connectionString: api.database.url });
  await killer.connect();
  // An item added with quantity 9 waits in the outbox insert, which goes with the COMMIT.
  await sql`
    CREATE FUNCTION shop.slow_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.type = 'cart.item_added.v1' AND (NEW.payload->>'quantity')::int = 9 THEN
        PERFORM pg_sleep(30);
      END IF;
      RETURN NEW;
    END $$;
    CREATE TRIGGER slow_outbox BEFORE INSERT ON shop.outbox
      FOR EACH ROW EXECUTE FUNCTION shop.slow_outbox();
  `.execute(api.db);
});
afterAll(async () => {
  await killer.end();
  await api.close();
});

let seq = 0;
const unique = (prefix: string) => `${prefix}${Date.now().toString(36)}${(seq += 1)}`;

/** Terminates the backend that sleeps in the outbox trigger, once it does. */
async function terminateSleeper(): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const { rows } = await killer.query<{ killed: boolean }>(
      `SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity
        WHERE datname = current_database() AND wait_event = 'PgSleep'`,
    );
    if (rows.some((row) => row.killed)) return;
    if (Date.now() > deadline) throw new Error('no write waited in the outbox insert');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('the connection lost in the COMMIT pipeline', () => {
  it('answers 503 database_unavailable with Retry-After, writes nothing, and the next write goes through', async () => {
    const { cart, product } = await api.openCart();
    const before = await api.snapshot();
    const [res] = await Promise.all([
      api.request('POST', `/carts/${cart}/items`, { body: { productId: product, quantity: 9 } }),
      terminateSleeper(),
    ]);
    expect(res.statusCode, res.body).toBe(503);
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(res.headers['retry-after']).toBe('1');
    expect(res.json()).toMatchObject({ status: 503, code: 'database_unavailable' });
    expect(await api.snapshot()).toBe(before);

    const next = await api.request('POST', `/carts/${cart}/items`, {
      body: { productId: product, quantity: 2 },
    });
    expect(next.statusCode, next.body).toBe(200);
    expect(next.headers.etag).toBe('"2"');
  });

  it('leaves an Idempotency-Key free: the retry is applied once, then replayed', async () => {
    const { cart, product } = await api.openCart();
    const key = { 'idempotency-key': unique('lost-') };
    const [lost] = await Promise.all([
      api.request('POST', `/carts/${cart}/items`, {
        body: { productId: product, quantity: 9 },
        headers: key,
      }),
      terminateSleeper(),
    ]);
    expect(lost.statusCode, lost.body).toBe(503);
    // The same request again: the trigger sleeps again, so this time let it finish.
    await sql`ALTER TABLE shop.outbox DISABLE TRIGGER slow_outbox`.execute(api.db);
    try {
      const retried = await api.request('POST', `/carts/${cart}/items`, {
        body: { productId: product, quantity: 9 },
        headers: key,
      });
      expect(retried.statusCode, retried.body).toBe(200);
      const replayed = await api.request('POST', `/carts/${cart}/items`, {
        body: { productId: product, quantity: 9 },
        headers: key,
      });
      expect(retried.headers['idempotent-replayed']).toBeUndefined();
      expect(replayed.statusCode).toBe(200);
      expect(replayed.headers['idempotent-replayed']).toBe('true');
      expect(replayed.json()).toEqual(retried.json());
      const events = (await api.outbox()).filter(
        (row) => row.aggregate_id === cart && row.type === 'cart.item_added.v1',
      );
      expect(events.map((row) => row.aggregate_version)).toEqual([2]);
    } finally {
      await sql`ALTER TABLE shop.outbox ENABLE TRIGGER slow_outbox`.execute(api.db);
    }
  });
});

/** Reads and writes through an app whose database is at `port` of this host. */
async function unreachable(port: number, connectTimeoutMs?: number) {
  const url = new URL(api.database.url);
  url.hostname = '127.0.0.1';
  url.port = String(port);
  const db = createDatabase<ShopDatabase>({
    url: url.toString(),
    ...(connectTimeoutMs === undefined ? {} : { connectTimeoutMs }),
  });
  const app = testApp(db);
  try {
    await app.ready();
    const headers = await bearer('outage-admin', { scope: 'admin' });
    const write = await app.inject({
      method: 'POST',
      url: '/products',
      headers: { ...headers, 'content-type': 'application/json' },
      payload: JSON.stringify({ sku: unique('X-'), name: 'X', priceCents: 1, stock: 1 }),
    });
    const read = await app.inject({ method: 'GET', url: '/products', headers });
    return [write, read];
  } finally {
    await app.close();
    await db.destroy();
  }
}

function expectUnavailable(responses: LightMyRequestResponse[]) {
  for (const res of responses) {
    expect(res.statusCode, res.body).toBe(503);
    expect(res.headers['retry-after']).toBe('1');
    expect(res.json()).toMatchObject({ code: 'database_unavailable' });
  }
}

describe('a database out of reach', () => {
  it('that refuses connections: reads and writes are 503 database_unavailable, not 500', async () => {
    // A port nothing listens on: every connection is refused at once.
    expectUnavailable(await unreachable(1));
  });

  it('that accepts connections and never answers: 503 once the connect timeout passes', async () => {
    const silent = net.createServer(() => undefined).listen(0, '127.0.0.1');
    await once(silent, 'listening');
    const held: net.Socket[] = [];
    silent.on('connection', (socket) => held.push(socket));
    try {
      const started = Date.now();
      expectUnavailable(await unreachable((silent.address() as net.AddressInfo).port, 300));
      expect(held.length).toBeGreaterThan(0);
      expect(Date.now() - started).toBeGreaterThanOrEqual(300);
      expect(Date.now() - started).toBeLessThan(5_000);
    } finally {
      for (const socket of held) socket.destroy();
      await new Promise((done) => silent.close(done));
    }
  });
});

// Atomicity, concurrency and idempotency of writes, against real PostgreSQL.
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startShopApi, type ShopApiHarness } from './test-harness.js';

let api: ShopApiHarness;
beforeAll(async () => {
  api = await startShopApi('shop_consistency');
});
afterAll(() => api.close());

let seq = 0;
const unique = (prefix: string) => `${prefix}${Date.now().toString(36)}${(seq += 1)}`;

async function post<T>(url: string, body: unknown): Promise<T> {
  const res = await api.request('POST', url, { body });
  expect(res.statusCode, res.body).toBeLessThan(300);
  return res.json<T>();
}

describe('atomicity', () => {
  it('a failure after the state write, at commit, leaves neither state nor outbox rows', async () => {
    // A deferred constraint trigger fails the commit itself, after every statement succeeded.
    await sql`
      CREATE FUNCTION shop.fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.name = 'FAIL AT COMMIT' THEN RAISE EXCEPTION 'injected commit failure'; END IF;
        RETURN NULL;
      END $$;
      CREATE CONSTRAINT TRIGGER fail_at_commit AFTER INSERT OR UPDATE ON shop.customers
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION shop.fail_at_commit();
    `.execute(api.db);
    try {
      const before = await api.snapshot();
      const res = await api.request('POST', '/customers', {
        body: { email: `${unique('commit')}@example.com`, name: 'FAIL AT COMMIT' },
      });
      expect(res.statusCode).toBe(500);
      expect(res.json()).toMatchObject({ code: 'internal_error' });
      expect(await api.snapshot()).toBe(before);

      const customer = await post<{ id: string }>('/customers', {
        email: `${unique('ok')}@example.com`,
        name: 'Fine',
      });
      const beforePatch = await api.snapshot();
      const patch = await api.request('PATCH', `/customers/${customer.id}`, {
        body: { name: 'FAIL AT COMMIT' },
        headers: { 'if-match': '"1"' },
      });
      expect(patch.statusCode).toBe(500);
      expect(await api.snapshot()).toBe(beforePatch);
    } finally {
      await sql`DROP TRIGGER fail_at_commit ON shop.customers; DROP FUNCTION shop.fail_at_commit();`.execute(
        api.db,
      );
    }
  });

  it('a failure while inserting the outbox row leaves no state change', async () => {
    await sql`
      CREATE FUNCTION shop.fail_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.type = 'cart.item_added.v1' AND (NEW.payload->>'quantity')::int = 7 THEN
          RAISE EXCEPTION 'injected outbox failure';
        END IF;
        RETURN NEW;
      END $$;
      CREATE TRIGGER fail_outbox BEFORE INSERT ON shop.outbox FOR EACH ROW EXECUTE FUNCTION shop.fail_outbox();
    `.execute(api.db);
    try {
      const { cart, product } = await api.openCart(10);
      const before = await api.snapshot();
      const res = await api.request('POST', `/carts/${cart}/items`, {
        body: { productId: product, quantity: 7 },
      });
      expect(res.statusCode).toBe(500);
      expect(await api.snapshot()).toBe(before);
      const ok = await api.request('POST', `/carts/${cart}/items`, {
        body: { productId: product, quantity: 6 },
      });
      expect(ok.statusCode).toBe(200);
    } finally {
      await sql`DROP TRIGGER fail_outbox ON shop.outbox; DROP FUNCTION shop.fail_outbox();`.execute(
        api.db,
      );
    }
  });
});

describe('concurrency', () => {
  it('50 concurrent item adds to one cart all land, with versions 1..51 and no gap or repeat', async () => {
    const customer = await post<{ id: string }>('/customers', {
      email: `${unique('conc')}@example.com`,
      name: 'Conc',
    });
    const products = await Promise.all(
      [0, 1, 2, 3, 4].map((i) =>
        post<{ id: string }>('/products', {
          sku: unique(`C${i}-`),
          name: 'C',
          priceCents: 100 + i,
          stock: 1000,
        }),
      ),
    );
    const cart = await post<{ id: string }>('/carts', { customerId: customer.id });
    const responses = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        api.request('POST', `/carts/${cart.id}/items`, {
          body: { productId: products[i % 5]?.id, quantity: 1 + (i % 3) },
        }),
      ),
    );
    expect(responses.map((r) => r.statusCode)).toEqual(Array.from({ length: 50 }, () => 200));
    const expectedUnits = Array.from({ length: 50 }, (_, i) => 1 + (i % 3)).reduce(
      (a, b) => a + b,
      0,
    );

    const state = (await api.request('GET', `/carts/${cart.id}`)).json<{
      items: { quantity: number }[];
      version: number;
    }>();
    expect(state.items.reduce((sum, item) => sum + item.quantity, 0)).toBe(expectedUnits);
    expect(state.version).toBe(51);
    const versions = (await api.outbox())
      .filter((row) => row.aggregate_id === cart.id)
      .map((row) => row.aggregate_version);
    expect(versions).toEqual(Array.from({ length: 51 }, (_, i) => i + 1));
  });

  it('20 concurrent PATCHes with the same If-Match: exactly one 200, the rest 412', async () => {
    const customer = await post<{ id: string }>('/customers', {
      email: `${unique('race')}@example.com`,
      name: 'Race',
    });
    const responses = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        api.request('PATCH', `/customers/${customer.id}`, {
          body: { name: `Racer ${i}` },
          headers: { 'if-match': '"1"' },
        }),
      ),
    );
    const statuses = responses.map((r) => r.statusCode).sort();
    expect(statuses).toEqual([200, ...Array.from({ length: 19 }, () => 412)]);
    const events = (await api.outbox()).filter((row) => row.aggregate_id === customer.id);
    expect(events.map((e) => e.aggregate_version)).toEqual([1, 2]);
  });
});

describe('Idempotency-Key', () => {
  it('the same POST twice changes state once and answers the same', async () => {
    const body = { email: `${unique('idem')}@example.com`, name: 'Idem' };
    const key = unique('key-');
    const first = await api.request('POST', '/customers', {
      body,
      headers: { 'idempotency-key': key },
    });
    const afterFirst = await api.snapshot();
    const second = await api.request('POST', '/customers', {
      body,
      headers: { 'idempotency-key': key },
    });
    expect(first.statusCode).toBe(201);
    expect(second.statusCode).toBe(201);
    expect(second.json()).toEqual(first.json());
    expect(second.headers.etag).toBe(first.headers.etag);
    expect(second.headers['x-consistency-token']).toBe(first.headers['x-consistency-token']);
    expect(second.headers['idempotent-replayed']).toBe('true');
    expect(await api.snapshot()).toBe(afterFirst);
  });

  it('concurrent retries with one key produce one change', async () => {
    const customer = await post<{ id: string }>('/customers', {
      email: `${unique('cc')}@example.com`,
      name: 'Cc',
    });
    const key = unique('key-');
    const responses = await Promise.all(
      Array.from({ length: 10 }, () =>
        api.request('POST', '/carts', {
          body: { customerId: customer.id },
          headers: { 'idempotency-key': key },
        }),
      ),
    );
    const ids = new Set(responses.map((r) => r.json<{ id: string }>().id));
    expect(responses.map((r) => r.statusCode)).toEqual(Array.from({ length: 10 }, () => 201));
    expect(ids.size).toBe(1);
    const carts = await api.db
      .selectFrom('shop.carts')
      .select('id')
      .where('customer_id', '=', customer.id)
      .execute();
    expect(carts).toHaveLength(1);
  });

  it('the same key with a different body is a 422 idempotency_key_reused and changes nothing', async () => {
    const key = unique('key-');
    const first = await api.request('POST', '/products', {
      body: { sku: unique('I-'), name: 'First', priceCents: 1, stock: 1 },
      headers: { 'idempotency-key': key },
    });
    expect(first.statusCode).toBe(201);
    const before = await api.snapshot();
    const reused = await api.request('POST', '/products', {
      body: { sku: unique('I-'), name: 'Second', priceCents: 1, stock: 1 },
      headers: { 'idempotency-key': key },
    });
    expect(reused.statusCode).toBe(422);
    expect(reused.json()).toMatchObject({ code: 'idempotency_key_reused' });
    expect(await api.snapshot()).toBe(before);
  });

  it('a failed request does not burn its key', async () => {
    const key = unique('key-');
    const missing = await api.request('POST', '/carts', {
      body: { customerId: '0190a6e2-8d7e-7c3a-9b1e-3f1e2d3c4b5a' },
      headers: { 'idempotency-key': key },
    });
    expect(missing.statusCode).toBe(422);
    const customer = await post<{ id: string }>('/customers', {
      email: `${unique('k')}@example.com`,
      name: 'K',
    });
    // The failed request stored nothing, so the corrected retry may use the same key.
    const corrected = await api.request('POST', '/carts', {
      body: { customerId: customer.id },
      headers: { 'idempotency-key': key },
    });
    expect(corrected.statusCode).toBe(201);
    const stale = await api.request('POST', '/carts', {
      body: { customerId: '0190a6e2-8d7e-7c3a-9b1e-3f1e2d3c4b5a' },
      headers: { 'idempotency-key': key },
    });
    expect(stale.statusCode).toBe(422);
    expect(stale.json()).toMatchObject({ code: 'idempotency_key_reused' });
  });
});

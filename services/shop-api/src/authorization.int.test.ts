// What each token may do: a customer's own data and carts; everything with the admin scope.
// Another customer's resources answer exactly as missing ones do.
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, startShopApi, type ShopApiHarness } from './test-harness.js';

let api: ShopApiHarness;
let ada: { id: string; headers: Record<string, string> };
let bob: { id: string; headers: Record<string, string> };
let productId: string;
let bobsCart: string;
let bobsOrder: string;

let seq = 0;
const unique = (prefix: string) => `${prefix}${Date.now().toString(36)}${(seq += 1)}`;

async function created(pending: ReturnType<ShopApiHarness['request']>) {
  const res = await pending;
  expect(res.statusCode, res.body).toBe(201);
  return res.json<{ id: string; orderId: string }>();
}

async function customer() {
  const body = { email: `${unique('c')}@example.com`, name: 'Customer' };
  const { id } = await created(api.request('POST', '/customers', { body }));
  return { id, headers: await bearer(id) };
}

beforeAll(async () => {
  api = await startShopApi('shop_authz');
  [ada, bob] = [await customer(), await customer()];
  const product = { sku: unique('SKU-'), name: 'Widget', priceCents: 100, stock: 100 };
  productId = (await created(api.request('POST', '/products', { body: product }))).id;
  bobsCart = (await created(api.request('POST', '/carts', { body: { customerId: bob.id } }))).id;
  const item = { productId, quantity: 1 };
  await api.request('POST', `/carts/${bobsCart}/items`, { body: item, headers: bob.headers });
  const checkout = api.request('POST', `/carts/${bobsCart}/checkout`, {
    headers: bob.headers,
  });
  bobsOrder = (await created(checkout)).orderId;
});
afterAll(() => api.close());

describe('a customer', () => {
  it('reads and changes their own customer, shops and checks out their own cart', async () => {
    const headers = ada.headers;
    const own = await api.request('GET', `/customers/${ada.id}`, { headers });
    expect(own.statusCode).toBe(200);
    const patch = { body: { name: 'Ada' }, headers: { ...headers, 'if-match': '"1"' } };
    expect((await api.request('PATCH', `/customers/${ada.id}`, patch)).statusCode).toBe(200);
    const cart = await created(
      api.request('POST', '/carts', { body: { customerId: ada.id }, headers }),
    );
    const body = { productId, quantity: 2 };
    const add = await api.request('POST', `/carts/${cart.id}/items`, { body, headers });
    expect(add.statusCode, add.body).toBe(200);
    expect((await api.request('GET', `/carts/${cart.id}`, { headers })).statusCode).toBe(200);
    const order = await created(api.request('POST', `/carts/${cart.id}/checkout`, { headers }));
    expect((await api.request('GET', `/orders/${order.orderId}`, { headers })).statusCode).toBe(
      200,
    );
    const orders = await api.request('GET', `/orders?customerId=${bob.id}`, { headers });
    expect(orders.json<{ items: unknown[] }>().items).toEqual([]);
    const mine = await api.request('GET', '/orders', { headers });
    expect(mine.json<{ items: { customerId: string }[] }>().items).toEqual([
      expect.objectContaining({ customerId: ada.id }),
    ]);
  });

  it("finds another customer's customer, cart and order missing, exactly as missing ones", async () => {
    const headers = ada.headers;
    const missing = '00000000-0000-4000-8000-000000000000';
    const cases: [string, 'GET' | 'POST' | 'PATCH' | 'DELETE', string, unknown?][] = [
      [`/customers/%s`, 'GET', bob.id],
      [`/customers/%s`, 'PATCH', bob.id, { name: 'Mallory' }],
      [`/carts/%s`, 'GET', bobsCart],
      [`/carts/%s/items`, 'POST', bobsCart, { productId, quantity: 1 }],
      [`/carts/%s/items/${productId}`, 'DELETE', bobsCart],
      [`/carts/%s/checkout`, 'POST', bobsCart],
      [`/orders/%s`, 'GET', bobsOrder],
    ];
    for (const [path, method, id, body] of cases) {
      const options = { headers: { ...headers, 'if-match': '"1"' }, body };
      const theirs = await api.request(method, path.replace('%s', id), options);
      const none = await api.request(method, path.replace('%s', missing), options);
      expect(theirs.statusCode, `${method} ${path}`).toBe(404);
      expect(theirs.json(), `${method} ${path}`).toMatchObject({ code: 'not_found' });
      expect(none.statusCode, `${method} ${path} (missing)`).toBe(404);
      expect(theirs.json<{ detail: string }>().detail.replace(id, missing)).toBe(
        none.json<{ detail: string }>().detail,
      );
    }
  });

  it('cannot open a cart for another customer: 403 forbidden', async () => {
    const before = await api.snapshot();
    const body = { customerId: bob.id };
    const res = await api.request('POST', '/carts', { body, headers: ada.headers });
    expect(res.statusCode).toBe(403);
    expect(res.json()).toMatchObject({ code: 'forbidden' });
    expect(await api.snapshot()).toBe(before);
  });

  it('cannot list or erase customers, register one, change products or read admin views: 403', async () => {
    const before = await api.snapshot();
    const headers = { ...ada.headers, 'if-match': '"1"' };
    const product = { sku: unique('SKU-'), name: 'Widget', priceCents: 1, stock: 1 };
    const cases: ['GET' | 'POST' | 'PATCH' | 'DELETE', string, unknown?][] = [
      ['GET', '/customers'],
      ['DELETE', `/customers/${ada.id}`],
      ['DELETE', `/customers/${bob.id}`],
      ['POST', '/customers', { email: `${unique('c')}@example.com`, name: 'New' }],
      ['POST', '/products', product],
      ['PATCH', `/products/${productId}`, { stock: 0 }],
      ['DELETE', `/products/${productId}`],
      ['GET', `/views/audit?aggregateType=customer&aggregateId=${bob.id}`],
      ['GET', `/views/products/${productId}/sales`],
    ];
    for (const [method, url, body] of cases) {
      const res = await api.request(method, url, { headers, body });
      expect(res.statusCode, `${method} ${url}`).toBe(403);
      expect(res.json()).toMatchObject({ code: 'forbidden' });
    }
    expect(await api.snapshot()).toBe(before);
  });

  it('reads products', async () => {
    const headers = ada.headers;
    expect((await api.request('GET', '/products', { headers })).statusCode).toBe(200);
    expect((await api.request('GET', `/products/${productId}`, { headers })).statusCode).toBe(200);
  });
});

describe('the cart view', () => {
  beforeAll(async () => {
    // The projector's cart view, as far as reading it needs, with Bob's cart in it.
    await sql`
      CREATE SCHEMA views;
      CREATE TABLE views.cart_summaries (
        cart_id uuid PRIMARY KEY, customer_id uuid, status text NOT NULL,
        item_count integer NOT NULL, total_cents bigint NOT NULL, version bigint NOT NULL);
    `.execute(api.db);
    await sql`INSERT INTO views.cart_summaries
              VALUES (${bobsCart}, ${bob.id}, 'checked_out', 1, 100, 3)`.execute(api.db);
  });

  it("answers another customer's cart exactly as a missing one, its owner and an admin with it", async () => {
    const missing = '00000000-0000-4000-8000-000000000000';
    const theirs = await api.request('GET', `/views/carts/${bobsCart}`, { headers: ada.headers });
    const none = await api.request('GET', `/views/carts/${missing}`, { headers: ada.headers });
    expect(theirs.statusCode).toBe(404);
    expect(theirs.json()).toMatchObject({ code: 'not_found' });
    expect(theirs.json<{ detail: string }>().detail.replace(bobsCart, missing)).toBe(
      none.json<{ detail: string }>().detail,
    );
    const own = await api.request('GET', `/views/carts/${bobsCart}`, { headers: bob.headers });
    expect(own.statusCode).toBe(200);
    expect(own.json()).toMatchObject({ cartId: bobsCart, customerId: bob.id });
    expect((await api.request('GET', `/views/carts/${bobsCart}`)).statusCode).toBe(200);
  });
});

describe('the admin scope', () => {
  const listAs = async (claims: Record<string, unknown>) =>
    (await api.request('GET', '/customers', { headers: await bearer('someone', claims) }))
      .statusCode;

  it('is read from scope, space-separated, or else from scp as an array or a string', async () => {
    expect(await listAs({ scope: 'read admin' })).toBe(200);
    expect(await listAs({ scp: ['read', 'admin'] })).toBe(200);
    expect(await listAs({ scp: 'read admin' })).toBe(200);
    expect(await listAs({ scp: [7, 'admin'] })).toBe(200);
  });

  it('is not a prefix, another case, a scope that only scp has, or anything else', async () => {
    const cases = [
      {},
      { scope: 'administrator' },
      { scope: 'Admin' },
      { scp: ['read'] },
      { scp: ['admin read'] },
      { scp: { admin: true } },
      { scope: 'read', scp: ['admin'] },
      { roles: ['admin'] },
    ];
    for (const claims of cases) expect(await listAs(claims), JSON.stringify(claims)).toBe(403);
  });
});

describe('an admin', () => {
  it('lists customers and erases one', async () => {
    const list = await api.request('GET', '/customers?limit=100');
    expect(list.statusCode).toBe(200);
    const erased = await customer();
    const res = await api.request('DELETE', `/customers/${erased.id}`, {
      headers: { 'if-match': '"1"' },
    });
    expect(res.statusCode, res.body).toBe(204);
  });
});

describe('the actor of events', () => {
  it("is the token's subject; X-Actor is ignored and X-Reason kept", async () => {
    const headers = { ...ada.headers, 'x-actor': 'mallory', 'x-reason': 'birthday present' };
    const cart = await created(
      api.request('POST', '/carts', { body: { customerId: ada.id }, headers }),
    );
    const rows = (await api.outbox()).filter((row) => row.aggregate_id === cart.id);
    expect(rows.map((row) => row.metadata)).toEqual([
      expect.objectContaining({ actor: ada.id, reason: 'birthday present' }),
    ]);
  });
});

describe('with authentication off', () => {
  it('every request, with or without a token, acts as the admin "dev"', async () => {
    const open = await startShopApi('shop_authz', { sharing: api, auth: { mode: 'off' } });
    try {
      const body = { email: `${unique('c')}@example.com`, name: 'Dev' };
      const headers = { authorization: '', 'x-actor': 'mallory' };
      const { id } = await created(open.request('POST', '/customers', { body, headers }));
      const rows = (await open.outbox()).filter((row) => row.aggregate_id === id);
      expect(rows.map((row) => row.metadata.actor)).toEqual(['dev']);
      const garbage = { authorization: 'Bearer not.a.token' };
      expect((await open.request('GET', '/customers', { headers: garbage })).statusCode).toBe(200);
    } finally {
      await open.close();
    }
  });
});

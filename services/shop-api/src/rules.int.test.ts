// Every success and failure row of the REST contract: status, problem code, ETag, events, and
// for failures, that nothing changed.
import { shopCatalog } from '@sluice/shop-catalog';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, startShopApi, type ShopApiHarness } from './test-harness.js';

let api: ShopApiHarness;
beforeAll(async () => {
  api = await startShopApi('shop_rules');
});
afterAll(() => api.close());

let seq = 0;
const unique = (prefix: string) => `${prefix}${Date.now().toString(36)}${(seq += 1)}`;

async function createCustomer(email = `${unique('c')}@example.com`) {
  const res = await api.request('POST', '/customers', { body: { email, name: 'Ada' } });
  expect(res.statusCode).toBe(201);
  return res.json<{ id: string; email: string; version: number }>();
}

async function createProduct(stock = 10, priceCents = 250) {
  const res = await api.request('POST', '/products', {
    body: { sku: unique('SKU-'), name: 'Widget', priceCents, stock },
  });
  expect(res.statusCode).toBe(201);
  return res.json<{ id: string; sku: string; version: number }>();
}

async function openCart(customerId: string) {
  const res = await api.request('POST', '/carts', { body: { customerId } });
  expect(res.statusCode).toBe(201);
  return res.json<{ id: string; version: number }>();
}

/** Runs `request`, expects a problem with `status` and `code`, and that no row changed. */
async function expectProblem(
  request: () => ReturnType<ShopApiHarness['request']>,
  status: number,
  code: string,
) {
  const before = await api.snapshot();
  const res = await request();
  expect(res.statusCode, res.body).toBe(status);
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(res.json()).toMatchObject({
    status,
    code,
    type: expect.any(String),
    title: expect.any(String),
    detail: expect.any(String),
  });
  expect(await api.snapshot()).toBe(before);
}

describe('customers', () => {
  it('registers, reads, lists, renames and erases', async () => {
    const created = await api.request('POST', '/customers', {
      body: { email: 'Grace@Example.com', name: 'Grace' },
    });
    expect(created.statusCode).toBe(201);
    expect(created.headers.etag).toBe('"1"');
    expect(created.headers['x-consistency-token']).toEqual(expect.any(String));
    const { id } = created.json<{ id: string }>();

    const read = await api.request('GET', `/customers/${id}`);
    expect(read.json()).toMatchObject({
      id,
      email: 'Grace@Example.com',
      name: 'Grace',
      version: 1,
    });
    const list = await api.request('GET', '/customers?limit=100');
    expect(list.json<{ items: { id: string }[] }>().items.map((c) => c.id)).toContain(id);

    const patched = await api.request('PATCH', `/customers/${id}`, {
      body: { name: 'Grace H.', email: 'grace@navy.example' },
      headers: { 'if-match': '"1"' },
    });
    expect(patched.statusCode).toBe(200);
    expect(patched.headers.etag).toBe('"3"');

    const erased = await api.request('DELETE', `/customers/${id}`, {
      headers: { 'if-match': '"3"' },
    });
    expect(erased.statusCode).toBe(204);
    expect((await api.request('GET', `/customers/${id}`)).statusCode).toBe(404);
    const row = await api.db
      .selectFrom('shop.customers')
      .selectAll()
      .where('id', '=', id)
      .executeTakeFirstOrThrow();
    expect(row).toMatchObject({ email: null, name: null, version: 4 });

    const events = (await api.outbox()).filter((e) => e.aggregate_id === id);
    expect(events.map((e) => [e.type, e.aggregate_version])).toEqual([
      ['customer.registered.v1', 1],
      ['customer.renamed.v1', 2],
      ['customer.email_changed.v1', 3],
      ['customer.erased.v1', 4],
    ]);
    expect(events[3]?.payload).toEqual({ customerId: id });
  });

  it('409 email_taken, case-insensitively, on create and on change', async () => {
    const taken = await createCustomer(`${unique('taken')}@example.com`);
    await expectProblem(
      () =>
        api.request('POST', '/customers', {
          body: { email: taken.email.toUpperCase(), name: 'Copy' },
        }),
      409,
      'email_taken',
    );
    const other = await createCustomer();
    await expectProblem(
      () =>
        api.request('PATCH', `/customers/${other.id}`, {
          body: { email: taken.email.toUpperCase() },
          headers: { 'if-match': '"1"' },
        }),
      409,
      'email_taken',
    );
  });

  it('404, 412 and 428 on reads and updates', async () => {
    const customer = await createCustomer();
    await expectProblem(
      () => api.request('GET', '/customers/0190a6e2-8d7e-7c3a-9b1e-3f1e2d3c4b5a'),
      404,
      'not_found',
    );
    await expectProblem(
      () => api.request('PATCH', `/customers/${customer.id}`, { body: { name: 'X' } }),
      428,
      'precondition_required',
    );
    await expectProblem(
      () =>
        api.request('PATCH', `/customers/${customer.id}`, {
          body: { name: 'X' },
          headers: { 'if-match': '"7"' },
        }),
      412,
      'precondition_failed',
    );
    await expectProblem(
      () => api.request('DELETE', `/customers/${customer.id}`),
      428,
      'precondition_required',
    );
  });
});

describe('products', () => {
  it('lists, reprices, restocks and delists with one event each', async () => {
    const product = await createProduct(5, 100);
    const patched = await api.request('PATCH', `/products/${product.id}`, {
      body: { priceCents: 120, stock: 9 },
      headers: { 'if-match': '"1"' },
    });
    expect(patched.statusCode).toBe(200);
    expect(patched.json()).toMatchObject({ priceCents: 120, stock: 9, version: 3 });
    expect(
      (await api.request('DELETE', `/products/${product.id}`, { headers: { 'if-match': '"3"' } }))
        .statusCode,
    ).toBe(204);
    const events = (await api.outbox()).filter((e) => e.aggregate_id === product.id);
    expect(events.map((e) => e.type)).toEqual([
      'product.listed.v1',
      'product.repriced.v1',
      'product.restocked.v1',
      'product.delisted.v1',
    ]);
  });

  it('409 sku_taken, 404, 412, 428', async () => {
    const product = await createProduct();
    await expectProblem(
      () =>
        api.request('POST', '/products', {
          body: { sku: product.sku, name: 'Copy', priceCents: 1, stock: 1 },
        }),
      409,
      'sku_taken',
    );
    await expectProblem(
      () => api.request('GET', '/products/0190a6e2-8d7e-7c3a-9b1e-3f1e2d3c4b5a'),
      404,
      'not_found',
    );
    await expectProblem(
      () => api.request('PATCH', `/products/${product.id}`, { body: { stock: 1 } }),
      428,
      'precondition_required',
    );
    await expectProblem(
      () =>
        api.request('PATCH', `/products/${product.id}`, {
          body: { stock: 1 },
          headers: { 'if-match': '"2"' },
        }),
      412,
      'precondition_failed',
    );
  });
});

describe('carts and orders', () => {
  it('opens, adds, removes, checks out, reserves stock and places an order', async () => {
    const customer = await createCustomer();
    const apple = await createProduct(10, 150);
    const pear = await createProduct(10, 90);
    const cart = await openCart(customer.id);

    const add = (productId: string, quantity: number) =>
      api.request('POST', `/carts/${cart.id}/items`, { body: { productId, quantity } });
    expect((await add(apple.id, 2)).statusCode).toBe(200);
    expect((await add(apple.id, 1)).statusCode).toBe(200);
    const withPear = await add(pear.id, 4);
    expect(withPear.json()).toMatchObject({ totalCents: 3 * 150 + 4 * 90, version: 4 });
    const removed = await api.request('DELETE', `/carts/${cart.id}/items/${pear.id}`);
    expect(removed.json()).toMatchObject({ totalCents: 450, version: 5 });

    const checkout = await api.request('POST', `/carts/${cart.id}/checkout`);
    expect(checkout.statusCode).toBe(201);
    const order = checkout.json<{ orderId: string; totalCents: number }>();
    expect(order.totalCents).toBe(450);
    expect((await api.request('GET', `/orders/${order.orderId}`)).json()).toMatchObject({
      orderId: order.orderId,
      customerId: customer.id,
      lines: [{ productId: apple.id, quantity: 3, unitPriceCents: 150 }],
      totalCents: 450,
    });
    const byCustomer = await api.request('GET', `/orders?customerId=${customer.id}`);
    expect(byCustomer.json<{ items: { orderId: string }[] }>().items.map((o) => o.orderId)).toEqual(
      [order.orderId],
    );
    expect((await api.request('GET', `/products/${apple.id}`)).json()).toMatchObject({ stock: 7 });
    expect((await api.request('GET', `/carts/${cart.id}`)).json()).toMatchObject({
      status: 'checked_out',
      version: 6,
    });

    const events = (await api.outbox()).filter(
      (e) => e.aggregate_id === cart.id || e.aggregate_id === order.orderId,
    );
    expect(events.map((e) => e.type).sort()).toEqual(
      [
        'cart.opened.v1',
        'cart.item_added.v1',
        'cart.item_added.v1',
        'cart.item_added.v1',
        'cart.item_removed.v1',
        'cart.checked_out.v1',
        'order.placed.v1',
      ].sort(),
    );
  });

  it('409 quantity_limit past 10000 units in a line, and 412 for a stale If-Match on a cart', async () => {
    const cart = await openCart((await createCustomer()).id);
    const product = await createProduct(100_000, 1);
    for (let i = 0; i < 10; i += 1) {
      const res = await api.request('POST', `/carts/${cart.id}/items`, {
        body: { productId: product.id, quantity: 1000 },
      });
      expect(res.statusCode).toBe(200);
    }
    await expectProblem(
      () =>
        api.request('POST', `/carts/${cart.id}/items`, {
          body: { productId: product.id, quantity: 1 },
        }),
      409,
      'quantity_limit',
    );
    await expectProblem(
      () =>
        api.request('POST', `/carts/${cart.id}/items`, {
          body: { productId: product.id, quantity: 1 },
          headers: { 'if-match': '"1"' },
        }),
      412,
      'precondition_failed',
    );
  });

  it('422 customer_not_found and product_not_found, 404 for unknown carts', async () => {
    await expectProblem(
      () =>
        api.request('POST', '/carts', {
          body: { customerId: '0190a6e2-8d7e-7c3a-9b1e-3f1e2d3c4b5a' },
        }),
      422,
      'customer_not_found',
    );
    const cart = await openCart((await createCustomer()).id);
    await expectProblem(
      () =>
        api.request('POST', `/carts/${cart.id}/items`, {
          body: { productId: '0190a6e2-8d7e-7c3a-9b1e-3f1e2d3c4b5a', quantity: 1 },
        }),
      422,
      'product_not_found',
    );
    await expectProblem(
      () => api.request('GET', '/carts/0190a6e2-8d7e-7c3a-9b1e-3f1e2d3c4b5a'),
      404,
      'not_found',
    );
    await expectProblem(
      () => api.request('GET', '/orders/0190a6e2-8d7e-7c3a-9b1e-3f1e2d3c4b5a'),
      404,
      'not_found',
    );
  });

  it('409 item_not_in_cart, cart_empty, insufficient_stock and cart_not_open', async () => {
    const customer = await createCustomer();
    const scarce = await createProduct(1, 500);
    const cart = await openCart(customer.id);
    await expectProblem(
      () => api.request('DELETE', `/carts/${cart.id}/items/${scarce.id}`),
      409,
      'item_not_in_cart',
    );
    await expectProblem(() => api.request('POST', `/carts/${cart.id}/checkout`), 409, 'cart_empty');
    await api.request('POST', `/carts/${cart.id}/items`, {
      body: { productId: scarce.id, quantity: 2 },
    });
    await expectProblem(
      () => api.request('POST', `/carts/${cart.id}/checkout`),
      409,
      'insufficient_stock',
    );

    await api.request('DELETE', `/carts/${cart.id}/items/${scarce.id}`);
    await api.request('POST', `/carts/${cart.id}/items`, {
      body: { productId: scarce.id, quantity: 1 },
    });
    expect((await api.request('POST', `/carts/${cart.id}/checkout`)).statusCode).toBe(201);
    await expectProblem(
      () =>
        api.request('POST', `/carts/${cart.id}/items`, {
          body: { productId: scarce.id, quantity: 1 },
        }),
      409,
      'cart_not_open',
    );
    await expectProblem(
      () => api.request('DELETE', `/carts/${cart.id}/items/${scarce.id}`),
      409,
      'cart_not_open',
    );
    await expectProblem(
      () => api.request('POST', `/carts/${cart.id}/checkout`),
      409,
      'cart_not_open',
    );
  });
});

describe('events', () => {
  it('every outbox row written so far validates against its JSON Schema and carries metadata', async () => {
    await api.request('POST', '/customers', {
      body: { email: `${unique('meta')}@example.com`, name: 'Meta' },
      headers: {
        traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
        'x-correlation-id': 'corr-123',
        ...(await bearer('user:42', { scope: 'admin' })),
        'x-reason': 'signup form',
      },
    });
    const rows = await api.outbox();
    expect(rows.length).toBeGreaterThan(10);
    for (const row of rows)
      expect(shopCatalog.payloadErrors(row.type, row.payload), row.type).toEqual([]);
    expect(rows.find((r) => r.metadata.correlation_id === 'corr-123')?.metadata).toMatchObject({
      traceparent: expect.stringMatching(/^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/),
      actor: 'user:42',
      reason: 'signup form',
    });
    const byAggregate = new Map<string, number[]>();
    for (const row of rows) {
      const key = `${row.aggregate_type}/${row.aggregate_id}`;
      byAggregate.set(key, [...(byAggregate.get(key) ?? []), row.aggregate_version]);
    }
    for (const [key, versions] of byAggregate) {
      expect(versions, key).toEqual(versions.map((_, index) => index + 1));
    }
  });
});

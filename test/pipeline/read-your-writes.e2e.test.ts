// The whole pipeline as real processes: shop-api → PostgreSQL → relay → Kafka → projector →
// views, read back through shop-api with the write's consistency token.
import { shopAdminHeaders } from '../support/access.js';
import { startPipeline, type Pipeline } from '../support/pipeline.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

let pipeline: Pipeline;
let base: string;

async function call(
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: {
      ...shopAdminHeaders(),
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      ...headers,
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return {
    status: response.status,
    headers: response.headers,
    json: ((text) => (text === '' ? {} : JSON.parse(text)) as Record<string, unknown>)(
      await response.text(),
    ),
  };
}

beforeAll(async () => {
  pipeline = await startPipeline('pipeline');
  base = pipeline.base;
  const projector = pipeline.startProjector();
  await projector.waitForOutput('"msg":"consuming"', {
    timeoutMs: 60_000,
    message: 'projector up',
  });
});

afterAll(() => pipeline.close());

describe('read your writes', () => {
  it('a view read with the write’s consistency token shows that write, every time', async () => {
    const customer = await call('POST', '/customers', { email: 'ryw@example.com', name: 'R' });
    const product = await call('POST', '/products', {
      sku: 'RYW-1',
      name: 'P',
      priceCents: 250,
      stock: 1000,
    });
    const cart = await call('POST', '/carts', { customerId: customer.json.id });
    const cartId = String(cart.json.id);
    for (let i = 1; i <= 100; i += 1) {
      const write = await call('POST', `/carts/${cartId}/items`, {
        productId: product.json.id,
        quantity: 1,
      });
      expect(write.status).toBe(200);
      const token = write.headers.get('x-consistency-token') ?? '';
      const view = await call('GET', `/views/carts/${cartId}`, undefined, {
        'x-consistency-token': token,
      });
      expect(view.status).toBe(200);
      expect(view.json).toMatchObject({
        cartId,
        itemCount: i,
        totalCents: i * 250,
        version: i + 1,
        status: 'open',
      });
    }
    const checkout = await call('POST', `/carts/${cartId}/checkout`);
    const done = await call('GET', `/views/carts/${cartId}`, undefined, {
      'x-consistency-token': checkout.headers.get('x-consistency-token') ?? '',
    });
    expect(done.json).toMatchObject({ status: 'checked_out', itemCount: 100, totalCents: 25_000 });
    // The cart's audit trail in version order: 1, 2, … 102, not 1, 10, 100, 101, 102, 11, …
    const trail = await call(
      'GET',
      `/views/audit?aggregateType=cart&aggregateId=${cartId}`,
      undefined,
      {
        'x-consistency-token': checkout.headers.get('x-consistency-token') ?? '',
      },
    );
    expect((trail.json.items as { version: number }[]).map((item) => item.version)).toEqual(
      Array.from({ length: 102 }, (_, i) => i + 1),
    );
    const sales = await call('GET', `/views/products/${String(product.json.id)}/sales`, undefined, {
      'x-consistency-token': checkout.headers.get('x-consistency-token') ?? '',
    });
    expect(sales.json).toEqual({
      productId: product.json.id,
      addedCount: 100,
      removedCount: 0,
      unitsSold: 100,
      revenueCents: 25_000,
    });

    // The view equals the fold of the write model.
    const { rows } = await pipeline.pool.query<{ items: number; total: string }>(
      `SELECT sum(quantity)::int AS items, sum(quantity * unit_price_cents)::text AS total FROM shop.cart_items WHERE cart_id = $1`,
      [cartId],
    );
    expect(done.json.itemCount).toBe(rows[0]?.items);
    expect(done.json.totalCents).toBe(Number(rows[0]?.total));
  });

  it('answers 400 for a forged token and 404 for a cart the view has never seen', async () => {
    const forged = await call(
      'GET',
      '/views/carts/0190a6e2-8d7e-7c3a-9b1e-3f1e2d3c4b5a',
      undefined,
      { 'x-consistency-token': 'bm9wZQ' },
    );
    expect(forged.status).toBe(400);
    expect(forged.json).toMatchObject({ code: 'invalid_consistency_token' });
    const missing = await call('GET', '/views/carts/0190a6e2-8d7e-7c3a-9b1e-3f1e2d3c4b5a');
    expect(missing.status).toBe(404);
  });

  it('reports customers who removed a product and bought it later, and audits who/what/when/why without personal data after erasure', async () => {
    // The audit names the token's subject; a claimed X-Actor changes nothing.
    const who = { ...shopAdminHeaders('user:ada'), 'x-actor': 'mallory', 'x-reason': 'e2e' };
    const customer = await call(
      'POST',
      '/customers',
      { email: 'ada@example.com', name: 'Ada' },
      who,
    );
    const customerId = String(customer.json.id);
    const apple = await call('POST', '/products', {
      sku: 'RTB-A',
      name: 'Apple',
      priceCents: 100,
      stock: 10,
    });
    const pear = await call('POST', '/products', {
      sku: 'RTB-P',
      name: 'Pear',
      priceCents: 50,
      stock: 10,
    });
    const first = await call('POST', '/carts', { customerId });
    const firstId = String(first.json.id);
    await call('POST', `/carts/${firstId}/items`, { productId: apple.json.id, quantity: 1 });
    await call('POST', `/carts/${firstId}/items`, { productId: pear.json.id, quantity: 1 });
    await call('DELETE', `/carts/${firstId}/items/${String(apple.json.id)}`);
    await call('POST', `/carts/${firstId}/checkout`);
    const second = await call('POST', '/carts', { customerId });
    await call('POST', `/carts/${String(second.json.id)}/items`, {
      productId: apple.json.id,
      quantity: 2,
    });
    const bought = await call('POST', `/carts/${String(second.json.id)}/checkout`);
    const report = await call(
      'GET',
      `/views/reports/removed-then-bought?customerId=${customerId}`,
      undefined,
      {
        'x-consistency-token': bought.headers.get('x-consistency-token') ?? '',
      },
    );
    expect(report.status).toBe(200);
    expect(report.json.items).toEqual([
      {
        customerId,
        productId: apple.json.id,
        removedAt: expect.any(String),
        boughtAt: expect.any(String),
      },
    ]);

    const erased = await call('DELETE', `/customers/${customerId}`, undefined, {
      'if-match': '"1"',
      ...who,
      'x-reason': 'gdpr request',
    });
    expect(erased.status).toBe(204);
    const audit = await call(
      'GET',
      `/views/audit?aggregateType=customer&aggregateId=${customerId}`,
      undefined,
      {
        'x-consistency-token': erased.headers.get('x-consistency-token') ?? '',
      },
    );
    expect(audit.json.items).toEqual([
      expect.objectContaining({
        version: 1,
        what: 'customer.registered.v1',
        who: 'user:ada',
        why: 'e2e',
        data: { customerId, email: '[erased]', name: '[erased]' },
      }),
      expect.objectContaining({
        version: 2,
        what: 'customer.erased.v1',
        who: 'user:ada',
        why: 'gdpr request',
        data: { customerId },
      }),
    ]);
    expect(JSON.stringify(audit.json)).not.toMatch(/ada@example\.com|"Ada"/);
  });
});

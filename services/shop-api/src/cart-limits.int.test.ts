// A request the API accepts never fails the event catalog's schema: carts stay within what
// order.placed.v1 can carry (at most 1000 lines, a total within Cents), refused at add time with
// a 409, and carts that grew past it before are refused at checkout, changing nothing.
import { Writable } from 'node:stream';
import { sql } from 'kysely';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startShopApi, type ShopApiHarness } from './test-harness.js';

const MAX_CENTS = 100_000_000_000;
const MAX_LINES = 1000;

/** Every log line the app wrote, parsed. */
const logs: { level: number; msg?: string; err?: { code?: string } }[] = [];
let api: ShopApiHarness;
let customerId = '';

beforeAll(async () => {
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) {
        logs.push(JSON.parse(line) as (typeof logs)[number]);
      }
      done();
    },
  });
  api = await startShopApi('shop_cart_limits', { logger: pino({ level: 'info' }, sink) });
  const customer = await api.request('POST', '/customers', {
    body: { email: 'limits@example.com', name: 'Limits' },
  });
  expect(customer.statusCode).toBe(201);
  customerId = customer.json<{ id: string }>().id;
});
afterAll(() => api.close());

let seq = 0;
const unique = (prefix: string) => `${prefix}${Date.now().toString(36)}${(seq += 1)}`;

async function createProduct(priceCents: number, stock = 1_000_000): Promise<string> {
  const res = await api.request('POST', '/products', {
    body: { sku: unique('L-'), name: 'Limit', priceCents, stock },
  });
  expect(res.statusCode, res.body).toBe(201);
  return res.json<{ id: string }>().id;
}

async function openCart(): Promise<string> {
  const res = await api.request('POST', '/carts', { body: { customerId } });
  expect(res.statusCode, res.body).toBe(201);
  return res.json<{ id: string }>().id;
}

const add = (cartId: string, productId: string, quantity: number) =>
  api.request('POST', `/carts/${cartId}/items`, { body: { productId, quantity } });

/** Orders, outbox rows and the stock of every product: what a checkout would change. */
async function checkoutEffects() {
  const { rows } = await sql<{ orders: string; outbox: string; stock: string }>`
    SELECT (SELECT count(*) FROM shop.orders)::text AS orders,
           (SELECT count(*) FROM shop.outbox)::text AS outbox,
           (SELECT string_agg(id || '=' || stock, ',' ORDER BY id) FROM shop.products) AS stock
  `.execute(api.db);
  return rows[0];
}

/** Runs `send`, expects a problem with `status` and `code`, and that no row changed. */
async function expectProblem(
  send: () => ReturnType<ShopApiHarness['request']>,
  status: number,
  code: string,
) {
  const before = await api.snapshot();
  const effects = await checkoutEffects();
  const res = await send();
  expect(res.statusCode, res.body).toBe(status);
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(res.json()).toMatchObject({ status, code, detail: expect.any(String) });
  expect(await checkoutEffects()).toEqual(effects);
  expect(await api.snapshot()).toBe(before);
}

/** Lines written straight into the table, as carts created before the limits could hold. */
async function insertLines(cartId: string, lines: { productId: string; quantity: number }[]) {
  await sql`
    INSERT INTO shop.cart_items (cart_id, product_id, quantity, unit_price_cents)
    SELECT ${cartId}::uuid, p.id, l.quantity, p.price_cents
      FROM jsonb_to_recordset(${JSON.stringify(lines)}::jsonb) AS l("productId" uuid, quantity int)
      JOIN shop.products p ON p.id = l."productId"`.execute(api.db);
}

describe('lines per cart', () => {
  const products: string[] = [];
  beforeAll(async () => {
    for (let start = 0; start <= MAX_LINES; start += 50) {
      const batch = Math.min(50, MAX_LINES + 1 - start);
      products.push(...(await Promise.all(Array.from({ length: batch }, () => createProduct(7)))));
    }
  });

  it('a 1,000-line cart checks out; a 1,001st line is refused at add with 409 cart_lines_limit', async () => {
    const cartId = await openCart();
    for (const productId of products.slice(0, MAX_LINES)) {
      const res = await add(cartId, productId, 2);
      expect(res.statusCode, res.body).toBe(200);
    }
    const last = products[MAX_LINES] ?? '';
    await expectProblem(() => add(cartId, last, 1), 409, 'cart_lines_limit');
    // Adding units to a line the cart already has is not a new line.
    expect((await add(cartId, products[0] ?? '', 1)).statusCode).toBe(200);

    const checkout = await api.request('POST', `/carts/${cartId}/checkout`);
    expect(checkout.statusCode, checkout.body).toBe(201);
    const order = checkout.json<{ orderId: string; lines: unknown[]; totalCents: number }>();
    expect(order.lines).toHaveLength(MAX_LINES);
    expect(order.totalCents).toBe((2 * MAX_LINES + 1) * 7);
    const placed = (await api.outbox()).find((row) => row.aggregate_id === order.orderId);
    expect((placed?.payload.lines as unknown[] | undefined)?.length).toBe(MAX_LINES);
  });

  it('a cart that already holds 1,001 lines is refused at checkout with 409 cart_lines_limit', async () => {
    const cartId = await openCart();
    await insertLines(
      cartId,
      products.map((productId) => ({ productId, quantity: 1 })),
    );
    await expectProblem(
      () => api.request('POST', `/carts/${cartId}/checkout`),
      409,
      'cart_lines_limit',
    );
    // More units on an existing line keep the cart impossible to check out: refused too.
    await expectProblem(() => add(cartId, products[0] ?? '', 1), 409, 'cart_lines_limit');
    // Taking a line out makes it possible again.
    const removed = await api.request('DELETE', `/carts/${cartId}/items/${products[0] ?? ''}`);
    expect(removed.statusCode, removed.body).toBe(200);
    const checkout = await api.request('POST', `/carts/${cartId}/checkout`);
    expect(checkout.statusCode, checkout.body).toBe(201);
  });
});

describe('cart totals', () => {
  it('a total of exactly the Cents maximum checks out, in one unit or in 10,000', async () => {
    const single = await openCart();
    expect((await add(single, await createProduct(MAX_CENTS), 1)).json()).toMatchObject({
      totalCents: MAX_CENTS,
    });
    const one = await api.request('POST', `/carts/${single}/checkout`);
    expect(one.statusCode, one.body).toBe(201);
    expect(one.json()).toMatchObject({ totalCents: MAX_CENTS });

    const bulk = await openCart();
    const product = await createProduct(MAX_CENTS / 10_000);
    for (let i = 0; i < 10; i += 1) expect((await add(bulk, product, 1000)).statusCode).toBe(200);
    const many = await api.request('POST', `/carts/${bulk}/checkout`);
    expect(many.statusCode, many.body).toBe(201);
    expect(many.json()).toMatchObject({ totalCents: MAX_CENTS });
  });

  it('an add that takes the total one cent past the maximum is a 409 cart_total_limit', async () => {
    const cartId = await openCart();
    const dear = await createProduct(MAX_CENTS);
    expect((await add(cartId, dear, 1)).statusCode).toBe(200);
    const cent = await createProduct(1);
    await expectProblem(() => add(cartId, cent, 1), 409, 'cart_total_limit');
    await expectProblem(() => add(cartId, dear, 1), 409, 'cart_total_limit');
    // 1000 units at the maximum price: a line total of 10^14 cents, far past the limit.
    const other = await openCart();
    await expectProblem(() => add(other, dear, 1000), 409, 'cart_total_limit');
  });

  it('a cart whose total passed the maximum before is refused at checkout with 409 cart_total_limit', async () => {
    const overByOne = await openCart();
    await insertLines(overByOne, [
      { productId: await createProduct(MAX_CENTS), quantity: 1 },
      { productId: await createProduct(1), quantity: 1 },
    ]);
    await expectProblem(
      () => api.request('POST', `/carts/${overByOne}/checkout`),
      409,
      'cart_total_limit',
    );

    // Line totals of 10^15: their sum is past 2^53, where floating-point sums are inexact.
    const huge = await openCart();
    const lines = [];
    for (let i = 0; i < 10; i += 1) {
      lines.push({ productId: await createProduct(MAX_CENTS), quantity: 10_000 });
    }
    await insertLines(huge, lines);
    await expectProblem(
      () => api.request('POST', `/carts/${huge}/checkout`),
      409,
      'cart_total_limit',
    );
    const cart = await api.request('GET', `/carts/${huge}`);
    expect(cart.statusCode, cart.body).toBe(200);
  });
});

describe('events the catalog refuses', () => {
  it('become a 422 event_invalid, logged at error level, and change nothing', async () => {
    // A stock level beyond the catalog's Stock, written outside the API: restocking would emit
    // it as previousStock.
    const id = '0190a6e2-8d7e-7c3a-9b1e-00000000beef';
    await sql`INSERT INTO shop.products (id, sku, name, price_cents, stock, version)
              VALUES (${id}, ${unique('RAW-')}, 'Raw', 1, 2000000000, 1)`.execute(api.db);
    const errorsBefore = logs.filter((line) => line.level >= 50).length;
    await expectProblem(
      () =>
        api.request('PATCH', `/products/${id}`, {
          body: { stock: 5 },
          headers: { 'if-match': '"1"' },
        }),
      422,
      'event_invalid',
    );
    const logged = logs.filter((line) => line.level >= 50).slice(errorsBefore);
    expect(logged).toEqual([
      expect.objectContaining({ err: expect.objectContaining({ code: 'event_payload_invalid' }) }),
    ]);
  });
});

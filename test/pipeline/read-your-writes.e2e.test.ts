// The whole pipeline as real processes: shop-api → PostgreSQL → relay → Kafka → projector →
// views, read back through shop-api with the write's consistency token.
import {
  createTestDatabase,
  freePort,
  testServers,
  uniqueName,
  waitFor,
  type TestDatabase,
} from '@sluice/testkit';
import pg from 'pg';
import { startService, type ServiceProcess } from '../support/services.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const { databaseUrl, kafkaBrokers } = testServers();
let database: TestDatabase;
let base: string;
const children: ServiceProcess[] = [];

function start(
  name: 'shop-api' | 'relay' | 'projector',
  env: Record<string, string>,
): ServiceProcess {
  const service = startService(name, {
    DATABASE_URL: database.url,
    KAFKA_BROKERS: kafkaBrokers.join(','),
    ...env,
  });
  children.push(service);
  return service;
}

async function call(
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return {
    status: response.status,
    headers: response.headers,
    json: (await response.json()) as Record<string, unknown>,
  };
}

beforeAll(async () => {
  database = await createTestDatabase(databaseUrl, 'pipeline');
  const topicPrefix = `${uniqueName('pipeline')}.`;
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  start('shop-api', { API_PORT: String(port) });
  await waitFor(
    async () => (await fetch(`${base}/readyz`).catch(() => undefined))?.status === 200,
    {
      timeoutMs: 30_000,
      message: 'shop-api ready',
    },
  );
  start('relay', {
    RELAY_SLOT: uniqueName('pipeline_slot'),
    RELAY_PUBLICATION: uniqueName('pipeline_pub'),
    RELAY_TOPIC_PREFIX: topicPrefix,
    RELAY_METRICS_PORT: '0',
  });
  const projector = start('projector', {
    PROJECTOR_TOPIC_PREFIX: topicPrefix,
    PROJECTOR_GROUP_PREFIX: `${topicPrefix}g.`,
    PROJECTOR_METRICS_PORT: '0',
  });
  await waitFor(() => projector.output().includes('"msg":"metrics listening"'), {
    timeoutMs: 60_000,
    message: 'projector up',
  });
});

afterAll(async () => {
  for (const { child } of children) child.kill('SIGTERM');
  await Promise.all(
    children.map(
      ({ child }) =>
        new Promise((done) => (child.exitCode !== null ? done(null) : child.once('exit', done))),
    ),
  );
  await database.drop();
});

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
    const client = new pg.Client({ connectionString: database.url });
    await client.connect();
    const { rows } = await client.query<{ items: number; total: string }>(
      `SELECT sum(quantity)::int AS items, sum(quantity * unit_price_cents)::text AS total FROM shop.cart_items WHERE cart_id = $1`,
      [cartId],
    );
    await client.end();
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
});

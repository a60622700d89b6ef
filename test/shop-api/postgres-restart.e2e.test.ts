// shop-api writing while its PostgreSQL crashes and recovers (an immediate restart), on a server
// of this file's own: every answer is a success or a 503 to retry (never a 500), and writes
// retried under their Idempotency-Key until they succeed are each applied exactly once.
import { waitFor } from '@sluice/testkit';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasLocalServers } from '../relay/harness.js';
import { startPrivatePostgres, type PrivatePostgres } from '../support/private-postgres.js';
import { retriedWrites, type RetriedWrites } from '../support/retried-writes.js';
import { startShopApi, type ServiceProcess } from '../support/services.js';

const WRITERS = 4;
const ADDS = 30;

describe.skipIf(!hasLocalServers())('shop-api through a PostgreSQL crash', () => {
  let postgres: PrivatePostgres;
  let api: { service: ServiceProcess; base: string };
  let writes: RetriedWrites;

  beforeAll(async () => {
    postgres = await startPrivatePostgres('api-restart');
    api = await startShopApi({ DATABASE_URL: postgres.server.url() });
    writes = retriedWrites(api.base);
  });

  afterAll(async () => {
    api.service.kill('SIGKILL');
    await api.service.exited();
    await postgres.close();
  });

  it('answers 2xx or 503, and every retried write is applied once', async () => {
    const run = Date.now().toString(36);
    const customer = (await writes.post(
      '/customers',
      { email: `crash-${run}@example.com`, name: 'Crash' },
      `${run}-customer`,
    )) as { id: string };
    const product = (await writes.post(
      '/products',
      { sku: `CRASH-${run}`, name: 'Crash', priceCents: 5, stock: 10_000 },
      `${run}-product`,
    )) as { id: string };
    const carts: string[] = [];
    for (let i = 0; i < WRITERS; i += 1) {
      const cart = (await writes.post(
        '/carts',
        { customerId: customer.id },
        `${run}-cart-${i}`,
      )) as { id: string };
      carts.push(cart.id);
    }
    let added = 0;
    const writers = carts.map(async (cart, writer) => {
      for (let i = 0; i < ADDS; i += 1) {
        await writes.post(
          `/carts/${cart}/items`,
          { productId: product.id, quantity: 1 },
          `${run}-add-${writer}-${i}`,
        );
        added += 1;
      }
    });
    const written = Promise.all(writers);
    // A writer's failure is awaited below, not left unhandled meanwhile.
    written.catch(() => undefined);
    await waitFor(() => added >= WRITERS * 5, { timeoutMs: 60_000, message: 'writes flowing' });
    await postgres.server.restart('immediate');
    await written;

    expect([...writes.statuses.keys()].sort((a, b) => a - b)).toEqual([200, 201, 503]);
    const client = new pg.Client({ connectionString: postgres.server.url() });
    await client.connect();
    try {
      const { rows } = await client.query<{ cart: string; versions: string[] }>(
        `SELECT aggregate_id AS cart, array_agg(aggregate_version::text ORDER BY aggregate_version)
                AS versions
           FROM shop.outbox WHERE aggregate_type = 'cart' AND type = 'cart.item_added.v1'
          GROUP BY aggregate_id`,
      );
      const expected = Array.from({ length: ADDS }, (_, i) => String(i + 2));
      expect(new Map(rows.map((row) => [row.cart, row.versions]))).toEqual(
        new Map(carts.map((cart) => [cart, expected])),
      );
      const lines = await client.query<{ cart_id: string; quantity: number }>(
        `SELECT cart_id::text, quantity FROM shop.cart_items WHERE cart_id = ANY($1::uuid[])`,
        [carts],
      );
      expect(lines.rows.map((row) => row.quantity)).toEqual(carts.map(() => ADDS));
    } finally {
      await client.end();
    }
  }, 180_000);
});

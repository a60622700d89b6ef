// shop-api writing while its PostgreSQL crashes and recovers (an immediate restart), on a server
// of this file's own: every answer is a success or a 503 to retry (never a 500), and writes
// retried under their Idempotency-Key until they succeed are each applied exactly once.
import { createPostgresServer, type PostgresServer } from '@sluice/stack';
import { freePort, waitFor } from '@sluice/testkit';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasLocalServers } from '../relay/harness.js';
import { shopAdminHeaders } from '../support/access.js';
import { startShopApi, type ServiceProcess } from '../support/services.js';

const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const WRITERS = 4;
const ADDS = 30;

describe.skipIf(!hasLocalServers())('shop-api through a PostgreSQL crash', () => {
  let tempDir: string;
  let postgres: PostgresServer;
  let api: { service: ServiceProcess; base: string };

  beforeAll(async () => {
    tempDir = await mkdtemp(join(tmpdir(), 'sluice-api-restart-'));
    await chmod(tempDir, 0o755); // as root, PostgreSQL runs as the postgres user
    postgres = createPostgresServer({
      dataDir: join(tempDir, 'pg'),
      port: await freePort(),
      settingsFile: join(rootDir, 'infra', 'postgres', 'sluice.conf'),
      settings: { shared_buffers: '64MB' },
    });
    await postgres.start();
    api = await startShopApi({ DATABASE_URL: postgres.url() });
  });

  afterAll(async () => {
    api.service.kill('SIGKILL');
    await api.service.exited();
    await postgres.stop('immediate');
    await rm(tempDir, { recursive: true, force: true });
  });

  const statuses = new Map<number, number>();

  /** POSTs `body` under `key` until it succeeds, counting every status on the way. */
  async function postUntilDone(path: string, body: unknown, key: string): Promise<unknown> {
    for (;;) {
      const res = await fetch(`${api.base}${path}`, {
        method: 'POST',
        headers: {
          ...shopAdminHeaders(),
          'content-type': 'application/json',
          'idempotency-key': key,
        },
        body: JSON.stringify(body),
      });
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      const answer = (await res.json()) as { code?: string };
      if (res.status < 300) return answer;
      expect(res.status, JSON.stringify(answer)).toBe(503);
      expect(answer.code).toBe('database_unavailable');
      expect(res.headers.get('retry-after')).toBe('1');
      await new Promise((done) => setTimeout(done, 100));
    }
  }

  it('answers 2xx or 503, and every retried write is applied once', async () => {
    const run = Date.now().toString(36);
    const customer = (await postUntilDone(
      '/customers',
      { email: `crash-${run}@example.com`, name: 'Crash' },
      `${run}-customer`,
    )) as { id: string };
    const product = (await postUntilDone(
      '/products',
      { sku: `CRASH-${run}`, name: 'Crash', priceCents: 5, stock: 10_000 },
      `${run}-product`,
    )) as { id: string };
    const carts: string[] = [];
    for (let i = 0; i < WRITERS; i += 1) {
      const cart = (await postUntilDone(
        '/carts',
        { customerId: customer.id },
        `${run}-cart-${i}`,
      )) as { id: string };
      carts.push(cart.id);
    }
    let added = 0;
    const writers = carts.map(async (cart, writer) => {
      for (let i = 0; i < ADDS; i += 1) {
        await postUntilDone(
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
    await postgres.restart('immediate');
    await written;

    expect([...statuses.keys()].sort((a, b) => a - b)).toEqual([200, 201, 503]);
    const client = new pg.Client({ connectionString: postgres.url() });
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

// The whole pipeline while its PostgreSQL stops answering (every process of the server
// SIGSTOPped: connections stay open, nothing answers, as behind a network partition) and then
// answers again, on a server of this file's own: readiness answers 503 in bounded time instead of
// hanging (the relay's says it cannot take the lead), writes answer a 2xx or 503 (never a 500),
// and afterwards every write is applied once and the views equal the fold.
import { waitFor } from '@sluice/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasLocalServers } from '../relay/harness.js';
import { startPipeline, type Pipeline } from '../support/pipeline.js';
import { startPrivatePostgres, type PrivatePostgres } from '../support/private-postgres.js';
import { retriedWrites, type RetriedWrites } from '../support/retried-writes.js';
import { listeningAddress, type ServiceProcess } from '../support/services.js';

const FROZEN_MS = 10_000;

/** `/readyz` of `base`: its status, body and how long it took to answer. */
async function readyz(base: string) {
  const started = Date.now();
  const response = await fetch(`${base}/readyz`, { signal: AbortSignal.timeout(10_000) });
  const body = (await response.json()) as Record<string, unknown>;
  return { status: response.status, body, ms: Date.now() - started };
}

/** The address of `service`'s readiness, once it listens. */
function readyzOf(service: ServiceProcess | undefined): Promise<string> {
  return waitFor(() => (service === undefined ? undefined : listeningAddress(service)), {
    timeoutMs: 60_000,
    message: 'the service to listen',
  });
}

describe.skipIf(!hasLocalServers())('the pipeline while PostgreSQL does not answer', () => {
  let postgres: PrivatePostgres;
  let pipeline: Pipeline;
  let projector: ServiceProcess;
  let writes: RetriedWrites;

  beforeAll(async () => {
    postgres = await startPrivatePostgres('frozen-pg');
    pipeline = await startPipeline('frozen', {}, { databaseServerUrl: postgres.server.url() });
    projector = pipeline.startProjector();
    writes = retriedWrites(pipeline.base);
  }, 120_000);

  afterAll(async () => {
    await pipeline.close();
    await postgres.close(); // thaws it first, should the test have stopped while frozen
  });

  it('answers readiness in bounded time, and applies every write once after', async () => {
    const ops = await readyzOf(projector);
    const run = Date.now().toString(36);
    const customer = (await writes.post(
      '/customers',
      { email: `fz-${run}@example.com`, name: 'F' },
      `${run}-c`,
    )) as { id: string };
    const product = (await writes.post(
      '/products',
      { sku: `FZ-${run}`, name: 'F', priceCents: 7, stock: 100_000 },
      `${run}-p`,
    )) as { id: string };
    const cart = (await writes.post('/carts', { customerId: customer.id }, `${run}-cart`)) as {
      id: string;
    };
    await waitFor(async () => (await readyz(ops)).status === 200, {
      timeoutMs: 60_000,
      message: 'the projector to be ready',
    });

    let added = 0;
    const database = { frozen: false };
    const written = (async () => {
      for (let i = 0; i < 60 || database.frozen; i += 1) {
        const item = { productId: product.id, quantity: 1 };
        await writes.post(`/carts/${cart.id}/items`, item, `${run}-add-${i}`);
        added += 1;
      }
    })();
    written.catch(() => undefined); // awaited below
    await waitFor(() => added >= 10, { timeoutMs: 60_000, message: 'writes flowing' });

    await postgres.freeze();
    database.frozen = true;
    const frozenAt = Date.now();
    try {
      // Both probes answer 503 at once with their own bodies, again and again, nothing piling up.
      for (let probe = 0; probe < 3; probe += 1) {
        const api = await readyz(pipeline.base);
        expect(api.status).toBe(503);
        expect(api.body).toMatchObject({ code: 'database_unavailable' });
        expect(api.ms).toBeLessThan(4000);
        const projection = await readyz(ops);
        expect(projection.status).toBe(503);
        expect(projection.body).toMatchObject({
          status: 'not_ready',
          problems: [{ code: 'readiness_timeout', projection: '*' }],
        });
        expect(projection.ms).toBeLessThan(4000);
      }
      // The relay gives up its lead within its lease, and then says why it cannot take it again.
      const relay = await readyzOf(pipeline.relays[0]);
      await waitFor(async () => (await readyz(relay)).status === 503, {
        timeoutMs: 30_000,
        message: 'the relay to tell it cannot reach PostgreSQL',
      });
      expect((await readyz(relay)).body).toMatchObject({ status: 'database_unavailable' });
      await waitFor(() => Date.now() - frozenAt >= FROZEN_MS, {
        timeoutMs: FROZEN_MS + 5000,
        message: 'the freeze to last',
      });
    } finally {
      postgres.thaw();
      database.frozen = false;
    }

    await waitFor(async () => (await readyz(pipeline.base)).status === 200, {
      timeoutMs: 60_000,
      message: 'shop-api ready again',
    });
    await waitFor(async () => (await readyz(ops)).status === 200, {
      timeoutMs: 60_000,
      message: 'the projector ready again',
    });
    const relay = await readyzOf(pipeline.relays[0]);
    await waitFor(async () => (await readyz(relay)).body.status === 'leading', {
      timeoutMs: 60_000,
      message: 'the relay leading again',
    });
    await written; // every answer a 2xx, or a 503 database_unavailable retried

    const { rows } = await pipeline.pool.query<{ versions: string[]; quantity: number }>(
      `SELECT (SELECT array_agg(aggregate_version::text ORDER BY aggregate_version) FROM shop.outbox
                WHERE aggregate_id = $1::text AND type = 'cart.item_added.v1') AS versions,
              (SELECT quantity FROM shop.cart_items WHERE cart_id = $1::uuid) AS quantity`,
      [cart.id],
    );
    expect(rows[0]?.versions).toEqual(Array.from({ length: added }, (_, i) => String(i + 2)));
    expect(rows[0]?.quantity).toBe(added);
    await pipeline.expectCartSummariesConverge(120_000);
    await pipeline.expectProductSalesConverge(120_000);
    expect(await pipeline.offsetGaps()).toBe(0);
  }, 300_000);
});

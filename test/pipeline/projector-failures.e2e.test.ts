// Views stay equal to the fold of the write model while the projector is killed mid-batch, and
// when Kafka delivers everything again (duplicates at new offsets, a group reset to earliest).
import {
  createTestDatabase,
  testKafka,
  testServers,
  uniqueName,
  waitFor,
  type TestDatabase,
} from '@sluice/testkit';
import pg from 'pg';
import { startService, startShopApi, type ServiceProcess } from '../support/services.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const { databaseUrl, kafkaBrokers } = testServers();
let database: TestDatabase;
let pool: pg.Pool;
let base: string;
const topicPrefix = `${uniqueName('pfail')}.`;
const groupPrefix = `${topicPrefix}g.`;
const running = new Set<ServiceProcess>();

function start(
  name: 'shop-api' | 'relay' | 'projector',
  env: Record<string, string>,
): ServiceProcess {
  const service = startService(name, {
    DATABASE_URL: database.url,
    KAFKA_BROKERS: kafkaBrokers.join(','),
    ...env,
  });
  running.add(service);
  void service.exited().then(() => running.delete(service));
  return service;
}

const startProjector = () =>
  start('projector', {
    PROJECTOR_TOPIC_PREFIX: topicPrefix,
    PROJECTOR_GROUP_PREFIX: groupPrefix,
    PROJECTOR_METRICS_PORT: '0',
    PROJECTOR_SESSION_TIMEOUT_MS: '6000',
  });

async function post(path: string, body?: unknown): Promise<Record<string, unknown>> {
  const response = await fetch(`${base}${path}`, {
    method: 'POST',
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return (await response.json()) as Record<string, unknown>;
}

/** The view and the same fold computed from the write model, row for row. */
async function viewAndFold(): Promise<{ view: string[]; fold: string[] }> {
  const view = await pool.query<{ row: string }>(
    `SELECT concat_ws('|', cart_id, status, item_count, total_cents, version) AS row FROM views.cart_summaries ORDER BY 1`,
  );
  const fold = await pool.query<{ row: string }>(
    `SELECT concat_ws('|', c.id, c.status, COALESCE(sum(i.quantity), 0), COALESCE(sum(i.quantity * i.unit_price_cents), 0), c.version) AS row
       FROM shop.carts c LEFT JOIN shop.cart_items i ON i.cart_id = c.id GROUP BY c.id ORDER BY 1`,
  );
  return { view: view.rows.map((r) => r.row), fold: fold.rows.map((r) => r.row) };
}

async function expectViewsConverge(timeoutMs = 120_000): Promise<void> {
  await waitFor(
    async () => {
      const { view, fold } = await viewAndFold();
      return JSON.stringify(view) === JSON.stringify(fold);
    },
    { timeoutMs, intervalMs: 250, message: 'cart summaries to equal the fold of shop.*' },
  );
}

async function appliedEvents(): Promise<number> {
  const { rows } = await pool.query<{ n: string }>(
    `SELECT COALESCE(sum(version), 0)::text AS n FROM sluice.projection_versions WHERE projection = 'cart_summary'`,
  );
  return Number(rows[0]?.n ?? 0);
}

beforeAll(async () => {
  database = await createTestDatabase(databaseUrl, 'pfail');
  pool = new pg.Pool({ connectionString: database.url, max: 4 });
  pool.on('error', () => undefined);
  const shopApi = await startShopApi({ DATABASE_URL: database.url });
  base = shopApi.base;
  running.add(shopApi.service);
  void shopApi.service.exited().then(() => running.delete(shopApi.service));
  start('relay', {
    RELAY_SLOT: uniqueName('pfail_slot'),
    RELAY_PUBLICATION: uniqueName('pfail_pub'),
    RELAY_TOPIC_PREFIX: topicPrefix,
    RELAY_METRICS_PORT: '0',
  });
});

afterAll(async () => {
  const exits = [...running].map((service) => service.exited());
  for (const service of running) service.kill('SIGKILL');
  await Promise.all(exits);
  await pool.end();
  await database.drop();
});

describe('projector failures', () => {
  it('views equal the fold after 10 kill -9s mid-batch, and after every event is delivered again', async () => {
    const customer = await post('/customers', { email: 'pf@example.com', name: 'P' });
    const products = await Promise.all(
      [1, 2, 3].map((i) =>
        post('/products', { sku: `PF-${i}`, name: 'P', priceCents: 100 * i, stock: 100_000 }),
      ),
    );
    const carts = await Promise.all(
      Array.from({ length: 40 }, () => post('/carts', { customerId: customer.id })),
    );
    let writing = true;
    const workload = (async () => {
      for (let round = 0; round < 25; round += 1) {
        await Promise.all(
          carts.map(async (cart, i) => {
            const product = products[(round + i) % 3];
            await post(`/carts/${String(cart.id)}/items`, {
              productId: product?.id,
              quantity: 1 + (i % 3),
            });
            if (round % 7 === 6) {
              await fetch(`${base}/carts/${String(cart.id)}/items/${String(product?.id)}`, {
                method: 'DELETE',
              });
            }
          }),
        );
      }
      await Promise.all(
        carts.slice(0, 10).map((cart) => post(`/carts/${String(cart.id)}/checkout`)),
      );
      writing = false;
    })();

    for (let kill = 0; kill < 10; kill += 1) {
      const projector = startProjector();
      await projector.waitForOutput('"msg":"metrics listening"', {
        timeoutMs: 60_000,
        message: 'the projector to start',
      });
      const before = await appliedEvents();
      await waitFor(async () => (await appliedEvents()) > before || !writing, {
        timeoutMs: 60_000,
        intervalMs: 20 + Math.floor(Math.random() * 100),
        message: 'the projector to apply a batch',
      });
      projector.kill('SIGKILL');
      await projector.exited();
    }
    await workload;
    let projector = startProjector();
    await expectViewsConverge();
    const applied = await appliedEvents();

    // Everything again: re-produce 10 % of the events at new offsets, and reset the group.
    projector.kill('SIGTERM');
    await projector.exited();
    const kafka = testKafka(kafkaBrokers);
    const topic = `${topicPrefix}outbox.event.cart`;
    const records: { key: string | null; value: string | null; headers: Record<string, string> }[] =
      [];
    const reader = kafka.consumer({ groupId: uniqueName('reader') });
    await reader.connect();
    await reader.subscribe({ topic, fromBeginning: true });
    const admin = kafka.admin();
    await admin.connect();
    const total = (await admin.fetchTopicOffsets(topic)).reduce(
      (sum, o) => sum + Number(o.high),
      0,
    );
    await reader.run({
      eachMessage: async ({ message }) => {
        records.push({
          key: message.key?.toString() ?? null,
          value: message.value?.toString() ?? null,
          headers: Object.fromEntries(
            Object.entries(message.headers ?? {}).map(([k, v]) => [k, String(v)]),
          ),
        });
        await Promise.resolve();
      },
    });
    await waitFor(() => records.length >= total, {
      timeoutMs: 60_000,
      message: 'every record read',
    });
    await reader.disconnect();
    const sample = records.filter(() => Math.random() < 0.1);
    const producer = kafka.producer();
    await producer.connect();
    await producer.send({ topic, messages: sample });
    await producer.disconnect();
    // The group empties once the members killed earlier time out.
    await waitFor(
      async () => {
        await admin.resetOffsets({ groupId: `${groupPrefix}cart_summary`, topic, earliest: true });
        return true;
      },
      { timeoutMs: 60_000, intervalMs: 500, message: 'the consumer group to be empty' },
    );
    await admin.disconnect();

    projector = startProjector();
    await waitFor(
      async () => {
        const { rows } = await pool.query<{ n: string }>(
          `SELECT COALESCE(sum(next_offset), 0)::text AS n FROM sluice.projection_checkpoints WHERE projection = 'cart_summary'`,
        );
        return Number(rows[0]?.n ?? 0) >= total + sample.length;
      },
      { timeoutMs: 120_000, message: 'the duplicates to be consumed' },
    );
    await expectViewsConverge(10_000);
    expect(await appliedEvents()).toBe(applied);
    console.log(
      JSON.stringify({
        projectorFailures: { events: total, duplicatesProduced: sample.length, kills: 10 },
      }),
    );
    projector.kill('SIGTERM');
    await projector.exited();
  });
});

// Crypto-shredding end to end: a customer goes through carts, an order, a poison event and a
// dead letter, then is erased. Afterwards their email and name are nowhere in clear text — not
// in any topic read from the beginning (dead-letter topics included), any table of any schema,
// nor the services' output — and a rebuild from the earliest offset equals the fold, with the
// marker where the personal fields were.
import { ERASED } from '@sluice/privacy';
import { testKafka, uniqueName, waitFor } from '@sluice/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readTopic } from '../relay/harness.js';
import { operatorHeaders, shopAdminHeaders } from '../support/access.js';
import { injectCartEvent } from '../support/outbox-injection.js';
import { checkViews } from '../support/pipeline-invariants.js';
import { startPipeline, type Pipeline } from '../support/pipeline.js';
import { TEST_MASTER_KEY } from '../support/privacy.js';
import {
  listeningAddress,
  startService,
  startedServices,
  type ServiceProcess,
} from '../support/services.js';

let pipeline: Pipeline;
let projector: ServiceProcess;

beforeAll(async () => {
  pipeline = await startPipeline('perase');
  projector = pipeline.startProjector();
  await projector.waitForOutput('"msg":"consuming"', {
    timeoutMs: 60_000,
    message: 'the projector to consume',
  });
});
afterAll(() => pipeline.close());

/** Sends JSON to shop-api as an admin. */
async function send(method: string, path: string, body?: unknown, headers = {}) {
  const response = await fetch(`${pipeline.base}${path}`, {
    method,
    headers: {
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      ...shopAdminHeaders(),
      ...headers,
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  return {
    status: response.status,
    json: (text === '' ? {} : JSON.parse(text)) as Record<string, unknown>,
  };
}

async function operations(method: 'GET' | 'POST', path: string) {
  const response = await fetch(`${listeningAddress(projector) ?? ''}${path}`, {
    method,
    headers: await operatorHeaders(),
  });
  return (await response.json()) as Record<string, unknown>;
}

/** Every place personal data could be left: where each of `secrets` still appears. */
async function scan(secrets: readonly string[]): Promise<string[]> {
  const found: string[] = [];
  const look = (where: string, text: string) => {
    for (const secret of secrets) if (text.includes(secret)) found.push(`${secret} in ${where}`);
  };
  const admin = testKafka(pipeline.kafkaBrokers).admin();
  await admin.connect();
  const topics = (await admin.listTopics()).filter((t) => t.startsWith(pipeline.topicPrefix));
  await admin.disconnect();
  expect(topics.some((t) => t.includes('sluice.dlq.'))).toBe(true);
  const records = await Promise.all(topics.map((t) => readTopic(pipeline.kafkaBrokers, t)));
  topics.forEach((topic, index) => {
    for (const record of records[index] ?? [])
      look(`topic ${topic}`, JSON.stringify([record.key, record.headers, record.value]));
  });
  const { rows: tables } = await pipeline.pool.query<{ name: string }>(
    `SELECT format('%I.%I', table_schema, table_name) AS name FROM information_schema.tables
      WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')`,
  );
  for (const { name } of tables) {
    const { rows } = await pipeline.pool.query<{ row: string }>(
      `SELECT t::text AS row FROM ${name} t`,
    );
    look(`table ${name}`, rows.map((r) => r.row).join('\n'));
  }
  for (const service of startedServices()) look(`${service.name}'s output`, service.output());
  return found;
}

describe('erasure', () => {
  it('leaves personal data nowhere in clear text, and a rebuild agrees with the fold', async () => {
    const email = `${uniqueName('erase')}@example.com`;
    const name = `Erasable ${uniqueName('n')}`;
    const idempotency = { 'idempotency-key': uniqueName('register') };
    const registered = await send('POST', '/customers', { email, name: 'First' }, idempotency);
    expect(registered.status).toBe(201);
    const customerId = String(registered.json.id);
    const renamed = await send(
      'PATCH',
      `/customers/${customerId}`,
      { name },
      { 'if-match': '"1"' },
    );
    expect(renamed.status).toBe(200);
    const product = await pipeline.post('/products', {
      sku: uniqueName('SKU').slice(0, 60),
      name: 'Thing',
      priceCents: 500,
      stock: 100,
    });
    const [bought, poisoned] = await Promise.all(
      [1, 2].map(async () => String((await pipeline.post('/carts', { customerId })).id)),
    );
    for (const cart of [bought, poisoned])
      await pipeline.post(`/carts/${String(cart)}/items`, { productId: product.id, quantity: 2 });
    await pipeline.post(`/carts/${String(bought)}/checkout`);
    // Poison: parked and dead-lettered by every projection of carts.
    await injectCartEvent(pipeline.pool, String(poisoned), {
      type: 'cart.item_added.v1',
      payload: { cartId: poisoned, productId: product.id, quantity: 0, unitPriceCents: 500 },
    });
    const auditRows = async () =>
      (
        await pipeline.pool.query<{ type: string; data: Record<string, unknown> }>(
          `SELECT type, data FROM views.audit_log WHERE aggregate_id = $1 ORDER BY version`,
          [customerId],
        )
      ).rows;
    await waitFor(async () => (await auditRows()).length === 2, {
      timeoutMs: 60_000,
      message: "the customer's events in the audit log",
    });
    // The scan sees what it looks for: before the erasure only the write model and the audit
    // log hold the data in clear text.
    expect(await scan([email, name])).toEqual([
      `${email} in table shop.customers`,
      `${name} in table shop.customers`,
      `${email} in table views.audit_log_g1`,
      `${name} in table views.audit_log_g1`,
    ]);

    const erased = await send('DELETE', `/customers/${customerId}`, undefined, {
      'if-match': '"2"',
    });
    expect(erased.status).toBe(204);
    await waitFor(async () => (await auditRows()).length === 3, {
      timeoutMs: 60_000,
      message: 'the erasure in the audit log',
    });
    await waitFor(
      async () =>
        Number((await pipeline.pool.query('SELECT 1 FROM sluice.parked_events')).rowCount) > 0,
      { timeoutMs: 60_000, message: 'the poison to be parked' },
    );
    expect(await scan([email, name])).toEqual([]);
    expect((await auditRows()).map((row) => row.data)).toEqual([
      { customerId, email: ERASED, name: ERASED },
      { customerId, name: ERASED },
      { customerId },
    ]);
    const replayed = await send('POST', '/customers', { email, name: 'First' }, idempotency);
    expect(replayed).toMatchObject({ status: 410, json: { code: 'subject_erased' } });

    // A rebuild from the earliest offset reads the sealed fields as the marker.
    await operations('POST', '/projections/audit_log/rebuild');
    await waitFor(
      async () => {
        const { items } = (await operations('GET', '/projections')) as {
          items: { projection: string; generations: { generation: number; state: string }[] }[];
        };
        const audit = items.find((item) => item.projection === 'audit_log');
        return audit?.generations.some((g) => g.generation === 2 && g.state === 'active') === true;
      },
      { timeoutMs: 120_000, intervalMs: 200, message: 'the audit log rebuild to swap' },
    );
    expect((await auditRows()).map((row) => row.data)).toEqual([
      { customerId, email: ERASED, name: ERASED },
      { customerId, name: ERASED },
      { customerId },
    ]);
    // Views equal the fold but for the poisoned cart, which waits behind its parked event.
    const { 'views equal the fold of the events': differences } = await checkViews(pipeline.pool);
    expect((differences ?? []).filter((d) => !d.includes(String(poisoned)))).toEqual([]);
    expect(await scan([email, name])).toEqual([]);
  });
});

describe('key loss', () => {
  it.each(['shop-api', 'projector'] as const)(
    'stops %s at start with status 78 and one line naming the variable',
    async (name) => {
      const missing = startService(name, {
        DATABASE_URL: 'postgres://127.0.0.1:1/none',
        SLUICE_MASTER_KEY: '',
      });
      expect(await missing.exited()).toBe(78);
      expect(missing.output()).toMatch(/SLUICE_MASTER_KEY_FILE \(or SLUICE_MASTER_KEY\) must name/);
      const short = startService(name, { SLUICE_MASTER_KEY: TEST_MASTER_KEY.slice(2) });
      expect(await short.exited()).toBe(78);
      expect(short.output()).toMatch(/SLUICE_MASTER_KEY must hold 32 bytes/);
      expect(short.output()).not.toContain(TEST_MASTER_KEY.slice(2));
    },
  );
});

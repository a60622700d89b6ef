// Crypto-shredding end to end: a customer registers with a payload too large for a record (a
// claim check), goes through a cart and an order, has a sealed rename parked and dead-lettered as
// poison, then is erased. Afterwards their email and name are nowhere in clear, JSON-escaped or
// base64 text — not in any topic read from the beginning (dead-letter topics included), any
// column of any table of any schema, nor the services' output — and a rebuild from the earliest
// offset equals the fold, with the marker where the personal fields were.
import { ERASED, isEnvelope } from '@sluice/privacy';
import { testKafka, uniqueName, waitFor } from '@sluice/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { operatorHeaders, shopAdminHeaders } from '../support/access.js';
import { injectPoisonedRename } from './customer-poison.js';
import { checkViews } from '../support/pipeline-invariants.js';
import { startPipeline, type Pipeline } from '../support/pipeline.js';
import { findSecrets } from '../support/privacy-scan.js';
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
  pipeline = await startPipeline('perase', { relay: { RELAY_MAX_RECORD_BYTES: '1024' } });
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

async function operations(method: 'GET' | 'POST', path: string, body?: unknown) {
  const response = await fetch(`${listeningAddress(projector) ?? ''}${path}`, {
    method,
    headers: {
      ...(await operatorHeaders()),
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return (await response.json()) as Record<string, unknown>;
}

/**
 * Where `secrets` are still written, in clear, JSON-escaped or in base64: every topic of the
 * pipeline from the beginning (dead-letter topics included), every column of every table of every
 * schema, and the services' output.
 */
async function scan(secrets: Record<string, string>): Promise<string[]> {
  const admin = testKafka(pipeline.kafkaBrokers).admin();
  await admin.connect();
  const topics = (await admin.listTopics()).filter((t) => t.startsWith(pipeline.topicPrefix));
  await admin.disconnect();
  expect(topics.some((t) => t.includes('sluice.dlq.'))).toBe(true);
  const texts: Record<string, string> = {};
  for (const service of startedServices()) {
    const where = `${service.name}'s output`;
    texts[where] = `${texts[where] ?? ''}${service.output()}`;
  }
  return findSecrets(secrets, {
    pool: pipeline.pool,
    topics,
    kafkaBrokers: pipeline.kafkaBrokers,
    texts,
  });
}

/** The customer's rows in the audit log, in version order. */
async function auditRows(customerId: string) {
  const { rows } = await pipeline.pool.query<{ data: Record<string, unknown> }>(
    'SELECT data FROM views.audit_log WHERE aggregate_id = $1 ORDER BY version',
    [customerId],
  );
  return rows.map((row) => row.data);
}

/** The audit log's parked records of the customer: their reasons, in version order. */
async function parkedReasons(customerId: string) {
  const { rows } = await pipeline.pool.query<{ reason: string }>(
    `SELECT reason FROM sluice.parked_events
      WHERE aggregate_type = 'customer' AND aggregate_id = $1 ORDER BY aggregate_version`,
    [customerId],
  );
  return rows.map((row) => row.reason);
}

/**
 * A registration over the relay's RELAY_MAX_RECORD_BYTES (1024) once sealed, within the limits
 * (a name is 200 characters at most).
 */
function largeCustomer() {
  return {
    email: `${uniqueName('erase')}@example.com`,
    name: `Erasable ${uniqueName('n')} `.padEnd(200, '界'),
  };
}

describe('erasure', () => {
  it('leaves personal data nowhere in clear text, and a rebuild agrees with the fold', async () => {
    const { email, name } = largeCustomer();
    const secrets = { email, name };
    // With an idempotency key: shop-api keeps the response, sealed, for replays.
    const idempotency = { 'idempotency-key': uniqueName('register') };
    const registered = await send('POST', '/customers', { email, name }, idempotency);
    expect(registered.status).toBe(201);
    const customerId = String(registered.json.id);
    await waitFor(async () => (await auditRows(customerId)).length === 1, {
      timeoutMs: 60_000,
      message: 'the registration in the audit log',
    });
    // Too large for a record: the relay kept it, sealed, as a claim check.
    const { rows: claimed } = await pipeline.pool.query<{ payload: Record<string, string> }>(
      `SELECT payload FROM sluice.claim_checks WHERE payload->>'customerId' = $1`,
      [customerId],
    );
    expect(
      claimed.map((row) => [isEnvelope(row.payload.email), isEnvelope(row.payload.name)]),
    ).toEqual([[true, true]]);
    const product = await pipeline.post('/products', {
      sku: uniqueName('SKU').slice(0, 60),
      name: 'Thing',
      priceCents: 500,
      stock: 100,
    });
    const cart = String((await pipeline.post('/carts', { customerId })).id);
    await pipeline.post(`/carts/${cart}/items`, { productId: product.id, quantity: 2 });
    await pipeline.post(`/carts/${cart}/checkout`);
    const poison = await injectPoisonedRename(pipeline.pool, customerId, name);
    await waitFor(async () => (await parkedReasons(customerId)).length === 1, {
      timeoutMs: 60_000,
      message: 'the poisoned rename to be parked',
    });
    expect(await parkedReasons(customerId)).toEqual(['handler_failed']);
    const { rows: parked } = await pipeline.pool.query<{ value: Buffer }>(
      'SELECT record_value AS value FROM sluice.parked_events WHERE aggregate_id = $1',
      [customerId],
    );
    const parkedName = parked.map(
      (row) => (JSON.parse(row.value.toString()) as { name: unknown }).name,
    );
    expect(parkedName.map(isEnvelope)).toEqual([true]);
    // The scan sees what it looks for: before the erasure only the write model and the audit
    // log hold the data in clear text — not the claim check, parked row or dead letter.
    const inAuditLog = [
      'email (clear) in table views.audit_log_g1 column data',
      'name (clear) in table views.audit_log_g1 column data',
    ];
    expect(await scan(secrets)).toEqual(
      [
        'email (clear) in table shop.customers column email',
        'name (clear) in table shop.customers column name',
        ...inAuditLog,
      ].sort(),
    );

    const erased = await send('DELETE', `/customers/${customerId}`, undefined, {
      'if-match': `"${String(poison)}"`,
    });
    expect(erased.status).toBe(204);
    await waitFor(async () => (await parkedReasons(customerId)).length === 2, {
      timeoutMs: 60_000,
      message: 'the erasure to queue behind the parked rename',
    });
    // The erasure waits behind the parked rename, but the audit log forgets the customer at once
    // (its `erasure` hook): nothing holds the data in clear text any more.
    expect(await scan(secrets)).toEqual([]);
    // Redriven, the rename opens as the marker and applies, and the erasure after it.
    await operations('POST', '/parked/redrive', {
      projection: 'audit_log',
      aggregateType: 'customer',
      aggregateId: customerId,
    });
    await waitFor(async () => (await auditRows(customerId)).length === 3, {
      timeoutMs: 60_000,
      message: 'the rename and the erasure in the audit log',
    });
    expect(await parkedReasons(customerId)).toEqual([]);
    expect(await scan(secrets)).toEqual([]);
    const forgotten = [
      { customerId, email: ERASED, name: ERASED },
      { customerId, name: ERASED },
      { customerId },
    ];
    expect(await auditRows(customerId)).toEqual(forgotten);

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
    expect(await auditRows(customerId)).toEqual(forgotten);
    const { 'views equal the fold of the events': differences } = await checkViews(pipeline.pool);
    expect(differences ?? []).toEqual([]);
    expect(await scan(secrets)).toEqual([]);
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

// The event journey over the real pipeline (shop-api, relay, projector, console): events written
// through shop-api with a correlation id and a trace, and a poisoned one written past the
// catalog, are found by aggregate id, event id, correlation id and trace id, each with every
// stage filled in — committed (time, LSN), published (topic, partition, offset, time), applied
// by each projection or dead-lettered with its reason — and non-negative latencies, each
// published event at the offset where Kafka holds it; an event committed while the relay is down
// shows as not yet published.
import { freePort, uniqueName, waitFor } from '@sluice/testkit';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_ACCESS_SECRET, shopAdminHeaders, viewerHeaders } from '../support/access.js';
import { readTopic } from '../relay/harness.js';
import { startPipeline, type Pipeline } from '../support/pipeline.js';
import {
  listeningAddress,
  startService,
  startedServices,
  type ServiceProcess,
} from '../support/services.js';
import type { JourneyEvent as Journey } from '../../services/console/src/bodies.js';

/** The projections of the shop that read cart events. */
const CART_PROJECTIONS = ['audit_log', 'cart_summary', 'product_sales', 'removed_then_bought'];

let pipeline: Pipeline;
let consoleUrl: string;
let consoleService: ServiceProcess | undefined;

beforeAll(async () => {
  pipeline = await startPipeline('pjourney');
  const projector = pipeline.startProjector();
  await projector.waitForOutput('"msg":"consuming"', {
    timeoutMs: 60_000,
    message: 'the projector to consume',
  });
  const port = await freePort();
  consoleService = startService('console', {
    CONSOLE_PORT: String(port),
    DATABASE_URL: String(pipeline.pool.options.connectionString),
    KAFKA_BROKERS: pipeline.kafkaBrokers.join(','),
    CONSOLE_RELAY_URLS: '',
    CONSOLE_PROJECTOR_URLS: listeningAddress(projector) ?? '',
    CONSOLE_TOPIC_PREFIX: pipeline.topicPrefix,
    CONSOLE_GROUP_PREFIX: pipeline.groupPrefix,
    SLUICE_ACCESS_SECRET: TEST_ACCESS_SECRET,
  });
  await consoleService.waitForOutput('"msg":"console listening"', {
    timeoutMs: 30_000,
    message: 'the console to listen',
  });
  consoleUrl = `http://127.0.0.1:${port}`;
});

afterAll(async () => {
  consoleService?.kill('SIGKILL');
  await consoleService?.exited();
  await pipeline.close();
});

async function journey(q: string): Promise<Journey[]> {
  const response = await fetch(`${consoleUrl}/api/journey?q=${encodeURIComponent(q)}`, {
    headers: await viewerHeaders(),
  });
  const body = (await response.json()) as { query: string; events: Journey[] };
  expect(response.status, JSON.stringify(body)).toBe(200);
  expect(body.query).toBe(q);
  return body.events;
}

/** POSTs to shop-api as one request of a trace, under one correlation id. */
async function post(path: string, body: unknown, trace: { correlation: string; traceId: string }) {
  const response = await fetch(`${pipeline.base}${path}`, {
    method: 'POST',
    headers: {
      ...shopAdminHeaders(),
      'content-type': 'application/json',
      'x-correlation-id': trace.correlation,
      traceparent: `00-${trace.traceId}-${randomBytes(8).toString('hex')}-01`,
    },
    body: JSON.stringify(body),
  });
  expect(response.ok).toBe(true);
  return (await response.json()) as { id: string };
}

/** Appends a schema-invalid item to a cart, as a writer that bypasses the catalog would. */
async function injectPoison(cartId: string): Promise<void> {
  await pipeline.pool.query(
    `WITH head AS (
       UPDATE shop.outbox_heads SET version = version + 1
        WHERE aggregate_type = 'cart' AND aggregate_id = $1 RETURNING version)
     INSERT INTO shop.outbox (id, aggregate_type, aggregate_id, aggregate_version, type, payload)
     SELECT gen_random_uuid(), 'cart', $1, version, 'cart.item_added.v1',
            jsonb_build_object('cartId', $1::text, 'quantity', 0) FROM head`,
    [cartId],
  );
}

const time = (text: string | undefined) => new Date(text ?? NaN).getTime();

/** Every stage a published event must show, in a plausible order. */
function expectPublished(event: Journey): void {
  expect(event.committed.lsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
  const published = event.published;
  if (published === null) throw new Error(`event ${event.eventId} is not published`);
  expect(published.topic).toBe(`${pipeline.topicPrefix}outbox.event.${event.aggregateType}`);
  expect(Number(published.offset)).toBeGreaterThanOrEqual(0);
  expect(published.latencyMs).toBeGreaterThanOrEqual(0);
  expect(published.latencyMs).toBeLessThan(60_000);
  expect(time(published.at)).toBeGreaterThanOrEqual(time(event.committed.at));
}

/** Kafka holds each event at the partition and offset its journey says, from that commit. */
async function expectInKafka(events: readonly Journey[]): Promise<void> {
  const topics = [...new Set(events.map((event) => event.published?.topic ?? ''))];
  const records = (
    await Promise.all(topics.map((topic) => readTopic(pipeline.kafkaBrokers, topic)))
  ).flatMap((topicRecords, index) =>
    topicRecords.map((record) => ({ ...record, topic: topics[index] })),
  );
  for (const { eventId, committed, published } of events) {
    const record = records.find(
      (r) =>
        r.topic === published?.topic &&
        r.partition === published?.partition &&
        String(r.offset) === published.offset,
    );
    expect(record?.id).toBe(eventId);
    expect(record?.headers.ce_commitlsn).toBe(committed.lsn);
  }
}

function expectApplied(event: Journey): void {
  expectPublished(event);
  expect(event.projections.map((p) => p.projection).sort()).toEqual(CART_PROJECTIONS);
  for (const stage of event.projections) {
    expect(stage.state, JSON.stringify(stage)).toBe('applied');
    expect(stage.latencyMs).toBeGreaterThanOrEqual(0);
    expect(stage.latencyMs).toBeLessThan(60_000);
    expect(time(stage.at)).toBeGreaterThanOrEqual(time(event.published?.at));
  }
}

describe('GET /api/journey', () => {
  it('follows events through every stage by aggregate id, event id, correlation id and trace id', async () => {
    const trace = { correlation: uniqueName('corr'), traceId: randomBytes(16).toString('hex') };
    const customer = await post(
      '/customers',
      { email: `${trace.correlation}@example.com`, name: 'J' },
      trace,
    );
    const product = await post(
      '/products',
      { sku: trace.correlation, name: 'J', priceCents: 300, stock: 10 },
      trace,
    );
    const cart = await post('/carts', { customerId: customer.id }, trace);
    await post(`/carts/${cart.id}/items`, { productId: product.id, quantity: 1 }, trace);
    await injectPoison(cart.id);

    const settled = (events: Journey[]) =>
      events.length === 3 &&
      events.every((event) => event.projections.length === CART_PROJECTIONS.length) &&
      events.every((event) => event.projections.every((stage) => stage.state !== 'pending'));
    const events = await waitFor(
      async () => {
        const found = await journey(cart.id);
        return settled(found) ? found : undefined;
      },
      { timeoutMs: 60_000, message: 'the cart’s journey to settle' },
    );

    expect(events.map((e) => e.version)).toEqual([1, 2, 3]);
    const [opened, added, poison] = events as [Journey, Journey, Journey];
    for (const event of [opened, added]) {
      expect(event).toMatchObject({ aggregateType: 'cart', aggregateId: cart.id });
      expect(event).toMatchObject({ correlationId: trace.correlation, traceId: trace.traceId });
      expectApplied(event);
    }
    expectPublished(poison);
    for (const stage of poison.projections) {
      expect(stage.state).toBe('dead_lettered');
      expect(stage.reason).toMatch(/\S/);
    }

    expect(await journey(added.eventId)).toEqual([added]);
    const correlated = await journey(trace.correlation);
    const traced = await journey(trace.traceId);
    expect(traced).toEqual(correlated);
    expect(correlated.map((e) => e.aggregateType).sort()).toEqual([
      'cart',
      'cart',
      'customer',
      'product',
    ]);
    expect(correlated.every((e) => e.correlationId === trace.correlation)).toBe(true);
    expect(correlated.filter((e) => e.aggregateType === 'cart')).toEqual([opened, added]);
    for (const event of correlated) expectPublished(event);
    await expectInKafka(correlated);
  });

  it('shows an event committed while the relay is down as not yet published', async () => {
    const trace = { correlation: uniqueName('down'), traceId: randomBytes(16).toString('hex') };
    const relay = startedServices().find((service) => service.name === 'relay');
    relay?.kill('SIGKILL');
    await relay?.exited();
    const customer = await post(
      '/customers',
      { email: `${trace.correlation}@example.com`, name: 'D' },
      trace,
    );

    const [event] = await journey(customer.id);
    expect(event).toMatchObject({ aggregateId: customer.id, version: 1, published: null });
    expect(event?.committed.lsn).toBeNull();
    expect(time(event?.committed.at)).toBeGreaterThan(0);
    expect(event?.projections).toEqual([{ projection: 'audit_log', state: 'pending' }]);
  });

  it('refuses an empty query', async () => {
    const response = await fetch(`${consoleUrl}/api/journey?q=`, {
      headers: await viewerHeaders(),
    });
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ code: 'invalid_request' });
  });
});

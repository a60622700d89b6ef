// Records Kafka allows but no relay writes — a null header value, a missing event id, a time
// that is no time — reach every projection of the real projector process. Each is applied or
// dead-lettered; no consumer stops; later writes reach the views (read-your-writes holds);
// readiness tells the truth; a projector killed and started again meets them without harm.
import { rawProduce, testKafka, waitFor } from '@sluice/testkit';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shopAdminHeaders, viewerHeaders } from '../support/access.js';
import { startPipeline, type Pipeline } from '../support/pipeline.js';
import { listeningAddress, type ServiceProcess } from '../support/services.js';

let pipeline: Pipeline;

beforeAll(async () => {
  pipeline = await startPipeline('phostile');
});

afterAll(() => pipeline.close());

async function startProjector(): Promise<{ service: ServiceProcess; ops: string }> {
  const service = pipeline.startProjector();
  await service.waitForOutput('"msg":"consuming"', {
    timeoutMs: 60_000,
    message: 'the projector to consume',
  });
  return { service, ops: listeningAddress(service) ?? '' };
}

async function write(path: string, body: unknown) {
  const response = await fetch(`${pipeline.base}${path}`, {
    method: 'POST',
    headers: { ...shopAdminHeaders(), 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  expect(response.status).toBeLessThan(300);
  return {
    json: (await response.json()) as Record<string, unknown>,
    token: response.headers.get('x-consistency-token') ?? '',
  };
}

/** A cart's view, waiting (bounded by the API) until it holds the write behind `token`. */
async function cartView(cartId: string, token: string) {
  const response = await fetch(`${pipeline.base}/views/carts/${cartId}`, {
    headers: { ...shopAdminHeaders(), 'x-consistency-token': token },
  });
  return { status: response.status, json: (await response.json()) as Record<string, unknown> };
}

const ready = async (ops: string) => (await fetch(`${ops}/readyz`)).status === 200;

describe('hostile records', () => {
  it('are applied or dead-lettered, and the projector stays up, ready and correct', async () => {
    let { service, ops } = await startProjector();
    const customer = await write('/customers', { email: 'hostile@example.com', name: 'H' });
    const product = await write('/products', {
      sku: 'HOSTILE-1',
      name: 'P',
      priceCents: 250,
      stock: 100,
    });
    const cart = await write('/carts', { customerId: customer.json.id });
    const cartId = String(cart.json.id);
    const first = await write(`/carts/${cartId}/items`, {
      productId: product.json.id,
      quantity: 1,
    });
    expect((await cartView(cartId, first.token)).json).toMatchObject({ itemCount: 1 });

    // Records of carts nobody wrote, as another producer could put them on the topic.
    const topic = `${pipeline.topicPrefix}outbox.event.cart`;
    const headers = (cartIdOf: string, version: number): [string, string | null][] => [
      ['ce_specversion', '1.0'],
      ['ce_id', randomUUID()],
      ['ce_type', 'cart.opened.v1'],
      ['ce_source', '/elsewhere'],
      ['ce_time', new Date().toISOString()],
      ['ce_subject', cartIdOf],
      ['content-type', 'application/json'],
      ['ce_aggregatetype', 'cart'],
      ['ce_aggregateversion', String(version)],
    ];
    const [withNullTrace, withNullId, withBadTime] = [randomUUID(), randomUUID(), randomUUID()];
    const opened = (id: string) => JSON.stringify({ cartId: id, customerId: customer.json.id });
    const kafka = testKafka(pipeline.kafkaBrokers);
    for (const partition of [0, 1, 2, 3, 4, 5]) {
      await rawProduce(kafka, topic, partition, [
        {
          key: withNullTrace,
          value: opened(withNullTrace),
          headers: [...headers(withNullTrace, 1), ['ce_traceparent', null]],
        },
        {
          key: withNullId,
          value: opened(withNullId),
          headers: headers(withNullId, 1).map(([name, value]) => [
            name,
            name === 'ce_id' ? null : value,
          ]),
        },
        {
          key: withBadTime,
          value: opened(withBadTime),
          headers: headers(withBadTime, 1).map(([name, value]) => [
            name,
            name === 'ce_time' ? 'not a time' : value,
          ]),
        },
      ]);
    }

    // Later writes reach the views; nothing stopped.
    const second = await write(`/carts/${cartId}/items`, {
      productId: product.json.id,
      quantity: 2,
    });
    expect(await cartView(cartId, second.token)).toMatchObject({
      status: 200,
      json: { itemCount: 3 },
    });
    const dead = await waitFor(
      async () => {
        const items = (
          (await (await fetch(`${ops}/parked`, { headers: await viewerHeaders() })).json()) as {
            items: { aggregateId: string | null; reason: string }[];
          }
        ).items;
        // Two per partition and projection that reads carts (four of them).
        return items.length >= 2 * 6 * 4 ? items : undefined;
      },
      { timeoutMs: 60_000, message: 'the hostile records parked by every projection' },
    );
    expect(new Set(dead.map((p) => p.aggregateId))).toEqual(new Set([withNullId, withBadTime]));
    expect(new Set(dead.map((p) => p.reason))).toEqual(new Set(['record_malformed']));
    // The record whose only fault was a null trace header is a valid event: applied.
    const { rows } = await pipeline.pool.query(
      'SELECT status FROM views.cart_summaries WHERE cart_id = $1',
      [withNullTrace],
    );
    expect(rows).toEqual([{ status: 'open' }]);
    expect(await ready(ops)).toBe(true);

    // Killed and started again, it meets the same records (below its checkpoints) unharmed.
    service.kill('SIGKILL');
    await service.exited();
    ({ service, ops } = await startProjector());
    const third = await write(`/carts/${cartId}/items`, {
      productId: product.json.id,
      quantity: 1,
    });
    expect(await cartView(cartId, third.token)).toMatchObject({
      status: 200,
      json: { itemCount: 4 },
    });
    await waitFor(() => ready(ops), {
      timeoutMs: 30_000,
      message: 'the restarted projector ready',
    });
    expect(service.output()).not.toContain('Crash');
  });
});

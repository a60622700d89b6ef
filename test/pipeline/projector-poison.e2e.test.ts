// Poison through the real path: a writer that bypasses the catalog puts a schema-invalid event
// and an event of an unknown type into the outbox; the relay publishes them like any other.
// The projector dead-letters them with `sluice_error_*` headers and parks only those carts (their
// later events wait behind), every other cart flows on; the operations endpoints list the
// parked events, refuse bad requests, and skipping the poison brings the view to the fold.
import { createAccess } from '@sluice/access';
import { testKafka, waitFor } from '@sluice/testkit';
import { readTopic } from '../relay/harness.js';
import { operatorHeaders, viewerHeaders } from '../support/access.js';
import { injectCartEvent } from '../support/outbox-injection.js';
import { startPipeline, type Pipeline } from '../support/pipeline.js';
import { listeningAddress, type ServiceProcess } from '../support/services.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

let pipeline: Pipeline;
let projector: ServiceProcess;
let ops: string;

beforeAll(async () => {
  pipeline = await startPipeline('ppoison');
  projector = pipeline.startProjector();
  await projector.waitForOutput('"msg":"consuming"', {
    timeoutMs: 60_000,
    message: 'the projector to consume',
  });
  ops = listeningAddress(projector) ?? '';
});

afterAll(() => pipeline.close());

interface Parked {
  projection: string;
  topic: string;
  partition: number;
  offset: string;
  aggregateId: string | null;
  aggregateVersion: number | null;
  reason: string;
}

async function parked(): Promise<Parked[]> {
  const response = await fetch(`${ops}/parked?projection=cart_summary`, {
    headers: await viewerHeaders(),
  });
  return ((await response.json()) as { items: Parked[] }).items;
}

/** POSTs to the operations API, as operator `ada` unless `credential` says otherwise. */
async function opsPost(path: string, body: unknown, credential?: Record<string, string>) {
  const response = await fetch(`${ops}${path}`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(credential ?? (await operatorHeaders('ada'))),
    },
    body: JSON.stringify(body),
  });
  return { status: response.status, json: (await response.json()) as Record<string, unknown> };
}

/** Appends an event to a cart's outbox as a buggy writer would: next version, no validation. */
const injectEvent = (cartId: string, type: string, payload: unknown) =>
  injectCartEvent(pipeline.pool, cartId, { type, payload });

describe('poison through the relay', () => {
  it('dead-letters and parks only the poisoned carts, and skipping the poison brings the view to the fold', async () => {
    const customer = await pipeline.post('/customers', { email: 'poison@example.com', name: 'P' });
    const product = await pipeline.post('/products', {
      sku: 'POISON-1',
      name: 'P',
      priceCents: 300,
      stock: 1000,
    });
    const [invalid, unknown, garbled, healthy] = await Promise.all(
      [1, 2, 3, 4].map(async () =>
        String((await pipeline.post('/carts', { customerId: customer.id })).id),
      ),
    );
    const addItem = (cartId: string | undefined) =>
      pipeline.post(`/carts/${String(cartId)}/items`, { productId: product.id, quantity: 1 });
    for (const cart of [invalid, unknown, garbled, healthy]) await addItem(cart);

    const invalidVersion = await injectEvent(String(invalid), 'cart.item_added.v1', {
      cartId: invalid,
      productId: product.id,
      quantity: 0,
      unitPriceCents: 300,
    });
    const unknownVersion = await injectEvent(String(unknown), 'cart.teleported.v1', {
      cartId: unknown,
    });
    // Records no relay would write, produced straight to the topic: invalid JSON for a cart,
    // and a record with no key and hardly any headers. The cart's first events must be in Kafka
    // (here: applied) first, or they could land behind the garbage.
    await waitFor(
      async () => {
        const { rows } = await pipeline.pool.query<{ version: string }>(
          `SELECT version::text FROM sluice.projection_versions
            WHERE projection = 'cart_summary' AND aggregate_type = 'cart' AND aggregate_id = $1`,
          [garbled],
        );
        return Number(rows[0]?.version ?? 0) >= 2;
      },
      { timeoutMs: 30_000, message: 'the garbled cart’s first events to be applied' },
    );
    const producer = testKafka(pipeline.kafkaBrokers).producer();
    await producer.connect();
    await producer.send({
      topic: `${pipeline.topicPrefix}outbox.event.cart`,
      messages: [
        {
          key: String(garbled),
          value: '{not json',
          headers: {
            ce_specversion: '1.0',
            ce_id: '00000000-0000-4000-8000-000000000001',
            ce_type: 'cart.item_added.v1',
            ce_time: new Date().toISOString(),
            ce_aggregatetype: 'cart',
            ce_aggregateversion: '3',
          },
        },
        { key: null, value: '{}', headers: { ce_specversion: '1.0' } },
      ],
    });
    await producer.disconnect();
    // Later events of the poisoned carts must wait behind the poison; the healthy cart flows.
    for (const cart of [invalid, unknown, garbled, healthy]) await addItem(cart);

    const items = await waitFor(
      async () => {
        const list = await parked();
        return list.length >= 7 ? list : undefined;
      },
      { timeoutMs: 60_000, message: 'seven parked events' },
    );
    expect(items.map((p) => [p.aggregateId, p.aggregateVersion, p.reason]).sort()).toEqual(
      [
        [invalid, invalidVersion, 'schema_invalid'],
        [invalid, invalidVersion + 1, 'behind_parked'],
        [unknown, unknownVersion, 'schema_invalid'],
        [unknown, unknownVersion + 1, 'behind_parked'],
        [garbled, null, 'record_malformed'],
        [garbled, 3, 'behind_parked'],
        [null, null, 'record_malformed'],
      ].sort(),
    );
    await waitFor(
      async () =>
        (
          await pipeline.pool.query<{ item_count: number }>(
            'SELECT item_count FROM views.cart_summaries WHERE cart_id = $1',
            [healthy],
          )
        ).rows[0]?.item_count === 2,
      { timeoutMs: 30_000, message: 'the healthy cart to flow past the poison' },
    );

    // The dead letters carry the original record and why it failed.
    const letters = (
      await waitFor(
        async () => {
          const records = await readTopic(
            pipeline.kafkaBrokers,
            `${pipeline.topicPrefix}sluice.dlq.cart_summary`,
          );
          return records.length >= 4 ? records : undefined;
        },
        { timeoutMs: 30_000, message: 'four dead letters' },
      )
    ).map((record) => record.headers);
    expect(letters.map((h) => [h.ce_subject ?? null, h.sluice_error_class]).sort()).toEqual(
      [
        [invalid, 'schema_invalid'],
        [unknown, 'schema_invalid'],
        [null, 'record_malformed'],
        [null, 'record_malformed'],
      ].sort(),
    );
    for (const letter of letters) {
      expect(letter).toMatchObject({
        sluice_error_projection: 'cart_summary',
        sluice_error_topic: `${pipeline.topicPrefix}outbox.event.cart`,
        sluice_error_attempts: '1',
      });
      expect(letter.sluice_error_offset).toMatch(/^\d+$/);
      expect(letter.sluice_error_message).not.toBe('');
    }

    // Bad operations requests: clear errors, nothing changes.
    expect((await opsPost('/parked/skip', { projection: 'cart_summary' })).status).toBe(400);
    expect(
      (
        await opsPost('/parked/skip', {
          projection: 'cart_summary',
          topic: 't',
          partition: 0,
          offset: 'x',
        })
      ).status,
    ).toBe(400);
    const unknownProjection = await opsPost('/parked/redrive', {
      projection: 'nope',
      aggregateType: 'cart',
      aggregateId: String(invalid),
    });
    expect(unknownProjection).toMatchObject({ status: 404, json: { code: 'projection_unknown' } });
    const absent = await opsPost('/parked/skip', {
      projection: 'cart_summary',
      topic: `${pipeline.topicPrefix}outbox.event.cart`,
      partition: 0,
      offset: '999999',
    });
    expect(absent).toMatchObject({ status: 404, json: { code: 'not_found' } });
    expect(await parked()).toHaveLength(7);

    // The poison cannot be fixed by a redrive (it is still invalid): skip it; what waited
    // behind it applies, and the view equals the fold of shop.*.
    const stillParked = await opsPost('/parked/redrive', {
      projection: 'cart_summary',
      aggregateType: 'cart',
      aggregateId: String(invalid),
    });
    expect(stillParked).toMatchObject({ status: 200, json: { applied: 0 } });
    const poisons = (await parked()).filter((p) => p.reason !== 'behind_parked');
    expect(poisons).toHaveLength(4);
    for (const poison of poisons) {
      const skipped = await opsPost('/parked/skip', {
        projection: 'cart_summary',
        topic: poison.topic,
        partition: poison.partition,
        offset: poison.offset,
      });
      // What waited behind it applies; a record of no aggregate had nothing behind it.
      expect(skipped).toMatchObject({
        status: 200,
        json: { applied: poison.aggregateId === null ? 0 : 1, parked: 0 },
      });
    }
    expect(await parked()).toEqual([]);
    await pipeline.expectCartSummariesConverge(30_000);
  });

  it('a handler that keeps failing for one cart: dead-lettered after its attempts, only that cart parked, redriven after the fix', async () => {
    const [owner, other] = await Promise.all(
      ['refused', 'welcome'].map(async (name) =>
        String((await pipeline.post('/customers', { email: `${name}@example.com`, name })).id),
      ),
    );
    const product = await pipeline.post('/products', {
      sku: 'POISON-2',
      name: 'P',
      priceCents: 500,
      stock: 1000,
    });
    // The view's table refuses one customer's carts, as a handler bug or a constraint would.
    await pipeline.pool.query(`
      CREATE FUNCTION views.refuse_cart() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'cart % refused', NEW.cart_id; END $$;
      CREATE TRIGGER refuse_cart BEFORE INSERT OR UPDATE ON views.cart_summaries_g1
        FOR EACH ROW WHEN (NEW.customer_id = '${owner}') EXECUTE FUNCTION views.refuse_cart()`);
    const [broken, fine] = await Promise.all(
      [owner, other].map(async (customerId) =>
        String((await pipeline.post('/carts', { customerId })).id),
      ),
    );
    for (let i = 0; i < 3; i += 1) {
      for (const cart of [broken, fine])
        await pipeline.post(`/carts/${cart}/items`, { productId: product.id, quantity: 1 });
    }

    const items = await waitFor(
      async () => {
        const list = (await parked()).filter((p) => p.aggregateId === broken);
        return list.length >= 4 ? list : undefined;
      },
      { timeoutMs: 60_000, message: 'the broken cart’s four events parked' },
    );
    expect(items.map((p) => [p.aggregateVersion, p.reason])).toEqual([
      [1, 'handler_failed'],
      [2, 'behind_parked'],
      [3, 'behind_parked'],
      [4, 'behind_parked'],
    ]);
    expect(await parked()).toHaveLength(4);
    await waitFor(
      async () =>
        (
          await pipeline.pool.query<{ item_count: number }>(
            'SELECT item_count FROM views.cart_summaries WHERE cart_id = $1',
            [fine],
          )
        ).rows[0]?.item_count === 3,
      { timeoutMs: 30_000, message: 'the other cart to flow on' },
    );
    const letter = await waitFor(
      async () =>
        (
          await readTopic(pipeline.kafkaBrokers, `${pipeline.topicPrefix}sluice.dlq.cart_summary`)
        ).find((record) => record.headers.sluice_error_class === 'handler_failed')?.headers,
      { timeoutMs: 30_000, message: 'the handler failure dead-lettered' },
    );
    expect(letter).toMatchObject({
      ce_subject: broken,
      ce_type: 'cart.opened.v1',
      sluice_error_projection: 'cart_summary',
      sluice_error_attempts: '3',
    });
    expect(letter.sluice_error_message).toContain(`cart ${broken} refused`);

    // The fix is deployed: the redrive applies the cart's events in order, and nothing is left.
    await pipeline.pool.query('DROP TRIGGER refuse_cart ON views.cart_summaries_g1');
    // Only an operator acts: without a credential, with a forged one or a viewer's, nothing moves.
    const redrive = { projection: 'cart_summary', aggregateType: 'cart', aggregateId: broken };
    const forged = createAccess({ secret: 'a-secret-that-is-not-the-projectors-one' });
    const forgedToken = await forged.issueToken({ subject: 'eve', role: 'operator' }, 60);
    expect(await opsPost('/parked/redrive', redrive, {})).toMatchObject({
      status: 401,
      json: { code: 'unauthenticated' },
    });
    expect(
      (await opsPost('/parked/redrive', redrive, { authorization: `Bearer ${forgedToken}` }))
        .status,
    ).toBe(401);
    expect(await opsPost('/parked/redrive', redrive, await viewerHeaders())).toMatchObject({
      status: 403,
      json: { code: 'forbidden' },
    });
    expect(await parked()).toHaveLength(4);
    // The audit names the token's subject; a claimed X-Actor changes nothing.
    const credential = { ...(await operatorHeaders('ada')), 'x-actor': 'mallory' };
    const redriven = await opsPost('/parked/redrive', redrive, credential);
    expect(redriven).toMatchObject({ status: 200, json: { applied: 4, parked: 0 } });
    const { rows: audit } = await pipeline.pool.query<{ actor: string }>(
      `SELECT actor FROM sluice.operator_audit WHERE action = 'redrive' AND target->>'id' = $1`,
      [broken],
    );
    expect(audit.map((row) => row.actor)).toEqual(['ada']);
    expect(await parked()).toEqual([]);
    await pipeline.expectCartSummariesConverge(30_000);
  });
});

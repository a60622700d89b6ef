// Idempotency keys belong to whoever sent them, their request hashes are keyed from the master
// key (and still match under the previous one during a rotation), and an erasure forgets the
// erased customer's records.
import { parseMasterKey } from '@sluice/privacy';
import { sql } from 'kysely';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_MASTER_KEYS, bearer, startShopApi, type ShopApiHarness } from '../test-harness.js';

let api: ShopApiHarness;
let ada: { id: string; headers: Record<string, string> };
let bob: { id: string; headers: Record<string, string> };

let seq = 0;
const unique = (prefix: string) => `${prefix}${Date.now().toString(36)}${(seq += 1)}`;

async function customer() {
  const body = { email: `${unique('c')}@example.com`, name: 'Customer' };
  const res = await api.request('POST', '/customers', { body });
  expect(res.statusCode, res.body).toBe(201);
  const id = res.json<{ id: string }>().id;
  return { id, headers: await bearer(id) };
}

/** Opens a cart for `customerId` as `headers` say, under the Idempotency-Key `key`. */
const openCart = (customerId: string, key: string, headers: Record<string, string> = {}) =>
  api.request('POST', '/carts', {
    body: { customerId },
    headers: { ...headers, 'idempotency-key': key },
  });

const records = async (key: string) =>
  (
    await sql<{ actor: string; request_hash: string; customer_id: string | null }>`
      SELECT actor, request_hash, customer_id FROM sluice.idempotency_keys
       WHERE key = ${key} ORDER BY actor`.execute(api.db)
  ).rows;

beforeAll(async () => {
  api = await startShopApi('shop_idem');
  [ada, bob] = [await customer(), await customer()];
});
afterAll(() => api.close());

describe('an Idempotency-Key', () => {
  it('from two senders is two independent requests', async () => {
    const key = unique('shared-');
    const adas = await openCart(ada.id, key, ada.headers);
    const bobs = await openCart(bob.id, key, bob.headers);
    expect([adas.statusCode, bobs.statusCode]).toEqual([201, 201]);
    expect(bobs.headers['idempotent-replayed']).toBeUndefined();
    expect(bobs.json<{ id: string }>().id).not.toBe(adas.json<{ id: string }>().id);
    expect((await records(key)).map((r) => r.actor).sort()).toEqual([ada.id, bob.id].sort());
    // Each still replays their own.
    const again = await openCart(bob.id, key, bob.headers);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.json()).toEqual(bobs.json());
  });

  it("never replays another sender's response, even to the very same request", async () => {
    const key = unique('guessed-');
    const byAdmin = await openCart(bob.id, key);
    expect(byAdmin.statusCode).toBe(201);
    const byBob = await openCart(bob.id, key, bob.headers);
    expect(byBob.statusCode).toBe(201);
    expect(byBob.headers['idempotent-replayed']).toBeUndefined();
    expect(byBob.json<{ id: string }>().id).not.toBe(byAdmin.json<{ id: string }>().id);
  });

  it('is stored with a keyed hash of its request, never a plain one', async () => {
    const key = unique('hash-');
    const res = await openCart(ada.id, key, ada.headers);
    expect(res.statusCode).toBe(201);
    const plain = createHash('sha256')
      .update(`POST /carts\n${JSON.stringify({ customerId: ada.id })}`)
      .digest('hex');
    const [record] = await records(key);
    expect(record?.request_hash).toMatch(/^[0-9a-f]{64}$/);
    expect(record?.request_hash).not.toBe(plain);
  });
});

describe('erasure', () => {
  it("deletes the customer's records, of responses about them and requests they sent, but its own", async () => {
    const keys = {
      registered: unique('registered-'),
      ownCart: unique('own-cart-'),
      adminsCart: unique('admins-cart-'),
      product: unique('product-'),
      bobsCart: unique('bobs-cart-'),
      erasure: unique('erasure-'),
    };
    const email = `${unique('carol')}@example.com`;
    const registered = await api.request('POST', '/customers', {
      body: { email, name: 'Carol' },
      headers: { 'idempotency-key': keys.registered },
    });
    const carolId = registered.json<{ id: string }>().id;
    const carolHeaders = await bearer(carolId);
    expect((await openCart(carolId, keys.ownCart, carolHeaders)).statusCode).toBe(201);
    expect((await openCart(carolId, keys.adminsCart)).statusCode).toBe(201);
    expect((await openCart(bob.id, keys.bobsCart, bob.headers)).statusCode).toBe(201);
    const product = { sku: unique('SKU-'), name: 'Thing', priceCents: 1, stock: 1 };
    const listed = await api.request('POST', '/products', {
      body: product,
      headers: { 'idempotency-key': keys.product },
    });
    expect(listed.statusCode).toBe(201);

    const erase = () =>
      api.request('DELETE', `/customers/${carolId}`, {
        headers: { 'if-match': '"1"', 'idempotency-key': keys.erasure },
      });
    const erased = await erase();
    expect(erased.statusCode, erased.body).toBe(204);

    const { rows } = await sql<{ key: string }>`
      SELECT key FROM sluice.idempotency_keys WHERE key = ANY(${Object.values(keys)})`.execute(
      api.db,
    );
    expect(rows.map((r) => r.key).sort()).toEqual(
      [keys.product, keys.bobsCart, keys.erasure].sort(),
    );
    const retried = await erase();
    expect(retried.statusCode).toBe(204);
    expect(retried.headers['idempotent-replayed']).toBe('true');
  });

  it('that rolls back keeps them', async () => {
    const key = unique('kept-');
    const dave = await customer();
    expect((await openCart(dave.id, key, dave.headers)).statusCode).toBe(201);
    const stale = await api.request('DELETE', `/customers/${dave.id}`, {
      headers: { 'if-match': '"9"' },
    });
    expect(stale.statusCode).toBe(412);
    expect(await records(key)).toHaveLength(1);
  });
});

describe('a master key rotation', () => {
  const next = parseMasterKey('0a1b2c3d'.repeat(8));

  it('keeps replays working while the previous key is configured', async () => {
    const key = unique('rotation-');
    const body = { email: `${unique('rot')}@example.com`, name: 'Rotated' };
    const first = await api.request('POST', '/customers', {
      body,
      headers: { 'idempotency-key': key },
    });
    expect(first.statusCode).toBe(201);
    const send = (via: ShopApiHarness, sent: unknown) =>
      via.request('POST', '/customers', { body: sent, headers: { 'idempotency-key': key } });

    const rotating = await startShopApi('shop_idem', {
      sharing: api,
      masterKeys: { current: next, previous: TEST_MASTER_KEYS.current },
    });
    const rotated = await startShopApi('shop_idem', {
      sharing: api,
      masterKeys: { current: next },
    });
    try {
      const replayed = await send(rotating, body);
      expect(replayed.statusCode, replayed.body).toBe(201);
      expect(replayed.headers['idempotent-replayed']).toBe('true');
      expect(replayed.json()).toEqual(first.json());
      const other = await send(rotating, { ...body, name: 'Other' });
      expect(other.statusCode).toBe(422);
      // Without the previous key the stored hash matches nothing.
      const unknown = await send(rotated, body);
      expect(unknown.statusCode).toBe(422);
      expect(unknown.json()).toMatchObject({ code: 'idempotency_key_reused' });
    } finally {
      await rotated.close();
      await rotating.close();
    }
  });
});

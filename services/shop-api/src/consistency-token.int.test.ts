// X-Consistency-Token: a token from a write makes a /views/* read wait for that write; any
// token this API did not issue is refused at once, so it cannot keep a request polling.
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startShopApi, type ShopApiHarness } from './test-harness.js';

const LONG_WAIT_MS = 10_000;
let api: ShopApiHarness;
/** A second replica on the same database and its default key. */
let replica: ShopApiHarness;
/** Another deployment's app: same database, its own configured key. */
let stranger: ShopApiHarness;
let productId = '';
let customerId = '';

beforeAll(async () => {
  api = await startShopApi('shop_tokens', { consistencyTimeoutMs: LONG_WAIT_MS });
  replica = await startShopApi('shop_tokens', { sharing: api, consistencyTimeoutMs: 300 });
  stranger = await startShopApi('shop_tokens', {
    sharing: api,
    consistencyTokenSecret: 'another deployment, another secret: 0123456789',
  });
  // What the projector keeps, as far as the cart view and its wait need it.
  await sql`
    CREATE TABLE sluice.projection_versions (
      projection text NOT NULL, aggregate_type text NOT NULL, aggregate_id text NOT NULL,
      version bigint NOT NULL, PRIMARY KEY (projection, aggregate_type, aggregate_id));
    CREATE TABLE sluice.projection_generations (
      projection text NOT NULL, generation integer NOT NULL, instance text NOT NULL,
      state text NOT NULL, PRIMARY KEY (projection, generation));
    CREATE SCHEMA views;
    CREATE TABLE views.cart_summaries (
      cart_id uuid PRIMARY KEY, customer_id uuid, status text NOT NULL,
      item_count integer NOT NULL, total_cents bigint NOT NULL, version bigint NOT NULL);
  `.execute(api.db);
  const customer = await api.request('POST', '/customers', {
    body: { email: 'token@example.com', name: 'Token' },
  });
  customerId = customer.json<{ id: string }>().id;
  const product = await api.request('POST', '/products', {
    body: { sku: 'TOKEN-1', name: 'Token', priceCents: 5, stock: 100 },
  });
  productId = product.json<{ id: string }>().id;
});
afterAll(async () => {
  await stranger.close();
  await replica.close();
  await api.close();
});

/** Opens a cart through `via` and adds one unit; the add's token names cart version 2. */
async function cartWithItem(via: ShopApiHarness) {
  const cart = await via.request('POST', '/carts', { body: { customerId } });
  expect(cart.statusCode, cart.body).toBe(201);
  const cartId = cart.json<{ id: string }>().id;
  const added = await via.request('POST', `/carts/${cartId}/items`, {
    body: { productId, quantity: 1 },
  });
  expect(added.statusCode, added.body).toBe(200);
  const token = added.headers['x-consistency-token'];
  expect(token).toEqual(expect.any(String));
  return { cartId, token: String(token) };
}

/** The cart view at `version`, written as the projector writes it: row and version together. */
async function project(cartId: string, version: number) {
  await api.db.transaction().execute(async (trx) => {
    await sql`INSERT INTO sluice.projection_versions VALUES ('cart_summary', 'cart', ${cartId}, ${version})
              ON CONFLICT (projection, aggregate_type, aggregate_id) DO UPDATE SET version = excluded.version`.execute(
      trx,
    );
    await sql`INSERT INTO views.cart_summaries VALUES (${cartId}, ${customerId}, 'open', ${version - 1}, 5, ${version})
              ON CONFLICT (cart_id) DO UPDATE SET version = excluded.version, item_count = excluded.item_count`.execute(
      trx,
    );
  });
}

const readView = (via: ShopApiHarness, cartId: string, token: string) =>
  via.request('GET', `/views/carts/${cartId}`, { headers: { 'x-consistency-token': token } });

describe('tokens from writes', () => {
  it('make a view read wait until the view holds the write', async () => {
    const { cartId, token } = await cartWithItem(api);
    await project(cartId, 1);
    const pending = readView(api, cartId, token);
    await project(cartId, 2);
    const res = await pending;
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toMatchObject({ cartId, version: 2, itemCount: 1 });
  });

  it('answer 504 consistency_timeout once the bound passes, not before and not much later', async () => {
    const { cartId, token } = await cartWithItem(api);
    await project(cartId, 1);
    const started = Date.now();
    const res = await readView(replica, cartId, token);
    const elapsed = Date.now() - started;
    expect(res.statusCode, res.body).toBe(504);
    expect(res.json()).toMatchObject({ code: 'consistency_timeout' });
    expect(elapsed).toBeGreaterThanOrEqual(300);
    expect(elapsed).toBeLessThan(1000);
  });

  it('are accepted by every replica on the same database', async () => {
    const fromApi = await cartWithItem(api);
    const fromReplica = await cartWithItem(replica);
    await project(fromApi.cartId, 2);
    await project(fromReplica.cartId, 2);
    expect((await readView(replica, fromApi.cartId, fromApi.token)).statusCode).toBe(200);
    expect((await readView(api, fromReplica.cartId, fromReplica.token)).statusCode).toBe(200);
  });
});

describe('tokens this API did not issue', () => {
  const base64url = (text: string) => Buffer.from(text).toString('base64url');
  const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

  /** Sends `token`, expects a 400 invalid_consistency_token well within the wait bound. */
  async function expectRefused(cartId: string, token: string, what: string) {
    const started = Date.now();
    const res = await readView(api, cartId, token);
    const elapsed = Date.now() - started;
    expect(res.statusCode, `${what}: ${res.body}`).toBe(400);
    expect(res.json(), what).toMatchObject({ code: 'invalid_consistency_token' });
    expect(elapsed, what).toBeLessThan(200);
  }

  it('are refused at once with 400 invalid_consistency_token: forged, altered, foreign, garbage', async () => {
    const { cartId, token } = await cartWithItem(api);
    await project(cartId, 2);
    const forged = base64url(JSON.stringify([['cart', cartId, 1_000_000_000]]));
    const foreign = await cartWithItem(stranger);
    await project(foreign.cartId, 2);
    // The other deployment's token is good there, and refused here.
    expect((await readView(stranger, foreign.cartId, foreign.token)).statusCode).toBe(200);

    const cases: [string, string][] = [
      ['forged JSON with a huge version', forged],
      ['forged JSON with a made-up signature', `${forged}.${'A'.repeat(43)}`],
      ['signed with another key', foreign.token],
      ['truncated', token.slice(0, -1)],
      ['extended', `${token}A`],
      ['garbage', '!!!not a token!!!'],
      ['short base64', 'bm9wZQ'],
      ['empty', ''],
      ['huge', 'A'.repeat(100_000)],
      ['huge forged JSON', base64url(JSON.stringify(Array(5000).fill(['cart', cartId, 1e9])))],
    ];
    // Every single character changed, including bits base64 decoding would ignore.
    for (let index = 0; index < token.length; index += 1) {
      const next = ALPHABET[(ALPHABET.indexOf(token[index] ?? 'A') + 1) % ALPHABET.length] ?? 'A';
      cases.push([
        `character ${index} changed`,
        token.slice(0, index) + next + token.slice(index + 1),
      ]);
    }
    for (const [what, value] of cases) {
      await expectRefused(
        what === 'signed with another key' ? foreign.cartId : cartId,
        value,
        what,
      );
    }
    // The genuine token still works.
    expect((await readView(api, cartId, token)).statusCode).toBe(200);
  });
});

// Round trips per write, against real PostgreSQL: each statement a write sends (or statements it
// pipelines, counted once) is one round trip while it holds its row locks, so these counts are a
// budget, not a detail. BEGIN goes with the first, COMMIT is one more.
import { roundTrips } from '@sluice/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, startShopApi, testApp, type ShopApiHarness } from './test-harness.js';

let api: ShopApiHarness;
let counted: ReturnType<typeof testApp>;

// A round trip to PostgreSQL other than the one with the COMMIT (statements sent with the COMMIT
// have no round trip of their own).
const beforeCommit = (texts: string[]) => !/^commit$/i.test(texts.at(-1) ?? '');

beforeAll(async () => {
  api = await startShopApi('shop_statements');
  counted = testApp(api.db);
  await counted.ready();
});
afterAll(async () => {
  await counted.close();
  await api.close();
});

let admin: Record<string, string> | undefined;

async function send(
  method: 'POST' | 'PATCH' | 'DELETE',
  url: string,
  body?: unknown,
  extra: Record<string, string> = {},
) {
  admin ??= await bearer('counting-admin', { scope: 'admin' });
  const headers = { ...admin, ...extra };
  const { result: res, trips } = await roundTrips(() =>
    counted.inject({
      method,
      url,
      headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
      ...(body === undefined ? {} : { payload: JSON.stringify(body) }),
    }),
  );
  const statements = trips.filter(beforeCommit).length;
  expect(res.statusCode, res.body).toBeLessThan(300);
  return { statements, body: res.statusCode === 204 ? undefined : res.json<{ id: string }>() };
}

describe('statements per write', () => {
  it('stay within what each write needs; adding an item takes one', async () => {
    const email = `count${Date.now().toString(36)}@example.com`;
    const customer = await send('POST', '/customers', { email, name: 'Count' });
    const renamed = await send(
      'PATCH',
      `/customers/${customer.body?.id}`,
      { name: 'Counted', email: `re${email}` },
      { 'if-match': '"1"' },
    );
    const product = await send('POST', '/products', {
      sku: `COUNT-${Date.now().toString(36)}`,
      name: 'Count',
      priceCents: 100,
      stock: 10,
    });
    const productId = product.body?.id ?? '';
    const repriced = await send(
      'PATCH',
      `/products/${productId}`,
      { priceCents: 120 },
      { 'if-match': '"1"' },
    );
    const cart = await send('POST', '/carts', { customerId: customer.body?.id });
    const cartUrl = `/carts/${cart.body?.id}`;
    const added = await send('POST', `${cartUrl}/items`, { productId, quantity: 2 });
    const addedAgain = await send('POST', `${cartUrl}/items`, { productId, quantity: 1 });
    const keyed = { 'idempotency-key': `count-${Date.now().toString(36)}` };
    const addedWithKey = await send('POST', `${cartUrl}/items`, { productId, quantity: 1 }, keyed);
    const replayed = await send('POST', `${cartUrl}/items`, { productId, quantity: 1 }, keyed);
    const removed = await send('DELETE', `${cartUrl}/items/${productId}`);
    await send('POST', `${cartUrl}/items`, { productId, quantity: 1 });
    const checkedOut = await send('POST', `${cartUrl}/checkout`);
    const delisted = await send('DELETE', `/products/${productId}`, undefined, {
      'if-match': '"2"',
    });
    const erased = await send('DELETE', `/customers/${customer.body?.id}`, undefined, {
      'if-match': '"3"',
    });

    // The cart locked and moved on and the line added, sent together; the event goes with the
    // COMMIT.
    expect(added.statements).toBe(1);
    expect(addedAgain.statements).toBe(1);
    // With an Idempotency-Key, one more to claim it (the response is stored with the COMMIT); a
    // retry claims it in vain and reads what was stored.
    expect(addedWithKey.statements).toBe(2);
    expect(replayed.statements).toBe(2);
    expect({
      registered: customer.statements,
      renamed: renamed.statements,
      listed: product.statements,
      repriced: repriced.statements,
      opened: cart.statements,
      removed: removed.statements,
      checkedOut: checkedOut.statements,
      delisted: delisted.statements,
      erased: erased.statements,
      // Customer writes: one more for the customer's key (sealing; destroying it on erasure);
      // the erasure's deletion of the customer's idempotency records goes with the COMMIT.
    }).toEqual({
      registered: 2,
      renamed: 3,
      listed: 1,
      repriced: 2,
      opened: 2,
      // The cart locked and moved on, the line removed and the lines left read, sent together.
      removed: 1,
      checkedOut: 6,
      delisted: 2,
      erased: 3,
    });
  });

  it("a customer's cart writes take no more than an admin's: whose cart it is, is checked on the locked row", async () => {
    const email = `own${Date.now().toString(36)}@example.com`;
    const customer = (await send('POST', '/customers', { email, name: 'Own' })).body?.id ?? '';
    const own = await bearer(customer);
    const product = await send('POST', '/products', {
      sku: `OWN-${Date.now().toString(36)}`,
      name: 'Own',
      priceCents: 100,
      stock: 10,
    });
    const productId = product.body?.id ?? '';
    const cart = await send('POST', '/carts', { customerId: customer }, own);
    const cartUrl = `/carts/${cart.body?.id}`;
    const added = await send('POST', `${cartUrl}/items`, { productId, quantity: 2 }, own);
    const removed = await send('DELETE', `${cartUrl}/items/${productId}`, undefined, own);
    await send('POST', `${cartUrl}/items`, { productId, quantity: 1 }, own);
    const checkedOut = await send('POST', `${cartUrl}/checkout`, undefined, own);
    expect({
      added: added.statements,
      removed: removed.statements,
      checkedOut: checkedOut.statements,
    }).toEqual({ added: 1, removed: 1, checkedOut: 6 });
  });
});

// The shop's commands on their own, against real PostgreSQL: a transaction and plain input in,
// typed state and versions out, refusals as CommandErrors; no HTTP anywhere.
import type { Transaction } from 'kysely';
import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ShopDatabase } from '../database.js';
import { startShopApi, TEST_PRIVACY, type ShopApiHarness } from '../test-harness.js';
import { addItem, openCart, removeItem } from './carts.js';
import { checkout } from './checkout.js';
import { commit, type CommandContext } from './aggregates.js';
import { registerCustomer, updateCustomer } from './customers.js';
import { listProduct } from './products.js';

let api: ShopApiHarness;
beforeAll(async () => {
  api = await startShopApi('shop_commands');
});
afterAll(() => api.close());

const context: CommandContext = {
  actor: 'ops:test',
  correlationId: 'commands-1',
  reason: 'test',
  privacy: TEST_PRIVACY,
  mayActFor: () => true,
};
const inTransaction = <T>(command: (trx: Transaction<ShopDatabase>) => Promise<T>) =>
  api.db.transaction().execute(command);

let seq = 0;
const unique = (prefix: string) => `${prefix}${Date.now().toString(36)}${(seq += 1)}`;

async function eventsOf(aggregateId: string) {
  const rows = await api.outbox();
  return rows
    .filter((row) => row.aggregate_id === aggregateId)
    .map((row) => [row.type, row.aggregate_version]);
}

describe('commands', () => {
  it('write state and events in the caller’s transaction and say which versions they wrote', async () => {
    const email = `${unique('ada')}@example.com`;
    const ada = await inTransaction((trx) =>
      registerCustomer(trx, { email, name: 'Ada' }, context),
    );
    expect(ada.state).toMatchObject({ email, name: 'Ada', version: 1 });
    expect(ada.version).toBe(1);
    expect(ada.versions).toEqual([
      { aggregateType: 'customer', aggregateId: ada.state.id, version: 1 },
    ]);
    const [row] = (await api.outbox()).filter((r) => r.aggregate_id === ada.state.id);
    expect(row?.metadata).toMatchObject({
      actor: 'ops:test',
      correlation_id: 'commands-1',
      reason: 'test',
    });

    const changed = await inTransaction((trx) =>
      updateCustomer(
        trx,
        { id: ada.state.id, expectedVersion: 1, name: 'Ada L.', email: `re${email}` },
        context,
      ),
    );
    expect(changed.state).toMatchObject({ name: 'Ada L.', email: `re${email}`, version: 3 });
    expect(changed.versions).toEqual([
      { aggregateType: 'customer', aggregateId: ada.state.id, version: 3 },
    ]);
    expect(await eventsOf(ada.state.id)).toEqual([
      ['customer.registered.v1', 1],
      ['customer.renamed.v1', 2],
      ['customer.email_changed.v1', 3],
    ]);

    const unchanged = await inTransaction((trx) =>
      updateCustomer(trx, { id: ada.state.id, name: 'Ada L.' }, context),
    );
    expect(unchanged.version).toBe(3);
    expect(await eventsOf(ada.state.id)).toHaveLength(3);
  });

  it('checkout writes two aggregates and names both versions', async () => {
    const customer = await inTransaction((trx) =>
      registerCustomer(trx, { email: `${unique('bo')}@example.com`, name: 'Bo' }, context),
    );
    const product = await inTransaction((trx) =>
      listProduct(trx, { sku: unique('CMD-'), name: 'Lamp', priceCents: 250, stock: 5 }, context),
    );
    const cart = await inTransaction((trx) =>
      openCart(trx, { customerId: customer.state.id }, context),
    );
    const added = await inTransaction((trx) =>
      addItem(
        trx,
        { cartId: cart.state.cart.id, productId: product.state.id, quantity: 2 },
        context,
      ),
    );
    expect(added.version).toBe(2);
    expect(added.state.items).toEqual([
      { product_id: product.state.id, quantity: 2, unit_price_cents: 250 },
    ]);
    const order = await inTransaction((trx) =>
      checkout(trx, { cartId: cart.state.cart.id }, context),
    );
    expect(order.state.order).toMatchObject({ total_cents: 500, version: 1 });
    expect(order.versions).toEqual([
      { aggregateType: 'cart', aggregateId: cart.state.cart.id, version: 3 },
      { aggregateType: 'order', aggregateId: order.state.order.id, version: 1 },
    ]);
  });

  it('refuse with CommandErrors carrying stable codes, and write nothing', async () => {
    const email = `${unique('cy')}@example.com`;
    const cy = await inTransaction((trx) => registerCustomer(trx, { email, name: 'Cy' }, context));
    const before = await api.snapshot();
    await expect(
      inTransaction((trx) => registerCustomer(trx, { email, name: 'Other' }, context)),
    ).rejects.toMatchObject({ name: 'CommandError', code: 'email_taken' });
    await expect(
      inTransaction((trx) =>
        updateCustomer(trx, { id: cy.state.id, expectedVersion: 2, name: 'Cyd' }, context),
      ),
    ).rejects.toMatchObject({ name: 'CommandError', code: 'precondition_failed' });
    await expect(
      inTransaction((trx) =>
        openCart(trx, { customerId: '00000000-0000-7000-8000-000000000000' }, context),
      ),
    ).rejects.toMatchObject({ name: 'CommandError', code: 'customer_not_found' });
    expect(await api.snapshot()).toBe(before);
  });

  it('an add or a remove refused once its line was written (no cart, another customer’s, stale, checked out) writes nothing', async () => {
    const owner = await inTransaction((trx) =>
      registerCustomer(trx, { email: `${unique('eve')}@example.com`, name: 'Eve' }, context),
    );
    const product = await inTransaction((trx) =>
      listProduct(trx, { sku: unique('REF-'), name: 'Pen', priceCents: 100, stock: 9 }, context),
    );
    const cart = await inTransaction((trx) =>
      openCart(trx, { customerId: owner.state.id }, context),
    );
    const cartId = cart.state.cart.id;
    const add = (input: { cartId: string; expectedVersion?: number }, as = context) =>
      inTransaction((trx) =>
        addItem(trx, { ...input, productId: product.state.id, quantity: 1 }, as),
      );
    const before = await api.snapshot();
    const refusals = [
      [() => add({ cartId: '00000000-0000-7000-8000-000000000001' }), 'not_found'],
      [() => add({ cartId }, { ...context, mayActFor: () => false }), 'not_found'],
      [() => add({ cartId, expectedVersion: 7 }), 'precondition_failed'],
    ] as const;
    for (const [refused, code] of refusals) {
      await expect(refused()).rejects.toMatchObject({ name: 'CommandError', code });
    }
    expect(await api.snapshot()).toBe(before);
    await add({ cartId, expectedVersion: 1 });
    // Removing: the line deleted and the lines read with the lock, all undone by a refusal.
    const withLine = await api.snapshot();
    const remove = (input: { cartId: string; productId?: string }, as = context) =>
      inTransaction((trx) => removeItem(trx, { productId: product.state.id, ...input }, as));
    const removals = [
      [() => remove({ cartId: '00000000-0000-7000-8000-000000000001' }), 'not_found'],
      [() => remove({ cartId }, { ...context, mayActFor: () => false }), 'not_found'],
      [() => remove({ cartId, productId: owner.state.id }), 'item_not_in_cart'],
    ] as const;
    for (const [refused, code] of removals) {
      await expect(refused()).rejects.toMatchObject({ name: 'CommandError', code });
    }
    expect(await api.snapshot()).toBe(withLine);
    await inTransaction((trx) => checkout(trx, { cartId }, context));
    const checkedOut = await api.snapshot();
    await expect(add({ cartId })).rejects.toMatchObject({ code: 'cart_not_open' });
    expect(await api.snapshot()).toBe(checkedOut);
  });

  it('commit appends only onto the version the state was read at', async () => {
    const dee = await inTransaction((trx) =>
      registerCustomer(trx, { email: `${unique('dee')}@example.com`, name: 'Dee' }, context),
    );
    const before = await api.snapshot();
    // A state read before the registration committed: version 0 is not where the outbox is.
    const stale = { ...dee.state, version: 0 };
    await expect(
      inTransaction((trx) =>
        commit(
          trx,
          'customer',
          stale,
          [{ type: 'customer.renamed.v1', payload: { customerId: dee.state.id, name: 'Dee 2' } }],
          context,
          { name: 'Dee 2' },
        ),
      ),
    ).rejects.toMatchObject({ code: 'version_conflict' });
    expect(await api.snapshot()).toBe(before);
  });

  it('know nothing of HTTP', () => {
    const dir = new URL('.', import.meta.url);
    const sources = readdirSync(dir).filter((f) => f.endsWith('.ts') && !f.includes('.test.'));
    expect(sources.length).toBeGreaterThan(3);
    for (const file of sources) {
      const text = readFileSync(new URL(file, dir), 'utf8');
      expect(text, file).not.toMatch(/from '(fastify|@fastify\/[^']+|\.\.\/(http|routes)\/[^']+)'/);
    }
  });
});

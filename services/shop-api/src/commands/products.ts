import type { NewShopEvent } from '@sluice/shop-catalog';
import type { Transaction } from 'kysely';
import { v7 as uuidv7 } from 'uuid';
import type { ShopDatabase } from '../database.js';
import { CommandError, refusedIfUnique } from './command-error.js';
import {
  commit,
  commitNew,
  lock,
  type Outcome,
  type State,
  type ExpectedVersion,
  type CommandContext,
} from './aggregates.js';

export type Product = State<'product'>;

/** @throws CommandError `sku_taken` */
export async function listProduct(
  trx: Transaction<ShopDatabase>,
  input: { sku: string; name: string; priceCents: number; stock: number },
  context: CommandContext,
): Promise<Outcome<Product>> {
  const id = uuidv7();
  const { sku, name, priceCents, stock } = input;
  try {
    return await commitNew(
      trx,
      'product',
      { id, sku, name, price_cents: priceCents, stock, delisted_at: null },
      [{ type: 'product.listed.v1', payload: { productId: id, sku, name, priceCents, stock } }],
      context,
    );
  } catch (error) {
    throw refusedIfUnique(
      error,
      'products_sku_key',
      () => new CommandError('sku_taken', `The SKU ${JSON.stringify(sku)} is taken`),
    );
  }
}

/** Locks a product that is still listed; `delisted` says why not otherwise. */
async function lockListedProduct(
  trx: Transaction<ShopDatabase>,
  input: ExpectedVersion & { id: string },
  delisted: string,
): Promise<Product> {
  const product = await lock(trx, 'product', input.id, input.expectedVersion);
  if (product.delisted_at !== null) throw new CommandError('product_delisted', delisted);
  return product;
}

/**
 * Reprices and/or restocks a listed product: one event per field that changes.
 *
 * @throws CommandError `not_found`, `precondition_failed`, `product_delisted`
 */
export async function updateProduct(
  trx: Transaction<ShopDatabase>,
  input: ExpectedVersion & { id: string; priceCents?: number; stock?: number },
  context: CommandContext,
): Promise<Outcome<Product>> {
  const { id, priceCents, stock } = input;
  const current = await lockListedProduct(trx, input, `Product ${id} is delisted`);
  const events: NewShopEvent[] = [];
  if (priceCents !== undefined && priceCents !== current.price_cents) {
    events.push({
      type: 'product.repriced.v1',
      payload: { productId: id, priceCents, previousPriceCents: current.price_cents },
    });
  }
  if (stock !== undefined && stock !== current.stock) {
    events.push({
      type: 'product.restocked.v1',
      payload: { productId: id, stock, previousStock: current.stock },
    });
  }
  return commit(trx, 'product', current, events, context, {
    price_cents: priceCents ?? current.price_cents,
    stock: stock ?? current.stock,
  });
}

/**
 * Takes a product off sale; carts can no longer add it.
 *
 * @throws CommandError `not_found`, `precondition_failed`, `product_delisted`
 */
export async function delistProduct(
  trx: Transaction<ShopDatabase>,
  input: ExpectedVersion & { id: string },
  context: CommandContext,
): Promise<Outcome<Product>> {
  const { id } = input;
  const current = await lockListedProduct(trx, input, `Product ${id} is already delisted`);
  return commit(
    trx,
    'product',
    current,
    [{ type: 'product.delisted.v1', payload: { productId: id } }],
    context,
    { delisted_at: new Date() },
  );
}

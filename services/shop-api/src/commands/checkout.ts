import type { Transaction } from 'kysely';
import { v7 as uuidv7 } from 'uuid';
import type { ShopDatabase } from '../database.js';
import { orderableTotal } from './cart-limits.js';
import { lockOpenCart, loadItems, type CartLine } from './carts.js';
import { CommandError } from './command-error.js';
import {
  commit,
  commitNew,
  type Outcome,
  type State,
  type ExpectedVersion,
  type CommandContext,
} from './aggregates.js';

export interface OrderLine {
  productId: string;
  quantity: number;
  unitPriceCents: number;
}

export interface PlacedOrder {
  order: State<'order'>;
  lines: OrderLine[];
}

/**
 * Takes every line's units off its product's stock, in product id order (the order `loadItems`
 * gives), so that concurrent checkouts lock products in one order and never deadlock.
 *
 * @throws CommandError `insufficient_stock`
 */
async function reserveStock(trx: Transaction<ShopDatabase>, items: readonly CartLine[]) {
  for (const item of items) {
    const reserved = await trx
      .updateTable('shop.products')
      .set((eb) => ({ stock: eb('stock', '-', item.quantity) }))
      .where('id', '=', item.product_id)
      .where('stock', '>=', item.quantity)
      .where('delisted_at', 'is', null)
      .executeTakeFirst();
    if (reserved.numUpdatedRows === 0n) {
      throw new CommandError(
        'insufficient_stock',
        `Not enough stock of product ${item.product_id}`,
      );
    }
  }
}

/**
 * Turns an open cart into an order: reserves stock, checks the cart out and places the order.
 * Its outcome's version is the order's; its versions name the cart's and the order's.
 *
 * @throws CommandError `not_found`, `precondition_failed`, `cart_not_open`, `cart_empty`,
 *   `cart_lines_limit`, `cart_total_limit`, `insufficient_stock`
 */
export async function checkout(
  trx: Transaction<ShopDatabase>,
  input: ExpectedVersion & { cartId: string },
  context: CommandContext,
): Promise<Outcome<PlacedOrder>> {
  const { cartId } = input;
  const cart = await lockOpenCart(trx, cartId, input.expectedVersion, context);
  const items = await loadItems(trx, cartId);
  if (items.length === 0) throw new CommandError('cart_empty', `Cart ${cartId} has no items`);
  // Carts from before the add-time limits may still exceed them.
  const totalCents = orderableTotal(items, `Cart ${cartId} has`);
  await reserveStock(trx, items);
  const orderId = uuidv7();
  const customerId = cart.customer_id;
  const lines = items.map((item) => ({
    productId: item.product_id,
    quantity: item.quantity,
    unitPriceCents: item.unit_price_cents,
  }));
  const checkedOut = await commit(
    trx,
    'cart',
    cart,
    [{ type: 'cart.checked_out.v1', payload: { cartId, orderId, totalCents } }],
    context,
    { status: 'checked_out' },
  );
  const placed = await commitNew(
    trx,
    'order',
    {
      id: orderId,
      cart_id: cartId,
      customer_id: customerId,
      total_cents: totalCents,
      status: 'placed',
    },
    [{ type: 'order.placed.v1', payload: { orderId, cartId, customerId, lines, totalCents } }],
    context,
  );
  await trx
    .insertInto('shop.order_lines')
    .values(items.map((item) => ({ order_id: orderId, ...item })))
    .execute();
  return {
    state: { order: placed.state, lines },
    version: placed.version,
    versions: [...checkedOut.versions, ...placed.versions],
  };
}

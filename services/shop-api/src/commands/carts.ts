import { pipelined } from '@sluice/database';
import { sql, type CompiledQuery, type Kysely, type Transaction } from 'kysely';
import { v7 as uuidv7 } from 'uuid';
import type { ShopDatabase } from '../database.js';
import { cartLimits, orderableTotal } from './cart-limits.js';
import { CommandError } from './command-error.js';
import {
  advanced,
  advanceStatement,
  appendAdvanced,
  commitNew,
  lock,
  type Advanced,
  type Outcome,
  type State,
  type ExpectedVersion,
  type CommandContext,
} from './aggregates.js';

/** A product in a cart: how many units, at the price of the first one. */
export interface CartLine {
  product_id: string;
  quantity: number;
  unit_price_cents: number;
}

export interface Cart {
  cart: State<'cart'>;
  /** In product id order. */
  items: CartLine[];
}

/** The cart's lines, in product id order: the one lock order of every checkout. */
export function loadItems(db: Kysely<ShopDatabase>, cartId: string): Promise<CartLine[]> {
  return itemsOf(db, cartId).execute();
}

const itemsOf = (db: Kysely<ShopDatabase>, cartId: string) =>
  db
    .selectFrom('shop.cart_items')
    .select(['product_id', 'quantity', 'unit_price_cents'])
    .where('cart_id', '=', cartId)
    .orderBy('product_id');

export async function findCart(db: Kysely<ShopDatabase>, id: string): Promise<Cart | undefined> {
  const cart = await db
    .selectFrom('shop.carts')
    .selectAll()
    .where('id', '=', id)
    .executeTakeFirst();
  return cart === undefined ? undefined : { cart, items: await loadItems(db, id) };
}

/** What a cart command may touch: the carts of the customers its sender may act for. */
const mayChange = (context: CommandContext) => (cart: State<'cart'>) =>
  context.mayActFor(cart.customer_id);

function assertOpen(cart: State<'cart'>, id: string): void {
  if (cart.status !== 'open') {
    throw new CommandError('cart_not_open', `Cart ${id} is ${cart.status}`);
  }
}

/**
 * Locks an open cart for this transaction, at the version the caller expects.
 *
 * @throws CommandError `not_found` (also another customer's cart), `precondition_failed`,
 *   `cart_not_open`
 */
export async function lockOpenCart(
  trx: Transaction<ShopDatabase>,
  id: string,
  expectedVersion: number | undefined,
  context: CommandContext,
): Promise<State<'cart'>> {
  const cart = await lock(trx, 'cart', id, expectedVersion, mayChange(context));
  assertOpen(cart, id);
  return cart;
}

/**
 * {@link lockOpenCart} and the cart's next version in one statement, for a one-event command,
 * with `statements` sent in the same round trip after it: they run once the cart is locked, and
 * a refusal found in its result rolls them back with it.
 */
async function advanceOpenCartWith(
  trx: Transaction<ShopDatabase>,
  input: ExpectedVersion & { cartId: string },
  context: CommandContext,
  statements: readonly CompiledQuery[],
): Promise<{ cart: Advanced<'cart'>; results: unknown[][] }> {
  const { cartId } = input;
  const [advance, ...results] = await pipelined(trx, [
    advanceStatement(trx, 'cart', cartId, 1),
    ...statements,
  ]);
  const cart = advanced('cart', cartId, advance?.rows[0], {
    expectedVersion: input.expectedVersion,
    count: 1,
    exists: mayChange(context),
  });
  assertOpen(cart.found, cartId);
  return { cart, results: results.map((result) => result.rows) };
}

/**
 * Adds `quantity` to the cart's line of a listed product, within the line's limit, and reads
 * every line back (the outer SELECT sees the lines as they were, so the added one comes from
 * RETURNING): `added` marks it; none is marked when the line could not take the units. Adds
 * nothing to a cart that does not exist.
 */
const addToLine = (
  trx: Transaction<ShopDatabase>,
  { cartId, productId, quantity }: { cartId: string; productId: string; quantity: number },
) =>
  sql<CartLine & { added: boolean }>`
    WITH line AS (
      INSERT INTO shop.cart_items (cart_id, product_id, quantity, unit_price_cents)
      SELECT ${cartId}::uuid, p.id, ${quantity}::int, p.price_cents
        FROM shop.products p
       WHERE p.id = ${productId}::uuid AND p.delisted_at IS NULL
         AND EXISTS (SELECT 1 FROM shop.carts c WHERE c.id = ${cartId}::uuid)
      ON CONFLICT (cart_id, product_id) DO UPDATE
        SET quantity = shop.cart_items.quantity + excluded.quantity
        WHERE shop.cart_items.quantity + excluded.quantity <= ${cartLimits.unitsPerLine}
      RETURNING product_id, quantity, unit_price_cents)
    SELECT product_id, quantity, unit_price_cents, true AS added FROM line
    UNION ALL
    SELECT product_id, quantity, unit_price_cents, false FROM shop.cart_items
     WHERE cart_id = ${cartId}::uuid AND product_id <> ${productId}::uuid
    ORDER BY product_id`.compile(trx);

const withItems = (committed: Outcome<State<'cart'>>, items: CartLine[]): Outcome<Cart> => ({
  ...committed,
  state: { cart: committed.state, items },
});

/** @throws CommandError `customer_not_found` */
export async function openCart(
  trx: Transaction<ShopDatabase>,
  input: { customerId: string },
  context: CommandContext,
): Promise<Outcome<Cart>> {
  const { customerId } = input;
  const customer = await trx
    .selectFrom('shop.customers')
    .select('id')
    .where('id', '=', customerId)
    .where('erased_at', 'is', null)
    .forShare()
    .executeTakeFirst();
  if (customer === undefined) {
    throw new CommandError('customer_not_found', `No customer ${customerId}`);
  }
  const id = uuidv7();
  const opened = await commitNew(
    trx,
    'cart',
    { id, customer_id: customerId, status: 'open' },
    [{ type: 'cart.opened.v1', payload: { cartId: id, customerId } }],
    context,
  );
  return withItems(opened, []);
}

/** Why a line could not take the units: the product is not on sale, or the line is full. */
async function refusedLine(trx: Transaction<ShopDatabase>, productId: string) {
  const listed = await trx
    .selectFrom('shop.products')
    .select('id')
    .where('id', '=', productId)
    .where('delisted_at', 'is', null)
    .executeTakeFirst();
  return listed === undefined
    ? new CommandError('product_not_found', `No listed product ${productId}`)
    : new CommandError(
        'quantity_limit',
        `A cart line holds at most ${cartLimits.unitsPerLine} units`,
      );
}

/**
 * Adds units of a listed product to an open cart. A line keeps the price of its first unit, so
 * the events always add up to the cart.
 *
 * @throws CommandError `not_found`, `precondition_failed`, `cart_not_open`, `product_not_found`,
 *   `quantity_limit`, `cart_lines_limit`, `cart_total_limit`
 */
export async function addItem(
  trx: Transaction<ShopDatabase>,
  input: ExpectedVersion & { cartId: string; productId: string; quantity: number },
  context: CommandContext,
): Promise<Outcome<Cart>> {
  const { cartId, productId, quantity } = input;
  // The hot path takes two round trips: lock the cart and move it to its next version, then add
  // to the line and read every line back, both sent at once (the second runs after the first has
  // the cart's lock, as if sent after it); then append the event. A refusal, found after both ran,
  // rolls all of it back.
  const { cart, results } = await advanceOpenCartWith(trx, input, context, [addToLine(trx, input)]);
  const rows = (results[0] ?? []) as (CartLine & { added: boolean })[];
  const line = rows.find((row) => row.added);
  if (line === undefined) throw await refusedLine(trx, productId);
  const items = rows.map((row) => ({
    product_id: row.product_id,
    quantity: row.quantity,
    unit_price_cents: row.unit_price_cents,
  }));
  // Refused now, not at checkout: every cart stays one that can be checked out.
  orderableTotal(items, `With this add, cart ${cartId} would have`);
  const unitPriceCents = line.unit_price_cents;
  const added = await appendAdvanced(
    trx,
    'cart',
    cart,
    [{ type: 'cart.item_added.v1', payload: { cartId, productId, quantity, unitPriceCents } }],
    context,
  );
  return withItems(added, items);
}

/** @throws CommandError `not_found`, `precondition_failed`, `cart_not_open`, `item_not_in_cart` */
export async function removeItem(
  trx: Transaction<ShopDatabase>,
  input: ExpectedVersion & { cartId: string; productId: string },
  context: CommandContext,
): Promise<Outcome<Cart>> {
  const { cartId, productId } = input;
  // One round trip: lock the cart and move it on, remove the line, read the lines left.
  const { cart, results } = await advanceOpenCartWith(trx, input, context, [
    trx
      .deleteFrom('shop.cart_items')
      .where('cart_id', '=', cartId)
      .where('product_id', '=', productId)
      .returning(['quantity', 'unit_price_cents'])
      .compile(),
    itemsOf(trx, cartId).compile(),
  ]);
  const line = results[0]?.[0] as Pick<CartLine, 'quantity' | 'unit_price_cents'> | undefined;
  const items = (results[1] ?? []) as CartLine[];
  if (line === undefined) {
    throw new CommandError('item_not_in_cart', `Product ${productId} is not in cart ${cartId}`);
  }
  const { quantity, unit_price_cents: unitPriceCents } = line;
  const removed = await appendAdvanced(
    trx,
    'cart',
    cart,
    [{ type: 'cart.item_removed.v1', payload: { cartId, productId, quantity, unitPriceCents } }],
    context,
  );
  return withItems(removed, items);
}

import { Type } from '@sinclair/typebox';
import type { Outbox } from '@sluice/outbox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { sql, type Kysely, type Selectable, type Transaction } from 'kysely';
import { v7 as uuidv7 } from 'uuid';
import type { CartTable, ShopDatabase } from '../database.js';
import { ProblemError, appendContext, assertVersion, ifMatchVersion } from '../http.js';
import type { Writer } from '../writes.js';
import { IdParams, Quantity, Uuid, cartLimits } from './schemas.js';

interface Line {
  quantity: number;
  unit_price_cents: number;
}

/** Exact: a line totals up to 10^15 cents, and a few of those pass 2^53. */
function totalCents(items: readonly Line[]): bigint {
  return items.reduce(
    (sum, item) => sum + BigInt(item.quantity) * BigInt(item.unit_price_cents),
    0n,
  );
}

/**
 * Refuses lines that one `order.placed.v1` could not carry, and returns their total. `subject`
 * starts the message: "Cart … has" or "With this add, cart … would have".
 *
 * @throws ProblemError 409 `cart_lines_limit`, `cart_total_limit`
 */
function orderableTotal(items: readonly Line[], subject: string): number {
  if (items.length > cartLimits.lines) {
    throw new ProblemError(
      409,
      'cart_lines_limit',
      `${subject} ${items.length} lines; an order holds at most ${cartLimits.lines}`,
    );
  }
  const total = totalCents(items);
  if (total > BigInt(cartLimits.totalCents)) {
    throw new ProblemError(
      409,
      'cart_total_limit',
      `${subject} a total of ${total} cents; an order totals at most ${cartLimits.totalCents}`,
    );
  }
  return Number(total);
}

function loadItems(db: Kysely<ShopDatabase>, id: string) {
  return db
    .selectFrom('shop.cart_items')
    .select(['product_id', 'quantity', 'unit_price_cents'])
    .where('cart_id', '=', id)
    .orderBy('product_id')
    .execute();
}

function presentCart(
  cart: Selectable<CartTable>,
  items: readonly { product_id: string; quantity: number; unit_price_cents: number }[],
) {
  return {
    id: cart.id,
    customerId: cart.customer_id,
    status: cart.status,
    items: items.map((item) => ({
      productId: item.product_id,
      quantity: item.quantity,
      unitPriceCents: item.unit_price_cents,
    })),
    // Beyond 2^53 only for carts that grew past the limits before they existed; display only.
    totalCents: Number(totalCents(items)),
    version: cart.version,
  };
}

async function loadCart(db: Kysely<ShopDatabase>, id: string) {
  const cart = await db
    .selectFrom('shop.carts')
    .selectAll()
    .where('id', '=', id)
    .executeTakeFirst();
  return cart === undefined ? undefined : presentCart(cart, await loadItems(db, id));
}

/** Locks an open cart for this transaction; commands on one cart run one after another. */
async function lockOpenCart(
  trx: Transaction<ShopDatabase>,
  id: string,
  expected: number | undefined,
) {
  const cart = await trx
    .selectFrom('shop.carts')
    .selectAll()
    .where('id', '=', id)
    .forUpdate()
    .executeTakeFirst();
  if (cart === undefined) throw new ProblemError(404, 'not_found', `No cart ${id}`);
  assertVersion(expected, cart.version);
  if (cart.status !== 'open')
    throw new ProblemError(409, 'cart_not_open', `Cart ${id} is ${cart.status}`);
  return cart;
}

export function cartRoutes(
  app: FastifyInstance,
  deps: { db: Kysely<ShopDatabase>; outbox: Outbox; write: Writer },
): void {
  const { db, outbox, write } = deps;
  const api = app.withTypeProvider<TypeBoxTypeProvider>();

  const cartResponse = async (trx: Transaction<ShopDatabase>, id: string, status: number) => {
    const cart = await loadCart(trx, id);
    if (cart === undefined) throw new ProblemError(404, 'not_found', `No cart ${id}`);
    return {
      status,
      body: cart,
      etag: cart.version,
      versions: [{ aggregateType: 'cart', aggregateId: id, version: cart.version }],
    };
  };

  api.post(
    '/carts',
    { schema: { body: Type.Object({ customerId: Uuid }, { additionalProperties: false }) } },
    (request, reply) =>
      write(request, reply, async (trx) => {
        const { customerId } = request.body;
        const customer = await trx
          .selectFrom('shop.customers')
          .select('id')
          .where('id', '=', customerId)
          .where('erased_at', 'is', null)
          .forShare()
          .executeTakeFirst();
        if (customer === undefined) {
          throw new ProblemError(422, 'customer_not_found', `No customer ${customerId}`);
        }
        const id = uuidv7();
        await trx
          .insertInto('shop.carts')
          .values({ id, customer_id: customerId, status: 'open', version: 1 })
          .execute();
        await outbox.append(
          trx,
          { type: 'cart', id, expectedVersion: 0 },
          [{ type: 'cart.opened.v1', payload: { cartId: id, customerId } }],
          appendContext(request),
        );
        return { ...(await cartResponse(trx, id, 201)), location: `/carts/${id}` };
      }),
  );

  api.get('/carts/:id', { schema: { params: IdParams } }, async (request, reply) => {
    const cart = await loadCart(db, request.params.id);
    if (cart === undefined)
      throw new ProblemError(404, 'not_found', `No cart ${request.params.id}`);
    return reply.header('etag', `"${cart.version}"`).send(cart);
  });

  api.post(
    '/carts/:id/items',
    {
      schema: {
        params: IdParams,
        body: Type.Object({ productId: Uuid, quantity: Quantity }, { additionalProperties: false }),
      },
    },
    (request, reply) =>
      write(request, reply, async (trx) => {
        const { id } = request.params;
        const { productId, quantity } = request.body;
        const expected = ifMatchVersion(request, false);
        // The hot path takes four statements: bump (and lock) the open cart, add to the line,
        // read the lines back (to check the cart's limits), append the event. Failures are told
        // apart only when they happen.
        const cart = await trx
          .updateTable('shop.carts')
          .set((eb) => ({ version: eb('version', '+', 1), updated_at: new Date() }))
          .where('id', '=', id)
          .where('status', '=', 'open')
          .$if(expected !== undefined, (qb) => qb.where('version', '=', expected ?? 0))
          .returningAll()
          .executeTakeFirst();
        if (cart === undefined) {
          await lockOpenCart(trx, id, expected); // throws the precise 404, 409 or 412
          throw new ProblemError(409, 'conflict', `Cart ${id} changed concurrently`);
        }
        // A line keeps the price of its first unit, so the events always add up to the cart.
        const { rows } = await sql<{ quantity: number; unit_price_cents: number }>`
          INSERT INTO shop.cart_items (cart_id, product_id, quantity, unit_price_cents)
          SELECT ${id}::uuid, p.id, ${quantity}::int, p.price_cents
            FROM shop.products p WHERE p.id = ${productId}::uuid AND p.delisted_at IS NULL
          ON CONFLICT (cart_id, product_id) DO UPDATE
            SET quantity = shop.cart_items.quantity + excluded.quantity
            WHERE shop.cart_items.quantity + excluded.quantity <= ${cartLimits.unitsPerLine}
          RETURNING quantity, unit_price_cents`.execute(trx);
        const line = rows[0];
        if (line === undefined) {
          const listed = await trx
            .selectFrom('shop.products')
            .select('id')
            .where('id', '=', productId)
            .where('delisted_at', 'is', null)
            .executeTakeFirst();
          if (listed === undefined) {
            throw new ProblemError(422, 'product_not_found', `No listed product ${productId}`);
          }
          throw new ProblemError(
            409,
            'quantity_limit',
            `A cart line holds at most ${cartLimits.unitsPerLine} units`,
          );
        }
        const items = await loadItems(trx, id);
        // Refused now, not at checkout: every cart stays one that can be checked out.
        orderableTotal(items, `With this add, cart ${id} would have`);
        await outbox.append(
          trx,
          { type: 'cart', id, expectedVersion: cart.version - 1 },
          [
            {
              type: 'cart.item_added.v1',
              payload: { cartId: id, productId, quantity, unitPriceCents: line.unit_price_cents },
            },
          ],
          appendContext(request),
        );
        const body = presentCart(cart, items);
        return {
          status: 200,
          body,
          etag: cart.version,
          versions: [{ aggregateType: 'cart', aggregateId: id, version: cart.version }],
        };
      }),
  );

  api.delete(
    '/carts/:id/items/:productId',
    {
      schema: {
        params: Type.Object({ id: Uuid, productId: Uuid }, { additionalProperties: false }),
      },
    },
    (request, reply) =>
      write(request, reply, async (trx) => {
        const { id, productId } = request.params;
        const cart = await lockOpenCart(trx, id, ifMatchVersion(request, false));
        const line = await trx
          .deleteFrom('shop.cart_items')
          .where('cart_id', '=', id)
          .where('product_id', '=', productId)
          .returning(['quantity', 'unit_price_cents'])
          .executeTakeFirst();
        if (line === undefined) {
          throw new ProblemError(
            409,
            'item_not_in_cart',
            `Product ${productId} is not in cart ${id}`,
          );
        }
        await trx
          .updateTable('shop.carts')
          .set({ version: cart.version + 1, updated_at: new Date() })
          .where('id', '=', id)
          .execute();
        await outbox.append(
          trx,
          { type: 'cart', id, expectedVersion: cart.version },
          [
            {
              type: 'cart.item_removed.v1',
              payload: {
                cartId: id,
                productId,
                quantity: line.quantity,
                unitPriceCents: line.unit_price_cents,
              },
            },
          ],
          appendContext(request),
        );
        return cartResponse(trx, id, 200);
      }),
  );

  api.post('/carts/:id/checkout', { schema: { params: IdParams } }, (request, reply) =>
    write(request, reply, async (trx) => {
      const { id } = request.params;
      const cart = await lockOpenCart(trx, id, ifMatchVersion(request, false));
      const items = await trx
        .selectFrom('shop.cart_items')
        .select(['product_id', 'quantity', 'unit_price_cents'])
        .where('cart_id', '=', id)
        .orderBy('product_id') // one lock order for every checkout: no deadlocks
        .execute();
      if (items.length === 0) throw new ProblemError(409, 'cart_empty', `Cart ${id} has no items`);
      // Carts from before the add-time limits may still exceed them.
      const totalCents = orderableTotal(items, `Cart ${id} has`);
      for (const item of items) {
        const reserved = await trx
          .updateTable('shop.products')
          .set((eb) => ({ stock: eb('stock', '-', item.quantity) }))
          .where('id', '=', item.product_id)
          .where('stock', '>=', item.quantity)
          .where('delisted_at', 'is', null)
          .executeTakeFirst();
        if (reserved.numUpdatedRows === 0n) {
          throw new ProblemError(
            409,
            'insufficient_stock',
            `Not enough stock of product ${item.product_id}`,
          );
        }
      }
      const orderId = uuidv7();
      const lines = items.map((item) => ({
        productId: item.product_id,
        quantity: item.quantity,
        unitPriceCents: item.unit_price_cents,
      }));
      await trx
        .insertInto('shop.orders')
        .values({
          id: orderId,
          cart_id: id,
          customer_id: cart.customer_id,
          total_cents: totalCents,
          status: 'placed',
          version: 1,
        })
        .execute();
      await trx
        .insertInto('shop.order_lines')
        .values(items.map((item) => ({ order_id: orderId, ...item })))
        .execute();
      await trx
        .updateTable('shop.carts')
        .set({ status: 'checked_out', version: cart.version + 1, updated_at: new Date() })
        .where('id', '=', id)
        .execute();
      const context = appendContext(request);
      await outbox.append(
        trx,
        { type: 'cart', id, expectedVersion: cart.version },
        [{ type: 'cart.checked_out.v1', payload: { cartId: id, orderId, totalCents } }],
        context,
      );
      await outbox.append(
        trx,
        { type: 'order', id: orderId, expectedVersion: 0 },
        [
          {
            type: 'order.placed.v1',
            payload: { orderId, cartId: id, customerId: cart.customer_id, lines, totalCents },
          },
        ],
        context,
      );
      return {
        status: 201,
        body: {
          orderId,
          cartId: id,
          customerId: cart.customer_id,
          status: 'placed',
          lines,
          totalCents,
          version: 1,
        },
        etag: 1,
        location: `/orders/${orderId}`,
        versions: [
          { aggregateType: 'cart', aggregateId: id, version: cart.version + 1 },
          { aggregateType: 'order', aggregateId: orderId, version: 1 },
        ],
      };
    }),
  );
}

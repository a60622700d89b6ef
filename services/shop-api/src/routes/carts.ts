import { Type } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import type { Kysely } from 'kysely';
import { cartTotalCents } from '../commands/cart-limits.js';
import { addItem, findCart, openCart, removeItem, type Cart } from '../commands/carts.js';
import { checkout, type PlacedOrder } from '../commands/checkout.js';
import type { Outcome } from '../commands/aggregates.js';
import type { ShopDatabase } from '../database.js';
import { mayActFor } from '../http/authorization.js';
import { ifMatchVersion } from '../http/preconditions.js';
import { ProblemError } from '../http/problems.js';
import type { Writer } from '../http/writes.js';
import { IdParams, Quantity, Uuid } from './schemas.js';

function presentCart({ cart, items }: Cart) {
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
    totalCents: Number(cartTotalCents(items)),
    version: cart.version,
  };
}

const cartWritten = (status: number, written: Outcome<Cart>) => ({
  status,
  written,
  body: presentCart(written.state),
});

function presentOrder({ order, lines }: PlacedOrder) {
  return {
    orderId: order.id,
    cartId: order.cart_id,
    customerId: order.customer_id,
    status: order.status,
    lines,
    totalCents: order.total_cents,
    version: order.version,
  };
}

export function cartRoutes(
  app: FastifyInstance,
  deps: { db: Kysely<ShopDatabase>; write: Writer },
): void {
  const { db, write } = deps;
  const api = app.withTypeProvider<TypeBoxTypeProvider>();

  api.post(
    '/carts',
    { schema: { body: Type.Object({ customerId: Uuid }, { additionalProperties: false }) } },
    (request, reply) => {
      if (!mayActFor(request, request.body.customerId))
        throw new ProblemError(403, 'forbidden', 'A customer opens carts for themselves only');
      return write(request, reply, async (trx, context) => {
        const written = await openCart(trx, request.body, context);
        return { ...cartWritten(201, written), location: `/carts/${written.state.cart.id}` };
      });
    },
  );

  api.get('/carts/:id', { schema: { params: IdParams } }, async (request, reply) => {
    const cart = await findCart(db, request.params.id);
    if (cart === undefined || !mayActFor(request, cart.cart.customer_id))
      throw new ProblemError(404, 'not_found', `No cart ${request.params.id}`);
    return reply.header('etag', `"${cart.cart.version}"`).send(presentCart(cart));
  });

  api.post(
    '/carts/:id/items',
    {
      schema: {
        params: IdParams,
        body: Type.Object({ productId: Uuid, quantity: Quantity }, { additionalProperties: false }),
      },
    },
    async (request, reply) => {
      return write(request, reply, async (trx, context) => {
        const expectedVersion = ifMatchVersion(request, false);
        const input = { ...request.body, cartId: request.params.id, expectedVersion };
        return cartWritten(200, await addItem(trx, input, context));
      });
    },
  );

  api.delete(
    '/carts/:id/items/:productId',
    {
      schema: {
        params: Type.Object({ id: Uuid, productId: Uuid }, { additionalProperties: false }),
      },
    },
    async (request, reply) => {
      return write(request, reply, async (trx, context) => {
        const expectedVersion = ifMatchVersion(request, false);
        const { id: cartId, productId } = request.params;
        const input = { cartId, productId, expectedVersion };
        return cartWritten(200, await removeItem(trx, input, context));
      });
    },
  );

  api.post('/carts/:id/checkout', { schema: { params: IdParams } }, async (request, reply) => {
    return write(request, reply, async (trx, context) => {
      const expectedVersion = ifMatchVersion(request, false);
      const written = await checkout(trx, { cartId: request.params.id, expectedVersion }, context);
      const body = presentOrder(written.state);
      return { status: 201, written, body, location: `/orders/${body.orderId}` };
    });
  });
}

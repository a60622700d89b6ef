import { Type } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import type { Kysely, Selectable } from 'kysely';
import type { OrderTable, ShopDatabase } from '../database.js';
import { mayActFor, ownCustomerScope } from '../http/authorization.js';
import { ProblemError } from '../http/problems.js';
import { IdParams, PageQuery, Uuid, nextCursor } from './schemas.js';

export function orderRoutes(app: FastifyInstance, deps: { db: Kysely<ShopDatabase> }): void {
  const { db } = deps;
  const api = app.withTypeProvider<TypeBoxTypeProvider>();

  const present = async (orders: Selectable<OrderTable>[]) => {
    if (orders.length === 0) return [];
    const lines = await db
      .selectFrom('shop.order_lines')
      .selectAll()
      .where(
        'order_id',
        'in',
        orders.map((order) => order.id),
      )
      .orderBy('product_id')
      .execute();
    return orders.map((order) => ({
      orderId: order.id,
      cartId: order.cart_id,
      customerId: order.customer_id,
      status: order.status,
      lines: lines
        .filter((line) => line.order_id === order.id)
        .map((line) => ({
          productId: line.product_id,
          quantity: line.quantity,
          unitPriceCents: line.unit_price_cents,
        })),
      totalCents: order.total_cents,
      version: order.version,
      createdAt: order.created_at,
    }));
  };

  api.get('/orders/:id', { schema: { params: IdParams } }, async (request, reply) => {
    const order = await db
      .selectFrom('shop.orders')
      .selectAll()
      .where('id', '=', request.params.id)
      .executeTakeFirst();
    if (order === undefined || !mayActFor(request, order.customer_id))
      throw new ProblemError(404, 'not_found', `No order ${request.params.id}`);
    const [body] = await present([order]);
    return reply.header('etag', `"${order.version}"`).send(body);
  });

  api.get(
    '/orders',
    {
      schema: {
        querystring: Type.Composite([PageQuery, Type.Object({ customerId: Type.Optional(Uuid) })], {
          additionalProperties: false,
        }),
      },
    },
    async (request) => {
      const { limit, cursor, customerId } = request.query;
      let query = db.selectFrom('shop.orders').selectAll();
      // A customer lists their own orders only, whatever customerId they ask for.
      const own = ownCustomerScope(request);
      if (own !== undefined) query = query.where('customer_id', '=', own);
      if (customerId !== undefined) query = query.where('customer_id', '=', customerId);
      if (cursor !== undefined) query = query.where('id', '>', cursor);
      const rows = await query.orderBy('id').limit(limit).execute();
      const items = await present(rows);
      return { items, nextCursor: nextCursor(rows, limit) };
    },
  );
}

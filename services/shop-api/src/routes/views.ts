import { Type } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import type { Kysely } from 'kysely';
import type { ShopDatabase } from '../database.js';
import { mayActFor, ownCustomerScope, requireAdmin } from '../http/authorization.js';
import type { ConsistencyWait } from '../http/consistency-wait.js';
import { ProblemError } from '../http/problems.js';
import { auditTrail, cartSummary, productSales, removedThenBought } from '../read-models.js';
import { IdParams, Uuid } from './schemas.js';

const RemovedThenBoughtQuery = Type.Object(
  {
    customerId: Type.Optional(Uuid),
    limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
  },
  { additionalProperties: false },
);

const AuditQuery = Type.Object(
  {
    aggregateType: Type.Union(['customer', 'product', 'cart', 'order'].map((t) => Type.Literal(t))),
    aggregateId: Type.String({ minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9-]+$' }),
  },
  { additionalProperties: false },
);

/**
 * `/views/*`: read models, optionally waiting until they include a given write. A customer sees
 * their own carts and report rows; product sales and the audit log are an admin's.
 */
export function viewRoutes(
  app: FastifyInstance,
  deps: { db: Kysely<ShopDatabase>; awaitApplied: ConsistencyWait },
): void {
  const { db, awaitApplied } = deps;
  const api = app.withTypeProvider<TypeBoxTypeProvider>();

  api.get('/views/carts/:id', { schema: { params: IdParams } }, async (request, reply) => {
    await awaitApplied(request, 'cart_summary', ['cart']);
    const summary = await cartSummary(db, request.params.id);
    if (summary === undefined || !mayActFor(request, summary.customerId))
      throw new ProblemError(404, 'not_found', `No cart ${request.params.id} in the view`);
    return reply.send(summary);
  });

  api.get('/views/products/:id/sales', { schema: { params: IdParams } }, async (request, reply) => {
    requireAdmin(request);
    await awaitApplied(request, 'product_sales', ['cart', 'order']);
    const sales = await productSales(db, request.params.id);
    if (sales === undefined) {
      throw new ProblemError(
        404,
        'not_found',
        `No sales of product ${request.params.id} in the view`,
      );
    }
    return reply.send(sales);
  });

  api.get(
    '/views/reports/removed-then-bought',
    { schema: { querystring: RemovedThenBoughtQuery } },
    async (request, reply) => {
      await awaitApplied(request, 'removed_then_bought', ['cart', 'order']);
      const own = ownCustomerScope(request);
      const query = own === undefined ? request.query : { ...request.query, customerId: own };
      return reply.send({ items: await removedThenBought(db, query) });
    },
  );

  api.get('/views/audit', { schema: { querystring: AuditQuery } }, async (request, reply) => {
    requireAdmin(request);
    const { aggregateType, aggregateId } = request.query;
    await awaitApplied(request, 'audit_log', [aggregateType]);
    return reply.send({ items: await auditTrail(db, aggregateType, aggregateId) });
  });
}

import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { sql, type Kysely } from 'kysely';
import type { ConsistencyTokens, WrittenVersion } from '../consistency-tokens.js';
import type { ShopDatabase } from '../database.js';
import { ProblemError } from '../http.js';
import { Type } from '@sinclair/typebox';
import { IdParams, Uuid } from './schemas.js';

/** The versions a write produced, from its `X-Consistency-Token`; 400 when it is not one of ours. */
function readToken(
  request: FastifyRequest,
  tokens: ConsistencyTokens,
): WrittenVersion[] | undefined {
  const header = request.headers['x-consistency-token'];
  if (header === undefined) return undefined;
  const versions = typeof header === 'string' ? tokens.verify(header) : undefined;
  if (versions !== undefined) return versions;
  throw new ProblemError(
    400,
    'invalid_consistency_token',
    'X-Consistency-Token is not a token this API issued',
  );
}

/**
 * The pause before poll `attempt` (0-based): short at first, as most waits end within a few
 * milliseconds, then 50 ms, so a request waiting for seconds costs few queries.
 */
function pollDelayMs(attempt: number): number {
  return attempt < 5 ? 10 : Math.min(50, 10 * 2 ** (attempt - 4));
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** `/views/*`: read models, optionally waiting until they include a given write. */
export function viewRoutes(
  app: FastifyInstance,
  deps: { db: Kysely<ShopDatabase>; tokens: ConsistencyTokens; consistencyTimeoutMs: number },
): void {
  const { db, tokens } = deps;
  const api = app.withTypeProvider<TypeBoxTypeProvider>();

  /**
   * Waits until `projection` applied every version the request's token names of
   * `aggregateTypes`; 504 once `consistencyTimeoutMs` passed.
   */
  async function awaitApplied(
    request: FastifyRequest,
    projection: string,
    aggregateTypes: readonly string[],
  ): Promise<void> {
    const wanted = (readToken(request, tokens) ?? []).filter((v) =>
      aggregateTypes.includes(v.aggregateType),
    );
    if (wanted.length === 0) return;
    const key = (type: string, id: string) => `${type}/${id}`;
    const deadline = Date.now() + deps.consistencyTimeoutMs;
    for (let attempt = 0; ; attempt += 1) {
      // The versions of the generation readers see (the projection's own name until a rebuild).
      const { rows } = await sql<{ aggregate_type: string; aggregate_id: string; version: string }>`
        SELECT aggregate_type, aggregate_id, version::text FROM sluice.projection_versions
         WHERE projection = COALESCE((SELECT instance FROM sluice.projection_generations
                                       WHERE projection = ${projection} AND state = 'active'), ${projection})
           AND aggregate_type = ANY(${aggregateTypes}::text[])
           AND aggregate_id = ANY(${wanted.map((v) => v.aggregateId)}::text[])`.execute(db);
      const applied = new Map(
        rows.map((row) => [key(row.aggregate_type, row.aggregate_id), Number(row.version)]),
      );
      if (wanted.every((v) => (applied.get(key(v.aggregateType, v.aggregateId)) ?? 0) >= v.version))
        return;
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new ProblemError(
          504,
          'consistency_timeout',
          `The ${projection} view did not catch up within ${deps.consistencyTimeoutMs} ms`,
        );
      }
      await pause(Math.min(pollDelayMs(attempt), remaining));
    }
  }

  api.get('/views/carts/:id', { schema: { params: IdParams } }, async (request, reply) => {
    await awaitApplied(request, 'cart_summary', ['cart']);
    const { rows } = await sql<{
      cart_id: string;
      customer_id: string | null;
      status: string;
      item_count: number;
      total_cents: string;
      version: string;
    }>`SELECT cart_id, customer_id, status, item_count, total_cents::text, version::text
         FROM views.cart_summaries WHERE cart_id = ${request.params.id}::uuid`.execute(db);
    const row = rows[0];
    if (row === undefined)
      throw new ProblemError(404, 'not_found', `No cart ${request.params.id} in the view`);
    return reply.send({
      cartId: row.cart_id,
      customerId: row.customer_id,
      status: row.status,
      itemCount: row.item_count,
      totalCents: Number(row.total_cents),
      version: Number(row.version),
    });
  });

  api.get('/views/products/:id/sales', { schema: { params: IdParams } }, async (request, reply) => {
    await awaitApplied(request, 'product_sales', ['cart', 'order']);
    const { rows } = await sql<{
      product_id: string;
      added_count: string;
      removed_count: string;
      units_sold: string;
      revenue_cents: string;
    }>`SELECT product_id, added_count::text, removed_count::text, units_sold::text, revenue_cents::text
         FROM views.product_sales WHERE product_id = ${request.params.id}::uuid`.execute(db);
    const row = rows[0];
    if (row === undefined)
      throw new ProblemError(
        404,
        'not_found',
        `No sales of product ${request.params.id} in the view`,
      );
    return reply.send({
      productId: row.product_id,
      addedCount: Number(row.added_count),
      removedCount: Number(row.removed_count),
      unitsSold: Number(row.units_sold),
      revenueCents: Number(row.revenue_cents),
    });
  });

  api.get(
    '/views/reports/removed-then-bought',
    {
      schema: {
        querystring: Type.Object(
          {
            customerId: Type.Optional(Uuid),
            limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
          },
          { additionalProperties: false },
        ),
      },
    },
    async (request, reply) => {
      await awaitApplied(request, 'removed_then_bought', ['cart', 'order']);
      const { customerId, limit } = request.query;
      const { rows } = await sql<{
        customer_id: string;
        product_id: string;
        removed_at: Date;
        bought_at: Date;
      }>`
        SELECT customer_id, product_id, removed_at, bought_at FROM views.removed_then_bought
         WHERE ${customerId === undefined ? sql`true` : sql`customer_id = ${customerId}::uuid`}
         ORDER BY bought_at DESC, customer_id, product_id LIMIT ${limit}`.execute(db);
      return reply.send({
        items: rows.map((row) => ({
          customerId: row.customer_id,
          productId: row.product_id,
          removedAt: row.removed_at,
          boughtAt: row.bought_at,
        })),
      });
    },
  );

  api.get(
    '/views/audit',
    {
      schema: {
        querystring: Type.Object(
          {
            aggregateType: Type.Union(
              ['customer', 'product', 'cart', 'order'].map((t) => Type.Literal(t)),
            ),
            aggregateId: Type.String({ minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9-]+$' }),
          },
          { additionalProperties: false },
        ),
      },
    },
    async (request, reply) => {
      const { aggregateType, aggregateId } = request.query;
      await awaitApplied(request, 'audit_log', [aggregateType]);
      const { rows } = await sql<{
        event_id: string;
        version: string;
        type: string;
        occurred_at: Date;
        actor: string | null;
        reason: string | null;
        correlation_id: string | null;
        data: unknown;
      }>`SELECT event_id, version::text, type, occurred_at, actor, reason, correlation_id, data FROM views.audit_log
          WHERE aggregate_type = ${aggregateType} AND aggregate_id = ${aggregateId} ORDER BY audit_log.version`.execute(
        db,
      );
      return reply.send({
        items: rows.map((row) => ({
          eventId: row.event_id,
          version: Number(row.version),
          what: row.type,
          who: row.actor,
          when: row.occurred_at,
          why: row.reason,
          correlationId: row.correlation_id,
          data: row.data,
        })),
      });
    },
  );
}

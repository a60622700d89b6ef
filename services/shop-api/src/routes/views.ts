import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { sql, type Kysely } from 'kysely';
import type { ShopDatabase } from '../database.js';
import { ProblemError } from '../http.js';
import { Type } from '@sinclair/typebox';
import { IdParams, Uuid } from './schemas.js';

type TokenEntry = [aggregateType: string, aggregateId: string, version: number];

/** The versions a write produced, from its `X-Consistency-Token`; 400 when it is not one of ours. */
function parseToken(request: FastifyRequest): TokenEntry[] | undefined {
  const header = request.headers['x-consistency-token'];
  if (header === undefined) return undefined;
  try {
    const entries = JSON.parse(
      Buffer.from(String(header), 'base64url').toString('utf8'),
    ) as unknown;
    if (
      Array.isArray(entries) &&
      entries.every(
        (e) =>
          Array.isArray(e) &&
          e.length === 3 &&
          typeof e[0] === 'string' &&
          typeof e[1] === 'string' &&
          Number.isSafeInteger(e[2]),
      )
    ) {
      return entries as TokenEntry[];
    }
  } catch {
    // fall through
  }
  throw new ProblemError(
    400,
    'invalid_consistency_token',
    'X-Consistency-Token is not a token this API issued',
  );
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** `/views/*`: read models, optionally waiting until they include a given write. */
export function viewRoutes(
  app: FastifyInstance,
  deps: { db: Kysely<ShopDatabase>; consistencyTimeoutMs: number },
): void {
  const { db } = deps;
  const api = app.withTypeProvider<TypeBoxTypeProvider>();

  /** Waits until `projection` applied every listed version of `aggregateType`; 504 past the bound. */
  async function awaitApplied(
    projection: string,
    aggregateType: string,
    entries: readonly TokenEntry[],
  ): Promise<void> {
    const wanted = entries.filter(([type]) => type === aggregateType);
    if (wanted.length === 0) return;
    const deadline = Date.now() + deps.consistencyTimeoutMs;
    for (;;) {
      // The versions of the generation readers see (the projection's own name until a rebuild).
      const { rows } = await sql<{ aggregate_id: string; version: string }>`
        SELECT aggregate_id, version::text FROM sluice.projection_versions
         WHERE projection = COALESCE((SELECT instance FROM sluice.projection_generations
                                       WHERE projection = ${projection} AND state = 'active'), ${projection})
           AND aggregate_type = ${aggregateType}
           AND aggregate_id = ANY(${wanted.map(([, id]) => id)}::text[])`.execute(db);
      const applied = new Map(rows.map((row) => [row.aggregate_id, Number(row.version)]));
      if (wanted.every(([, id, version]) => (applied.get(id) ?? 0) >= version)) return;
      if (Date.now() > deadline) {
        throw new ProblemError(
          504,
          'consistency_timeout',
          `The ${projection} view did not catch up within ${deps.consistencyTimeoutMs} ms`,
        );
      }
      await pause(10);
    }
  }

  api.get('/views/carts/:id', { schema: { params: IdParams } }, async (request, reply) => {
    const token = parseToken(request);
    if (token !== undefined) await awaitApplied('cart_summary', 'cart', token);
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
    const token = parseToken(request);
    if (token !== undefined) {
      await awaitApplied('product_sales', 'cart', token);
      await awaitApplied('product_sales', 'order', token);
    }
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
      const token = parseToken(request);
      if (token !== undefined) {
        await awaitApplied('removed_then_bought', 'cart', token);
        await awaitApplied('removed_then_bought', 'order', token);
      }
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
      const token = parseToken(request);
      if (token !== undefined) await awaitApplied('audit_log', aggregateType, token);
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
          WHERE aggregate_type = ${aggregateType} AND aggregate_id = ${aggregateId} ORDER BY version`.execute(
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

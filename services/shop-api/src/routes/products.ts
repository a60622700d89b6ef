import { Type } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import type { Kysely } from 'kysely';
import { delistProduct, listProduct, updateProduct, type Product } from '../commands/products.js';
import type { ShopDatabase } from '../database.js';
import { requireAdmin } from '../http/authorization.js';
import { ifMatchVersion } from '../http/preconditions.js';
import { ProblemError } from '../http/problems.js';
import type { Writer } from '../http/writes.js';
import { Cents, IdParams, Name, PageQuery, Sku, Stock, nextCursor } from './schemas.js';

function present(row: Product) {
  return {
    id: row.id,
    sku: row.sku,
    name: row.name,
    priceCents: row.price_cents,
    stock: row.stock,
    status: row.delisted_at === null ? 'listed' : 'delisted',
    version: row.version,
  };
}

export function productRoutes(
  app: FastifyInstance,
  deps: { db: Kysely<ShopDatabase>; write: Writer },
): void {
  const { db, write } = deps;
  const api = app.withTypeProvider<TypeBoxTypeProvider>();

  api.post(
    '/products',
    {
      schema: {
        body: Type.Object(
          { sku: Sku, name: Name, priceCents: Cents, stock: Stock },
          { additionalProperties: false },
        ),
      },
    },
    (request, reply) => {
      requireAdmin(request);
      return write(request, reply, async (trx, context) => {
        const written = await listProduct(trx, request.body, context);
        const body = present(written.state);
        return { status: 201, written, body, location: `/products/${body.id}` };
      });
    },
  );

  api.get('/products/:id', { schema: { params: IdParams } }, async (request, reply) => {
    const row = await db
      .selectFrom('shop.products')
      .selectAll()
      .where('id', '=', request.params.id)
      .executeTakeFirst();
    if (row === undefined)
      throw new ProblemError(404, 'not_found', `No product ${request.params.id}`);
    return reply.header('etag', `"${row.version}"`).send(present(row));
  });

  api.get('/products', { schema: { querystring: PageQuery } }, async (request) => {
    const { limit, cursor } = request.query;
    let query = db.selectFrom('shop.products').selectAll();
    if (cursor !== undefined) query = query.where('id', '>', cursor);
    const rows = await query.orderBy('id').limit(limit).execute();
    return { items: rows.map(present), nextCursor: nextCursor(rows, limit) };
  });

  api.patch(
    '/products/:id',
    {
      schema: {
        params: IdParams,
        body: Type.Object(
          { priceCents: Type.Optional(Cents), stock: Type.Optional(Stock) },
          { additionalProperties: false, minProperties: 1 },
        ),
      },
    },
    (request, reply) => {
      requireAdmin(request);
      return write(request, reply, async (trx, context) => {
        const expectedVersion = ifMatchVersion(request, true);
        const input = { ...request.body, ...request.params, expectedVersion };
        const written = await updateProduct(trx, input, context);
        return { status: 200, written, body: present(written.state) };
      });
    },
  );

  api.delete('/products/:id', { schema: { params: IdParams } }, (request, reply) => {
    requireAdmin(request);
    return write(request, reply, async (trx, context) => {
      const expectedVersion = ifMatchVersion(request, true);
      const written = await delistProduct(trx, { ...request.params, expectedVersion }, context);
      return { status: 204, written };
    });
  });
}

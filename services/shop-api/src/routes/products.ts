import { Type } from '@sinclair/typebox';
import type { NewEvent, Outbox } from '@sluice/outbox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import type { Kysely, Selectable } from 'kysely';
import { v7 as uuidv7 } from 'uuid';
import type { ProductTable, ShopDatabase } from '../database.js';
import { ProblemError, appendContext, assertVersion, ifMatchVersion } from '../http.js';
import { uniqueViolation, type Writer } from '../writes.js';
import { Cents, IdParams, Name, PageQuery, Sku, Stock, nextCursor } from './schemas.js';

function present(row: Selectable<ProductTable>) {
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
  deps: { db: Kysely<ShopDatabase>; outbox: Outbox; write: Writer },
): void {
  const { db, outbox, write } = deps;
  const api = app.withTypeProvider<TypeBoxTypeProvider>();

  const lockProduct = async (trx: Kysely<ShopDatabase>, id: string) => {
    const row = await trx
      .selectFrom('shop.products')
      .selectAll()
      .where('id', '=', id)
      .forUpdate()
      .executeTakeFirst();
    if (row === undefined) throw new ProblemError(404, 'not_found', `No product ${id}`);
    return row;
  };

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
    (request, reply) =>
      write(request, reply, async (trx) => {
        const id = uuidv7();
        const { sku, name, priceCents, stock } = request.body;
        let row;
        try {
          row = await trx
            .insertInto('shop.products')
            .values({
              id,
              sku,
              name,
              price_cents: priceCents,
              stock,
              delisted_at: null,
              version: 1,
            })
            .returningAll()
            .executeTakeFirstOrThrow();
        } catch (error) {
          if (uniqueViolation(error) === 'products_sku_key') {
            throw new ProblemError(409, 'sku_taken', `The SKU ${JSON.stringify(sku)} is taken`);
          }
          throw error;
        }
        await outbox.append(
          trx,
          { type: 'product', id, expectedVersion: 0 },
          [{ type: 'product.listed.v1', payload: { productId: id, sku, name, priceCents, stock } }],
          appendContext(request),
        );
        return {
          status: 201,
          body: present(row),
          etag: 1,
          location: `/products/${id}`,
          versions: [{ aggregateType: 'product', aggregateId: id, version: 1 }],
        };
      }),
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
    (request, reply) =>
      write(request, reply, async (trx) => {
        const expected = ifMatchVersion(request, true);
        const { id } = request.params;
        const current = await lockProduct(trx, id);
        assertVersion(expected, current.version);
        if (current.delisted_at !== null) {
          throw new ProblemError(409, 'product_delisted', `Product ${id} is delisted`);
        }
        const { priceCents, stock } = request.body;
        const events: NewEvent[] = [];
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
        const version = current.version + events.length;
        let row = current;
        if (events.length > 0) {
          row = await trx
            .updateTable('shop.products')
            .set({
              price_cents: priceCents ?? current.price_cents,
              stock: stock ?? current.stock,
              version,
              updated_at: new Date(),
            })
            .where('id', '=', id)
            .returningAll()
            .executeTakeFirstOrThrow();
          await outbox.append(
            trx,
            { type: 'product', id, expectedVersion: current.version },
            events,
            appendContext(request),
          );
        }
        return {
          status: 200,
          body: present(row),
          etag: version,
          versions: [{ aggregateType: 'product', aggregateId: id, version }],
        };
      }),
  );

  api.delete('/products/:id', { schema: { params: IdParams } }, (request, reply) =>
    write(request, reply, async (trx) => {
      const expected = ifMatchVersion(request, true);
      const { id } = request.params;
      const current = await lockProduct(trx, id);
      assertVersion(expected, current.version);
      if (current.delisted_at !== null) {
        throw new ProblemError(409, 'product_delisted', `Product ${id} is already delisted`);
      }
      const version = current.version + 1;
      await trx
        .updateTable('shop.products')
        .set({ delisted_at: new Date(), version, updated_at: new Date() })
        .where('id', '=', id)
        .execute();
      await outbox.append(
        trx,
        { type: 'product', id, expectedVersion: current.version },
        [{ type: 'product.delisted.v1', payload: { productId: id } }],
        appendContext(request),
      );
      return {
        status: 204,
        etag: version,
        versions: [{ aggregateType: 'product', aggregateId: id, version }],
      };
    }),
  );
}

import { Type } from '@sinclair/typebox';
import type { Outbox } from '@sluice/outbox';
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Kysely, Selectable } from 'kysely';
import { v7 as uuidv7 } from 'uuid';
import type { CustomerTable, ShopDatabase } from '../database.js';
import { ProblemError, appendContext, assertVersion, ifMatchVersion } from '../http.js';
import { uniqueViolation, type Writer } from '../writes.js';
import { Email, IdParams, Name, PageQuery, nextCursor } from './schemas.js';

function present(row: Selectable<CustomerTable>) {
  return {
    id: row.id,
    email: row.email,
    name: row.name,
    version: row.version,
    createdAt: row.created_at,
  };
}

const emailTaken = (email: string) =>
  new ProblemError(
    409,
    'email_taken',
    `The email ${JSON.stringify(email)} belongs to another customer`,
  );

export function customerRoutes(
  app: FastifyInstance,
  deps: { db: Kysely<ShopDatabase>; outbox: Outbox; write: Writer },
): void {
  const { db, outbox, write } = deps;
  const api = app.withTypeProvider<TypeBoxTypeProvider>();

  api.post(
    '/customers',
    {
      schema: { body: Type.Object({ email: Email, name: Name }, { additionalProperties: false }) },
    },
    (request, reply) =>
      write(request, reply, async (trx) => {
        const id = uuidv7();
        const { email, name } = request.body;
        let row;
        try {
          row = await trx
            .insertInto('shop.customers')
            .values({ id, email, name, erased_at: null, version: 1 })
            .returningAll()
            .executeTakeFirstOrThrow();
        } catch (error) {
          if (uniqueViolation(error) === 'customers_email_lower') throw emailTaken(email);
          throw error;
        }
        await outbox.append(
          trx,
          { type: 'customer', id, expectedVersion: 0 },
          [{ type: 'customer.registered.v1', payload: { customerId: id, email, name } }],
          appendContext(request),
        );
        return {
          status: 201,
          body: present(row),
          etag: 1,
          location: `/customers/${id}`,
          versions: [{ aggregateType: 'customer', aggregateId: id, version: 1 }],
        };
      }),
  );

  api.get('/customers/:id', { schema: { params: IdParams } }, async (request, reply) => {
    const row = await db
      .selectFrom('shop.customers')
      .selectAll()
      .where('id', '=', request.params.id)
      .where('erased_at', 'is', null)
      .executeTakeFirst();
    if (row === undefined)
      throw new ProblemError(404, 'not_found', `No customer ${request.params.id}`);
    return reply.header('etag', `"${row.version}"`).send(present(row));
  });

  api.get('/customers', { schema: { querystring: PageQuery } }, async (request) => {
    const { limit, cursor } = request.query;
    let query = db.selectFrom('shop.customers').selectAll().where('erased_at', 'is', null);
    if (cursor !== undefined) query = query.where('id', '>', cursor);
    const rows = await query.orderBy('id').limit(limit).execute();
    return { items: rows.map(present), nextCursor: nextCursor(rows, limit) };
  });

  api.patch(
    '/customers/:id',
    {
      schema: {
        params: IdParams,
        body: Type.Object(
          { name: Type.Optional(Name), email: Type.Optional(Email) },
          { additionalProperties: false, minProperties: 1 },
        ),
      },
    },
    (request, reply) =>
      write(request, reply, async (trx) => {
        const expected = ifMatchVersion(request, true);
        const { id } = request.params;
        const current = await trx
          .selectFrom('shop.customers')
          .selectAll()
          .where('id', '=', id)
          .where('erased_at', 'is', null)
          .forUpdate()
          .executeTakeFirst();
        if (current === undefined) throw new ProblemError(404, 'not_found', `No customer ${id}`);
        assertVersion(expected, current.version);
        const { name, email } = request.body;
        const events = [];
        if (name !== undefined && name !== current.name) {
          events.push({ type: 'customer.renamed.v1' as const, payload: { customerId: id, name } });
        }
        if (email !== undefined && email !== current.email) {
          events.push({
            type: 'customer.email_changed.v1' as const,
            payload: { customerId: id, email },
          });
        }
        const version = current.version + events.length;
        let row = current;
        if (events.length > 0) {
          try {
            row = await trx
              .updateTable('shop.customers')
              .set({
                name: name ?? current.name,
                email: email ?? current.email,
                version,
                updated_at: new Date(),
              })
              .where('id', '=', id)
              .returningAll()
              .executeTakeFirstOrThrow();
          } catch (error) {
            if (uniqueViolation(error) === 'customers_email_lower') throw emailTaken(email ?? '');
            throw error;
          }
          await outbox.append(
            trx,
            { type: 'customer', id, expectedVersion: current.version },
            events,
            appendContext(request),
          );
        }
        return {
          status: 200,
          body: present(row),
          etag: version,
          versions: [{ aggregateType: 'customer', aggregateId: id, version }],
        };
      }),
  );

  api.delete('/customers/:id', { schema: { params: IdParams } }, (request, reply) =>
    write(request, reply, async (trx) => {
      const expected = ifMatchVersion(request, true);
      const { id } = request.params;
      const current = await trx
        .selectFrom('shop.customers')
        .select(['version'])
        .where('id', '=', id)
        .where('erased_at', 'is', null)
        .forUpdate()
        .executeTakeFirst();
      if (current === undefined) throw new ProblemError(404, 'not_found', `No customer ${id}`);
      assertVersion(expected, current.version);
      const version = current.version + 1;
      // Erasure: personal data leaves the write model; the event itself carries none.
      await trx
        .updateTable('shop.customers')
        .set({ email: null, name: null, erased_at: new Date(), version, updated_at: new Date() })
        .where('id', '=', id)
        .execute();
      await outbox.append(
        trx,
        { type: 'customer', id, expectedVersion: current.version },
        [{ type: 'customer.erased.v1', payload: { customerId: id } }],
        appendContext(request),
      );
      return {
        status: 204,
        etag: version,
        versions: [{ aggregateType: 'customer', aggregateId: id, version }],
      };
    }),
  );
}

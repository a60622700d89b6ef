import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Kysely } from 'kysely';
import {
  eraseCustomer,
  registerCustomer,
  updateCustomer,
  type Customer,
} from '../commands/customers.js';
import type { ShopDatabase } from '../database.js';
import { mayActFor, requireAdmin } from '../http/authorization.js';
import { ifMatchVersion } from '../http/preconditions.js';
import { ProblemError } from '../http/problems.js';
import type { Writer } from '../http/writes.js';
import { Email, IdParams, Name, PageQuery, nextCursor } from './schemas.js';

function present(row: Customer) {
  return {
    id: row.id,
    email: row.email,
    name: row.name,
    version: row.version,
    createdAt: row.created_at,
  };
}

export function customerRoutes(
  app: FastifyInstance,
  deps: { db: Kysely<ShopDatabase>; write: Writer },
): void {
  const { db, write } = deps;
  const api = app.withTypeProvider<TypeBoxTypeProvider>();

  api.post(
    '/customers',
    {
      schema: { body: Type.Object({ email: Email, name: Name }, { additionalProperties: false }) },
    },
    (request, reply) => {
      requireAdmin(request);
      return write(request, reply, async (trx, context) => {
        const written = await registerCustomer(trx, request.body, context);
        const body = present(written.state);
        return { status: 201, written, body, location: `/customers/${body.id}` };
      });
    },
  );

  api.get('/customers/:id', { schema: { params: IdParams } }, async (request, reply) => {
    const row = await db
      .selectFrom('shop.customers')
      .selectAll()
      .where('id', '=', request.params.id)
      .where('erased_at', 'is', null)
      .executeTakeFirst();
    if (row === undefined || !mayActFor(request, row.id))
      throw new ProblemError(404, 'not_found', `No customer ${request.params.id}`);
    return reply.header('etag', `"${row.version}"`).send(present(row));
  });

  api.get('/customers', { schema: { querystring: PageQuery } }, async (request) => {
    requireAdmin(request);
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
    (request, reply) => {
      if (!mayActFor(request, request.params.id))
        throw new ProblemError(404, 'not_found', `No customer ${request.params.id}`);
      return write(request, reply, async (trx, context) => {
        const expectedVersion = ifMatchVersion(request, true);
        const input = { ...request.body, ...request.params, expectedVersion };
        const written = await updateCustomer(trx, input, context);
        return { status: 200, written, body: present(written.state) };
      });
    },
  );

  api.delete('/customers/:id', { schema: { params: IdParams } }, (request, reply) => {
    requireAdmin(request);
    return write(request, reply, async (trx, context) => {
      const expectedVersion = ifMatchVersion(request, true);
      const written = await eraseCustomer(trx, { ...request.params, expectedVersion }, context);
      return { status: 204, written, erasedCustomer: request.params.id };
    });
  });
}

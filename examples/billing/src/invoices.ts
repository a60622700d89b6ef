// The service's writes: its state and its events in one transaction, with plain `pg` or Kysely.
import { createOutbox } from '@sluice/outbox';
import type { Kysely } from 'kysely';
import type pg from 'pg';
import { randomUUID } from 'node:crypto';
import { billing } from './catalog.js';

export const outbox = createOutbox({ catalog: billing, schema: 'billing' });

export interface BillingDatabase {
  'billing.invoices': {
    id: string;
    customer: string;
    amount_cents: string;
    paid_cents: string;
    version: number;
  };
}

/** Issues an invoice through a plain `pg` client, in a transaction it begins. */
export async function issueInvoice(pool: pg.Pool, customer: string, amountCents: number) {
  const id = randomUUID();
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query(
      'INSERT INTO billing.invoices (id, customer, amount_cents, version) VALUES ($1, $2, $3, 1)',
      [id, customer, amountCents],
    );
    await outbox.append(client, { type: 'invoice', id, expectedVersion: 0 }, [
      { type: 'invoice.issued.v1', payload: { invoiceId: id, customer, amountCents } },
    ]);
    await client.query('COMMIT');
    return id;
  } catch (error) {
    await client.query('ROLLBACK');
    throw error;
  } finally {
    client.release();
  }
}

/** Records a payment through Kysely: the invoice's row and its event commit together. */
export async function payInvoice(db: Kysely<BillingDatabase>, id: string, amountCents: number) {
  await db.transaction().execute(async (trx) => {
    const { version } = await trx
      .updateTable('billing.invoices')
      .set((eb) => ({
        paid_cents: eb('paid_cents', '+', String(amountCents)),
        version: eb('version', '+', 1),
      }))
      .where('id', '=', id)
      .returning('version')
      .executeTakeFirstOrThrow();
    await outbox.append(
      trx,
      { type: 'invoice', id, expectedVersion: version - 1 },
      [{ type: 'invoice.paid.v1', payload: { invoiceId: id, amountCents } }],
      { actor: 'billing-demo', reason: 'payment received' },
    );
  });
}

// The billing team's read model, run by `sluice-projector ./dist/projections.js`: every export
// made by `defineProjection` is a projection; `migrations` run before the first one starts.
import { defineProjection } from '@sluice/projector';
import { sql } from 'kysely';
import type { Migration } from 'kysely/migration';
import { billing } from './catalog.js';

export const migrations: Record<string, Migration> = {
  billing_views_0001: {
    async up(db) {
      await sql`CREATE SCHEMA IF NOT EXISTS billing_views`.execute(db);
    },
  },
};

export const invoiceBalances = defineProjection({
  catalog: billing,
  name: 'invoice_balances',
  aggregateTypes: ['invoice'],
  tables: ['billing_views.invoice_balances'],
  async createTables(trx, table) {
    await sql`
      CREATE TABLE ${sql.table(table('billing_views.invoice_balances'))} (
        invoice_id uuid PRIMARY KEY,
        customer text NOT NULL,
        amount_cents bigint NOT NULL,
        paid_cents bigint NOT NULL,
        version integer NOT NULL
      )`.execute(trx);
  },
  async apply(events, { trx, table }) {
    const balances = sql.table(table('billing_views.invoice_balances'));
    for (const event of events) {
      switch (event.type) {
        case 'invoice.issued.v1': {
          const { invoiceId, customer, amountCents } = event.payload;
          await sql`
            INSERT INTO ${balances} (invoice_id, customer, amount_cents, paid_cents, version)
            VALUES (${invoiceId}, ${customer}, ${amountCents}, 0, ${event.aggregateVersion})`.execute(
            trx,
          );
          break;
        }
        case 'invoice.paid.v1':
          await sql`
            UPDATE ${balances}
               SET paid_cents = paid_cents + ${event.payload.amountCents},
                   version = ${event.aggregateVersion}
             WHERE invoice_id = ${event.payload.invoiceId}`.execute(trx);
          break;
      }
    }
  },
});

// Creates the service's own table and the outbox beside it (any migration tool can run this SQL).
import { outboxLookupIndexesSql, outboxSchemaSql } from '@sluice/outbox';
import pg from 'pg';

const client = new pg.Client({ connectionString: process.env.DATABASE_URL });
await client.connect();
try {
  await client.query(outboxSchemaSql('billing'));
  // Lets the operations console find events by correlation id and trace id.
  await client.query(outboxLookupIndexesSql('billing'));
  await client.query(`
    CREATE TABLE billing.invoices (
      id uuid PRIMARY KEY,
      customer text NOT NULL,
      amount_cents bigint NOT NULL,
      paid_cents bigint NOT NULL DEFAULT 0,
      version integer NOT NULL
    )`);
} finally {
  await client.end();
}

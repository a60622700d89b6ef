// Issues invoices and records payments (invoice n gets n payments), then tries a payment the
// catalog refuses: it changes nothing. Prints what it wrote as one JSON line.
import { isSluiceError } from '@sluice/errors';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { issueInvoice, payInvoice, type BillingDatabase } from './invoices.js';

const count = Number(process.argv[2] ?? '12');
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
const db = new Kysely<BillingDatabase>({ dialect: new PostgresDialect({ pool }) });

const invoices: string[] = [];
for (let n = 0; n < count; n += 1) {
  const id = await issueInvoice(pool, `customer ${n}`, 1000 * (n + 1));
  for (let payment = 0; payment < n; payment += 1) await payInvoice(db, id, 10 + payment);
  invoices.push(id);
}

let refused = '';
try {
  await payInvoice(db, invoices[0] ?? '', 0);
} catch (error) {
  refused = isSluiceError(error) ? error.code : String(error);
}
await db.destroy();
console.log(JSON.stringify({ invoices, refused }));

// Test support: a customer event whose personal field is sealed as shop-api seals it, yet which
// no projection can apply — appended to the customer's outbox as a buggy writer would.
import type pg from 'pg';
import { testPrivacy } from '../support/privacy.js';

/**
 * Appends `customer.renamed.v1` to `customerId` with `name` and a NUL character, sealed: the
 * audit log opens it and PostgreSQL refuses the NUL in jsonb, so it is parked and dead-lettered.
 * Once the customer is erased it opens as the marker and applies. Its time is in milliseconds,
 * as events carry it. Returns its version.
 */
export async function injectPoisonedRename(
  pool: pg.Pool,
  customerId: string,
  name: string,
): Promise<number> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const [event] = await testPrivacy.sealEvents(client, [
      { type: 'customer.renamed.v1', payload: { customerId, name: `${name}\u0000` } },
    ]);
    const { rows } = await client.query<{ version: number }>(
      'UPDATE shop.customers SET version = version + 1 WHERE id = $1 RETURNING version',
      [customerId],
    );
    const version = Number(rows[0]?.version);
    await client.query(
      `UPDATE shop.outbox_heads SET version = $2
        WHERE aggregate_type = 'customer' AND aggregate_id = $1`,
      [customerId, version],
    );
    await client.query(
      `INSERT INTO shop.outbox (id, aggregate_type, aggregate_id, aggregate_version, type, payload,
                               metadata, occurred_at)
       VALUES (gen_random_uuid(), 'customer', $1, $2, 'customer.renamed.v1', $3::jsonb, '{}',
               date_trunc('milliseconds', now()))`,
      [customerId, version, JSON.stringify(event?.payload)],
    );
    await client.query('COMMIT');
    return version;
  } catch (error) {
    await client.query('ROLLBACK');
    throw error;
  } finally {
    client.release();
  }
}

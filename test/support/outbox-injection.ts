// Test support: an event appended to a cart's outbox as a buggy writer would — the next
// version, no validation — for the relay to publish like any other.
import type pg from 'pg';

/** Appends an event of `type` with `payload` (and `metadata`) to `cartId`; its version. */
export async function injectCartEvent(
  pool: pg.Pool,
  cartId: string,
  event: { type: string; payload: unknown; metadata?: Record<string, string> },
): Promise<number> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const { rows } = await client.query<{ version: string }>(
      'UPDATE shop.carts SET version = version + 1 WHERE id = $1 RETURNING version::text',
      [cartId],
    );
    const version = Number(rows[0]?.version);
    await client.query(
      `UPDATE shop.outbox_heads SET version = $2 WHERE aggregate_type = 'cart' AND aggregate_id = $1`,
      [cartId, version],
    );
    await client.query(
      `INSERT INTO shop.outbox (id, aggregate_type, aggregate_id, aggregate_version, type, payload, metadata)
       VALUES (gen_random_uuid(), 'cart', $1, $2, $3, $4::jsonb, $5::jsonb)`,
      [
        cartId,
        version,
        event.type,
        JSON.stringify(event.payload),
        JSON.stringify(event.metadata ?? {}),
      ],
    );
    await client.query('COMMIT');
    return version;
  } finally {
    client.release();
  }
}

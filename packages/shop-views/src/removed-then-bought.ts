import { shopCatalog, type ShopEvent } from '@sluice/shop-catalog';
import { defineProjection } from '@sluice/projector';
import { sql, type Transaction } from 'kysely';

/**
 * Serialises this batch with any other (another partition, another process) touching the same
 * customers: each side writes its row and then looks for the other's, and two transactions
 * running side by side would each miss the other's uncommitted row. Locks are taken in one
 * order, so batches do not deadlock.
 */
async function lockCustomers(
  trx: Transaction<Record<string, never>>,
  report: string,
  owners: ReturnType<typeof sql.table>,
  events: readonly ShopEvent[],
): Promise<void> {
  const customers = new Set<string>();
  const carts = new Set<string>();
  const opened = new Map<string, string>();
  for (const event of events) {
    if (event.type === 'order.placed.v1') customers.add(event.payload.customerId);
    else if (event.type === 'cart.item_removed.v1') carts.add(event.payload.cartId);
    else if (event.type === 'cart.opened.v1') {
      const { cartId, customerId } = event.payload;
      opened.set(cartId, customerId);
    }
  }
  for (const cart of carts) {
    const customer = opened.get(cart);
    if (customer !== undefined) customers.add(customer);
  }
  if (carts.size > 0) {
    const { rows } = await sql<{ customer_id: string }>`
      SELECT customer_id FROM ${owners} WHERE cart_id = ANY(${[...carts]}::uuid[])`.execute(trx);
    for (const row of rows) customers.add(row.customer_id);
  }
  if (customers.size === 0) return;
  const keys = [...customers].sort().map((customer) => `${report}:${customer}`);
  await sql`SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest(${keys}::text[]) AS k`.execute(
    trx,
  );
}

/**
 * `views.removed_then_bought`: customers who took a product out of a cart and later bought it.
 * Carts and orders are different aggregates (and topics), so their events may be applied in
 * either order, and at once: removals and purchases are both kept, each side looks for the
 * other, and batches of the same customers take turns.
 */
export const removedThenBought = defineProjection<Record<string, never>, typeof shopCatalog>({
  catalog: shopCatalog,
  name: 'removed_then_bought',
  aggregateTypes: ['cart', 'order'],
  tables: ['views.cart_owners', 'views.removals', 'views.purchases', 'views.removed_then_bought'],
  async createTables(trx, table) {
    const removals = sql.table(table('views.removals'));
    await sql`CREATE TABLE ${sql.table(table('views.cart_owners'))} (cart_id uuid PRIMARY KEY, customer_id uuid NOT NULL)`.execute(
      trx,
    );
    await sql`CREATE TABLE ${removals} (customer_id uuid NOT NULL, product_id uuid NOT NULL, removed_at timestamptz NOT NULL)`.execute(
      trx,
    );
    await sql`CREATE INDEX ON ${removals} (customer_id, product_id)`.execute(trx);
    await sql`
      CREATE TABLE ${sql.table(table('views.purchases'))} (
        customer_id uuid NOT NULL, product_id uuid NOT NULL, bought_at timestamptz NOT NULL,
        PRIMARY KEY (customer_id, product_id, bought_at)
      )`.execute(trx);
    await sql`
      CREATE TABLE ${sql.table(table('views.removed_then_bought'))} (
        customer_id uuid NOT NULL, product_id uuid NOT NULL, removed_at timestamptz NOT NULL, bought_at timestamptz NOT NULL,
        PRIMARY KEY (customer_id, product_id, bought_at)
      )`.execute(trx);
  },
  async apply(events, { trx, table }) {
    const owners = sql.table(table('views.cart_owners'));
    const removals = sql.table(table('views.removals'));
    const purchases = sql.table(table('views.purchases'));
    const report = sql.table(table('views.removed_then_bought'));
    await lockCustomers(trx, table('views.removed_then_bought'), owners, events);
    for (const event of events) {
      const at = event.occurredAt;
      if (event.type === 'cart.opened.v1') {
        const { payload } = event;
        await sql`INSERT INTO ${owners} (cart_id, customer_id) VALUES (${payload.cartId}::uuid, ${payload.customerId}::uuid)
                  ON CONFLICT DO NOTHING`.execute(trx);
      } else if (event.type === 'cart.item_removed.v1') {
        const { payload } = event;
        await sql`
          WITH owner AS (SELECT customer_id FROM ${owners} WHERE cart_id = ${payload.cartId}::uuid),
          removal AS (
            INSERT INTO ${removals} (customer_id, product_id, removed_at)
            SELECT customer_id, ${payload.productId}::uuid, ${at}::timestamptz FROM owner
            RETURNING customer_id, product_id, removed_at)
          INSERT INTO ${report} AS t (customer_id, product_id, removed_at, bought_at)
          SELECT r.customer_id, r.product_id, r.removed_at, p.bought_at
            FROM removal r JOIN ${purchases} p ON p.customer_id = r.customer_id AND p.product_id = r.product_id
           WHERE p.bought_at > r.removed_at
          ON CONFLICT (customer_id, product_id, bought_at) DO UPDATE SET removed_at = GREATEST(t.removed_at, excluded.removed_at)`.execute(
          trx,
        );
      } else if (event.type === 'order.placed.v1') {
        const { payload } = event;
        const products = payload.lines.map((line) => line.productId);
        await sql`
          WITH purchase AS (
            INSERT INTO ${purchases} (customer_id, product_id, bought_at)
            SELECT ${payload.customerId}::uuid, product_id, ${at}::timestamptz FROM unnest(${products}::uuid[]) AS product_id
            ON CONFLICT DO NOTHING
            RETURNING customer_id, product_id, bought_at)
          INSERT INTO ${report} AS t (customer_id, product_id, removed_at, bought_at)
          SELECT p.customer_id, p.product_id, max(r.removed_at), p.bought_at
            FROM purchase p JOIN ${removals} r ON r.customer_id = p.customer_id AND r.product_id = p.product_id
           WHERE r.removed_at < p.bought_at
           GROUP BY p.customer_id, p.product_id, p.bought_at
          ON CONFLICT (customer_id, product_id, bought_at) DO UPDATE SET removed_at = GREATEST(t.removed_at, excluded.removed_at)`.execute(
          trx,
        );
      }
    }
  },
});

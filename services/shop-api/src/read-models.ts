// The read models `/views/*` serve, as the projector keeps them in `views`.
import { sql, type Kysely } from 'kysely';
import type { ShopDatabase } from './database.js';

export async function cartSummary(db: Kysely<ShopDatabase>, cartId: string) {
  const { rows } = await sql<{
    cart_id: string;
    customer_id: string | null;
    status: string;
    item_count: number;
    total_cents: string;
    version: string;
  }>`SELECT cart_id, customer_id, status, item_count, total_cents::text, version::text
       FROM views.cart_summaries WHERE cart_id = ${cartId}::uuid`.execute(db);
  const row = rows[0];
  return (
    row && {
      cartId: row.cart_id,
      customerId: row.customer_id,
      status: row.status,
      itemCount: row.item_count,
      totalCents: Number(row.total_cents),
      version: Number(row.version),
    }
  );
}

export async function productSales(db: Kysely<ShopDatabase>, productId: string) {
  const { rows } = await sql<{
    product_id: string;
    added_count: string;
    removed_count: string;
    units_sold: string;
    revenue_cents: string;
  }>`SELECT product_id, added_count::text, removed_count::text, units_sold::text, revenue_cents::text
       FROM views.product_sales WHERE product_id = ${productId}::uuid`.execute(db);
  const row = rows[0];
  return (
    row && {
      productId: row.product_id,
      addedCount: Number(row.added_count),
      removedCount: Number(row.removed_count),
      unitsSold: Number(row.units_sold),
      revenueCents: Number(row.revenue_cents),
    }
  );
}

/** Latest purchases first; all customers' unless `customerId` names one. */
export async function removedThenBought(
  db: Kysely<ShopDatabase>,
  query: { customerId?: string | undefined; limit: number },
) {
  const { customerId, limit } = query;
  const { rows } = await sql<{
    customer_id: string;
    product_id: string;
    removed_at: Date;
    bought_at: Date;
  }>`
    SELECT customer_id, product_id, removed_at, bought_at FROM views.removed_then_bought
     WHERE ${customerId === undefined ? sql`true` : sql`customer_id = ${customerId}::uuid`}
     ORDER BY bought_at DESC, customer_id, product_id LIMIT ${limit}`.execute(db);
  return rows.map((row) => ({
    customerId: row.customer_id,
    productId: row.product_id,
    removedAt: row.removed_at,
    boughtAt: row.bought_at,
  }));
}

/** One aggregate's events in version order: what, who, when, why. */
export async function auditTrail(
  db: Kysely<ShopDatabase>,
  aggregateType: string,
  aggregateId: string,
) {
  const { rows } = await sql<{
    event_id: string;
    version: string;
    type: string;
    occurred_at: Date;
    actor: string | null;
    reason: string | null;
    correlation_id: string | null;
    data: unknown;
  }>`SELECT event_id, version::text, type, occurred_at, actor, reason, correlation_id, data FROM views.audit_log
      WHERE aggregate_type = ${aggregateType} AND aggregate_id = ${aggregateId} ORDER BY audit_log.version`.execute(
    db,
  );
  return rows.map((row) => ({
    eventId: row.event_id,
    version: Number(row.version),
    what: row.type,
    who: row.actor,
    when: row.occurred_at,
    why: row.reason,
    correlationId: row.correlation_id,
    data: row.data,
  }));
}

import { arrayLiteral } from '@sluice/database/statements';
import { shopCatalog } from '@sluice/shop-catalog';
import { defineProjection } from '@sluice/projector';
import { sql } from 'kysely';

interface SalesDelta {
  added: number;
  removed: number;
  sold: number;
  revenueCents: number;
}

/**
 * `views.product_sales`: per product, units added to and removed from carts, units sold and
 * revenue (from placed orders).
 */
export const productSales = defineProjection<Record<string, never>, typeof shopCatalog>({
  catalog: shopCatalog,
  name: 'product_sales',
  aggregateTypes: ['cart', 'order'],
  tables: ['views.product_sales'],
  async createTables(trx, table) {
    await sql`
      CREATE TABLE ${sql.table(table('views.product_sales'))} (
        product_id uuid PRIMARY KEY,
        added_count bigint NOT NULL,
        removed_count bigint NOT NULL,
        units_sold bigint NOT NULL,
        revenue_cents bigint NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
      )`.execute(trx);
  },
  async apply(events, { trx, table }) {
    const products = new Map<string, SalesDelta>();
    const delta = (productId: string) => {
      const current = products.get(productId) ?? { added: 0, removed: 0, sold: 0, revenueCents: 0 };
      products.set(productId, current);
      return current;
    };
    for (const event of events) {
      if (event.type === 'cart.item_added.v1') {
        const { payload } = event;
        delta(payload.productId).added += payload.quantity;
      } else if (event.type === 'cart.item_removed.v1') {
        const { payload } = event;
        delta(payload.productId).removed += payload.quantity;
      } else if (event.type === 'order.placed.v1') {
        const { payload } = event;
        for (const line of payload.lines) {
          const sales = delta(line.productId);
          sales.sold += line.quantity;
          sales.revenueCents += line.quantity * line.unitPriceCents;
        }
      }
    }
    if (products.size === 0) return;
    // In key order: batches of other partitions update the same products, and rows locked in
    // one order everywhere cannot deadlock.
    const ids = [...products.keys()].sort();
    const values = ids.map((id) => products.get(id) as SalesDelta);
    await sql`
      INSERT INTO ${sql.table(table('views.product_sales'))} AS s
        (product_id, added_count, removed_count, units_sold, revenue_cents)
      SELECT * FROM unnest(${arrayLiteral(ids)}::uuid[], ${arrayLiteral(values.map((v) => v.added))}::bigint[],
                           ${arrayLiteral(values.map((v) => v.removed))}::bigint[],
                           ${arrayLiteral(values.map((v) => v.sold))}::bigint[],
                           ${arrayLiteral(values.map((v) => v.revenueCents))}::bigint[])
      ON CONFLICT (product_id) DO UPDATE SET
        added_count = s.added_count + excluded.added_count,
        removed_count = s.removed_count + excluded.removed_count,
        units_sold = s.units_sold + excluded.units_sold,
        revenue_cents = s.revenue_cents + excluded.revenue_cents,
        updated_at = now()`.execute(trx);
  },
});

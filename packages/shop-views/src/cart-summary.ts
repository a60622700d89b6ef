import { arrayLiteral } from '@sluice/database/statements';
import { shopCatalog } from '@sluice/shop-catalog';
import { defineProjection } from '@sluice/projector';
import { sql } from 'kysely';

interface CartDelta {
  customerId: string | null;
  status: string | null;
  items: number;
  totalCents: number;
  version: number;
}

/**
 * `views.cart_summaries`: per cart its owner, status, item count and total. A batch is folded
 * per cart in memory and written with one statement.
 */
export const cartSummary = defineProjection<Record<string, never>, typeof shopCatalog>({
  catalog: shopCatalog,
  name: 'cart_summary',
  aggregateTypes: ['cart'],
  tables: ['views.cart_summaries'],
  async createTables(trx, table) {
    await sql`
      CREATE TABLE ${sql.table(table('views.cart_summaries'))} (
        cart_id uuid PRIMARY KEY,
        customer_id uuid,
        status text NOT NULL,
        item_count integer NOT NULL,
        total_cents bigint NOT NULL,
        version bigint NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
      )`.execute(trx);
  },
  async apply(events, { trx, table }) {
    const carts = new Map<string, CartDelta>();
    for (const event of events) {
      const delta = carts.get(event.aggregateId) ?? {
        customerId: null,
        status: null,
        items: 0,
        totalCents: 0,
        version: 0,
      };
      delta.version = event.aggregateVersion;
      switch (event.type) {
        case 'cart.opened.v1': {
          const { payload } = event;
          delta.customerId = payload.customerId;
          delta.status = 'open';
          break;
        }
        case 'cart.item_added.v1': {
          const { payload } = event;
          delta.items += payload.quantity;
          delta.totalCents += payload.quantity * payload.unitPriceCents;
          break;
        }
        case 'cart.item_removed.v1': {
          const { payload } = event;
          delta.items -= payload.quantity;
          delta.totalCents -= payload.quantity * payload.unitPriceCents;
          break;
        }
        case 'cart.checked_out.v1':
          delta.status = 'checked_out';
          break;
        default:
          break;
      }
      carts.set(event.aggregateId, delta);
    }
    const ids = [...carts.keys()];
    const deltas = [...carts.values()];
    // A status is written only by the carts whose batch changed it (null: unchanged).
    await sql`
      WITH d (cart_id, customer_id, status, items, total_cents, version) AS (
        SELECT * FROM unnest(${arrayLiteral(ids)}::uuid[],
          ${arrayLiteral(deltas.map((d) => d.customerId))}::uuid[],
          ${arrayLiteral(deltas.map((d) => d.status))}::text[],
          ${arrayLiteral(deltas.map((d) => d.items))}::int[],
          ${arrayLiteral(deltas.map((d) => d.totalCents))}::bigint[],
          ${arrayLiteral(deltas.map((d) => d.version))}::bigint[]))
      INSERT INTO ${sql.table(table('views.cart_summaries'))} AS s
        (cart_id, customer_id, status, item_count, total_cents, version)
      SELECT cart_id, customer_id, COALESCE(status, 'open'), items, total_cents, version FROM d
      ON CONFLICT (cart_id) DO UPDATE SET
        customer_id = COALESCE(excluded.customer_id, s.customer_id),
        status = COALESCE((SELECT d.status FROM d WHERE d.cart_id = excluded.cart_id), s.status),
        item_count = s.item_count + excluded.item_count,
        total_cents = s.total_cents + excluded.total_cents,
        version = excluded.version,
        updated_at = now()`.execute(trx);
  },
});

import { Type } from '@sinclair/typebox';
import { limits } from '@sluice/shop-catalog';
import { cartLimits } from '../commands/cart-limits.js';

// Request fields that end up in events take their bounds from the catalog, so anything accepted
// here is also a valid event payload; the API may only be stricter.
export const Name = Type.String({ ...limits.name });
export const Email = Type.String({ format: 'email', ...limits.email });
export const Sku = Type.String({ ...limits.sku, pattern: '^[A-Za-z0-9._-]+$' });
export const Cents = Type.Integer({ ...limits.cents });
export const Stock = Type.Integer({ ...limits.stock });

export const Quantity = Type.Integer({
  minimum: limits.quantity.minimum,
  maximum: cartLimits.unitsPerAdd,
});
export const Uuid = Type.String({ format: 'uuid' });

export const IdParams = Type.Object({ id: Uuid }, { additionalProperties: false });

export const PageQuery = Type.Object(
  {
    limit: Type.Integer({ minimum: 1, maximum: 100, default: 20 }),
    cursor: Type.Optional(Uuid),
  },
  { additionalProperties: false },
);

/** The next page's cursor: the last id of a full page (ids are UUIDv7, so ordered by creation). */
export function nextCursor(items: readonly { id: string }[], limit: number): string | null {
  return items.length === limit ? (items[items.length - 1]?.id ?? null) : null;
}

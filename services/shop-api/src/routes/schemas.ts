import { Type } from '@sinclair/typebox';

/** Strings stored as text: trimmed length limits keep rows small and logs readable. */
export const Name = Type.String({ minLength: 1, maxLength: 200 });
export const Email = Type.String({ format: 'email', minLength: 3, maxLength: 254 });
export const Sku = Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9._-]+$' });
export const Cents = Type.Integer({ minimum: 0, maximum: 100_000_000_000 });
export const Stock = Type.Integer({ minimum: 0, maximum: 1_000_000_000 });
export const Quantity = Type.Integer({ minimum: 1, maximum: 1000 });
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

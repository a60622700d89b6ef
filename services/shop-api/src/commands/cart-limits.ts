import { limits } from '@sluice/shop-catalog';
import { CommandError } from './command-error.js';

/**
 * What a cart may hold: what one `order.placed.v1` can carry, so that every cart can be checked
 * out. Line units are a business rule, well within the catalog's quantity.
 */
export const cartLimits = {
  /** Units one add puts in a line. */
  unitsPerAdd: 1000,
  unitsPerLine: 10_000,
  lines: limits.orderLines.maxItems,
  totalCents: limits.cents.maximum,
} as const;

interface Priced {
  quantity: number;
  unit_price_cents: number;
}

/** Exact: a line totals up to 10^15 cents, and a few of those pass 2^53. */
export function cartTotalCents(items: readonly Priced[]): bigint {
  return items.reduce(
    (sum, item) => sum + BigInt(item.quantity) * BigInt(item.unit_price_cents),
    0n,
  );
}

/**
 * Refuses lines that one `order.placed.v1` could not carry, and returns their total. `subject`
 * starts the message: "Cart … has" or "With this add, cart … would have".
 *
 * @throws CommandError `cart_lines_limit`, `cart_total_limit`
 */
export function orderableTotal(items: readonly Priced[], subject: string): number {
  if (items.length > cartLimits.lines) {
    throw new CommandError(
      'cart_lines_limit',
      `${subject} ${items.length} lines; an order holds at most ${cartLimits.lines}`,
    );
  }
  const total = cartTotalCents(items);
  if (total > BigInt(cartLimits.totalCents)) {
    throw new CommandError(
      'cart_total_limit',
      `${subject} a total of ${total} cents; an order totals at most ${cartLimits.totalCents}`,
    );
  }
  return Number(total);
}

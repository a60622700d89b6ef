// The API's request limits lie within the event catalog's: the fullest cart the API lets anyone
// build makes valid events.
import { limits, shopCatalog } from '@sluice/shop-catalog';
const { payloadErrors } = shopCatalog;
import { describe, expect, it } from 'vitest';
import { cartLimits } from '../commands/cart-limits.js';
import { Quantity } from './schemas.js';

const id = (n: number) => `0190a6e2-8d7e-7c3a-9b1e-${n.toString(16).padStart(12, '0')}`;

describe('cart limits', () => {
  it('a full line at the highest price makes valid item events', () => {
    expect(Quantity.maximum).toBeLessThanOrEqual(cartLimits.unitsPerLine);
    const line = {
      cartId: id(0),
      productId: id(1),
      quantity: cartLimits.unitsPerLine,
      unitPriceCents: limits.cents.maximum,
    };
    expect(payloadErrors('cart.item_removed.v1', line)).toEqual([]);
    expect(payloadErrors('cart.item_added.v1', { ...line, quantity: Quantity.maximum })).toEqual(
      [],
    );
  });

  it('a cart at the most lines and the highest total makes a valid order', () => {
    const lines = Array.from({ length: cartLimits.lines }, (_, n) => ({
      productId: id(n + 1),
      quantity: cartLimits.unitsPerLine,
      unitPriceCents: 0,
    }));
    const order = {
      orderId: id(0),
      cartId: id(0),
      customerId: id(0),
      lines,
      totalCents: cartLimits.totalCents,
    };
    expect(payloadErrors('order.placed.v1', order)).toEqual([]);
    expect(
      payloadErrors('cart.checked_out.v1', {
        cartId: id(0),
        orderId: id(0),
        totalCents: cartLimits.totalCents,
      }),
    ).toEqual([]);
    // One more line or one more cent, and the catalog would refuse it.
    expect(payloadErrors('order.placed.v1', { ...order, lines: [...lines, lines[0]] })).not.toEqual(
      [],
    );
    expect(
      payloadErrors('order.placed.v1', { ...order, totalCents: cartLimits.totalCents + 1 }),
    ).not.toEqual([]);
  });
});

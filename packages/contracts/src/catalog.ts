import { Type, type Static, type TObject } from '@sinclair/typebox';
import type { DomainEvent } from './cloud-events.js';

/**
 * The bounds of the catalog's payload fields, in the units of their schemas (lengths count
 * Unicode code points, as JSON Schema does). A writer that keeps its input within them never has
 * an event refused for a range or a length; derive request limits from these, never restate them.
 *
 * @example
 * const PriceCents = Type.Integer(limits.cents);
 * if (lines.length > limits.orderLines.maxItems) refuse();
 */
export const limits = {
  /** Money in cents: prices, line prices, totals. */
  cents: { minimum: 0, maximum: 100_000_000_000 },
  /** Units of one product in a cart line or an order line. */
  quantity: { minimum: 1, maximum: 1_000_000 },
  stock: { minimum: 0, maximum: 1_000_000_000 },
  email: { maxLength: 254 },
  name: { minLength: 1, maxLength: 200 },
  sku: { minLength: 1, maxLength: 64 },
  /** Lines of one order (`order.placed.v1`). */
  orderLines: { minItems: 1, maxItems: 1000 },
} as const;

const Id = Type.String({ format: 'uuid' });
const Cents = Type.Integer({ ...limits.cents });
const Quantity = Type.Integer({ ...limits.quantity });
const Stock = Type.Integer({ ...limits.stock });
const Email = Type.String({ format: 'email', ...limits.email });
const Name = Type.String({ ...limits.name });

function event<const T extends string, const A extends string, S extends TObject>(
  type: T,
  aggregateType: A,
  description: string,
  payload: S,
) {
  const version = Number(/\.v(\d+)$/.exec(type)?.[1]);
  const schema = Type.Object(payload.properties, {
    $id: `https://sluice.dev/schemas/${type}.json`,
    title: type,
    description,
    additionalProperties: false,
  }) as unknown as S;
  return { type, aggregateType, version, schema } as const;
}

/**
 * Every official event: its type (with version suffix), the aggregate it belongs to, and the
 * JSON Schema of its payload. Types are domain facts, never table diffs. A breaking change
 * adds `.v2` next to `.v1` and an upcaster between them.
 */
export const catalog = {
  'customer.registered.v1': event(
    'customer.registered.v1',
    'customer',
    'A customer signed up.',
    Type.Object({ customerId: Id, email: Email, name: Name }),
  ),
  'customer.renamed.v1': event(
    'customer.renamed.v1',
    'customer',
    'A customer changed the name they go by.',
    Type.Object({ customerId: Id, name: Name }),
  ),
  'customer.email_changed.v1': event(
    'customer.email_changed.v1',
    'customer',
    "A customer's email address changed.",
    Type.Object({ customerId: Id, email: Email }),
  ),
  'customer.erased.v1': event(
    'customer.erased.v1',
    'customer',
    "A customer's personal data was erased on request. Carries no personal data.",
    Type.Object({ customerId: Id }),
  ),
  'product.listed.v1': event(
    'product.listed.v1',
    'product',
    'A product was put on sale.',
    Type.Object({
      productId: Id,
      sku: Type.String({ ...limits.sku }),
      name: Name,
      priceCents: Cents,
      stock: Stock,
    }),
  ),
  'product.repriced.v1': event(
    'product.repriced.v1',
    'product',
    "A product's price changed.",
    Type.Object({ productId: Id, priceCents: Cents, previousPriceCents: Cents }),
  ),
  'product.restocked.v1': event(
    'product.restocked.v1',
    'product',
    "A product's stock level was set by the merchant.",
    Type.Object({ productId: Id, stock: Stock, previousStock: Stock }),
  ),
  'product.delisted.v1': event(
    'product.delisted.v1',
    'product',
    'A product was taken off sale.',
    Type.Object({ productId: Id }),
  ),
  'cart.opened.v1': event(
    'cart.opened.v1',
    'cart',
    'A customer opened a cart.',
    Type.Object({ cartId: Id, customerId: Id }),
  ),
  'cart.item_added.v1': event(
    'cart.item_added.v1',
    'cart',
    'Units of a product were put in a cart, at the price of that moment.',
    Type.Object({ cartId: Id, productId: Id, quantity: Quantity, unitPriceCents: Cents }),
  ),
  'cart.item_removed.v1': event(
    'cart.item_removed.v1',
    'cart',
    'A product line was taken out of a cart; quantity is how many units it held.',
    Type.Object({ cartId: Id, productId: Id, quantity: Quantity, unitPriceCents: Cents }),
  ),
  'cart.checked_out.v1': event(
    'cart.checked_out.v1',
    'cart',
    'A cart was checked out and became an order.',
    Type.Object({ cartId: Id, orderId: Id, totalCents: Cents }),
  ),
  'order.placed.v1': event(
    'order.placed.v1',
    'order',
    'An order was placed; its stock is reserved.',
    Type.Object({
      orderId: Id,
      cartId: Id,
      customerId: Id,
      lines: Type.Array(
        Type.Object(
          { productId: Id, quantity: Quantity, unitPriceCents: Cents },
          { additionalProperties: false },
        ),
        { ...limits.orderLines },
      ),
      totalCents: Cents,
    }),
  ),
} as const;

/** An event type of the catalog, e.g. `cart.item_added.v1`. */
export type EventType = keyof typeof catalog;

/** The aggregate types events belong to; each has its own topic. */
export type AggregateType = (typeof catalog)[EventType]['aggregateType'];

/** The payload of event type `T`. */
export type EventPayload<T extends EventType> = Static<(typeof catalog)[T]['schema']>;

/** Whether `type` names an event of the catalog. */
export function isEventType(type: string): type is EventType {
  return Object.hasOwn(catalog, type);
}

/** The aggregate types of the catalog, each once. */
export const aggregateTypes: readonly AggregateType[] = [
  ...new Set(Object.values(catalog).map((entry) => entry.aggregateType)),
];

/**
 * An event of the catalog, discriminated by `type`: switching on it narrows the payload.
 *
 * @example
 * if (event.type === 'cart.item_added.v1') total += event.payload.quantity * event.payload.unitPriceCents;
 */
export type CatalogEvent = {
  [T in EventType]: DomainEvent<EventPayload<T>> & {
    type: T;
    aggregateType: (typeof catalog)[T]['aggregateType'];
  };
}[EventType];

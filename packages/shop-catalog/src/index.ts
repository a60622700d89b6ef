// The shop's event catalog: the example a team's own catalog follows (`defineCatalog` from
// `@sluice/contracts`), and the events shop-api writes and the shop's projections read.
import {
  defineCatalog,
  defineEvent,
  type EventOf,
  type NewEventOf,
  type PayloadOf,
} from '@sluice/contracts';
import { ENVELOPE_PATTERN, protectedFieldsOf, type ProtectedFields } from '@sluice/privacy';
import { Type } from '@sinclair/typebox';

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
const Name = Type.String({ ...limits.name });

/** The clear-text form of a personal field: what a writer validates before sealing it. */
interface ClearField {
  format?: string;
  minLength?: number;
  maxLength?: number;
  description: string;
}

/**
 * A personal field of the customer its event's `customerId` names, as the outbox publishes it:
 * sealed for that customer (`@sluice/privacy`: an envelope matching `ENVELOPE_PATTERN`), never
 * in clear text.
 */
const sealed = (field: ClearField) =>
  Type.Unsafe<string>({
    type: 'string',
    pattern: ENVELOPE_PATTERN,
    description: `${field.description}, sealed for the customer customerId names`,
    'x-sluice-protected': true,
    'x-sluice-subject': 'customerId',
  });

/** A personal field in clear text, as a command makes it before it is sealed. */
const clear = ({ description, ...constraints }: ClearField) =>
  Type.Unsafe<string>({ type: 'string', description, ...constraints });

const email: ClearField = {
  format: 'email',
  ...limits.email,
  description: `An email address (at most ${limits.email.maxLength} characters)`,
};
const name: ClearField = {
  ...limits.name,
  description: `A name (${limits.name.minLength} to ${limits.name.maxLength} characters)`,
};

/** The shop's events, their personal fields as `personal` describes them. */
function shopCatalogOf(personal: typeof sealed) {
  const PersonalEmail = personal(email);
  const PersonalName = personal(name);
  return defineCatalog(
    {
      'customer.registered.v1': defineEvent(
        'customer.registered.v1',
        'customer',
        'A customer signed up.',
        Type.Object({ customerId: Id, email: PersonalEmail, name: PersonalName }),
      ),
      'customer.renamed.v1': defineEvent(
        'customer.renamed.v1',
        'customer',
        'A customer changed the name they go by.',
        Type.Object({ customerId: Id, name: PersonalName }),
      ),
      'customer.email_changed.v1': defineEvent(
        'customer.email_changed.v1',
        'customer',
        "A customer's email address changed.",
        Type.Object({ customerId: Id, email: PersonalEmail }),
      ),
      'customer.erased.v1': defineEvent(
        'customer.erased.v1',
        'customer',
        "A customer's personal data was erased on request. Carries no personal data.",
        Type.Object({ customerId: Id }),
      ),
      'product.listed.v1': defineEvent(
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
      'product.repriced.v1': defineEvent(
        'product.repriced.v1',
        'product',
        "A product's price changed.",
        Type.Object({ productId: Id, priceCents: Cents, previousPriceCents: Cents }),
      ),
      'product.restocked.v1': defineEvent(
        'product.restocked.v1',
        'product',
        "A product's stock level was set by the merchant.",
        Type.Object({ productId: Id, stock: Stock, previousStock: Stock }),
      ),
      'product.delisted.v1': defineEvent(
        'product.delisted.v1',
        'product',
        'A product was taken off sale.',
        Type.Object({ productId: Id }),
      ),
      'cart.opened.v1': defineEvent(
        'cart.opened.v1',
        'cart',
        'A customer opened a cart.',
        Type.Object({ cartId: Id, customerId: Id }),
      ),
      'cart.item_added.v1': defineEvent(
        'cart.item_added.v1',
        'cart',
        'Units of a product were put in a cart, at the price of that moment.',
        Type.Object({ cartId: Id, productId: Id, quantity: Quantity, unitPriceCents: Cents }),
      ),
      'cart.item_removed.v1': defineEvent(
        'cart.item_removed.v1',
        'cart',
        'A product line was taken out of a cart; quantity is how many units it held.',
        Type.Object({ cartId: Id, productId: Id, quantity: Quantity, unitPriceCents: Cents }),
      ),
      'cart.checked_out.v1': defineEvent(
        'cart.checked_out.v1',
        'cart',
        'A cart was checked out and became an order.',
        Type.Object({ cartId: Id, orderId: Id, totalCents: Cents }),
      ),
      'order.placed.v1': defineEvent(
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
    },
    { schemaIdBase: 'https://sluice.dev/schemas/' },
  );
}

/**
 * Every official event: its type (with version suffix), the aggregate it belongs to, and the
 * JSON Schema of its payload as published, personal fields sealed. Types are domain facts, never
 * table diffs. A breaking change adds `.v2` next to `.v1` and an upcaster between them.
 */
export const shopCatalog = shopCatalogOf(sealed);

/**
 * The shop's events as a command makes them, before `@sluice/privacy` seals their personal
 * fields: the same schemas with the constraints of the clear values (email format, lengths).
 * Validates a writer's input; what is published validates against {@link shopCatalog}.
 */
export const shopCatalogInClear = shopCatalogOf(clear);

/** The personal fields of each event type and the field naming their subject. */
export const shopProtectedFields: ProtectedFields = protectedFieldsOf(shopCatalog.events);

/** The shop's event definitions. */
type ShopDefinitions = (typeof shopCatalog)['events'];

/** An event type of the shop, e.g. `cart.item_added.v1`. */
export type ShopEventType = Extract<keyof ShopDefinitions, string>;

/** The shop's aggregate types; each has its own topic. */
export type ShopAggregateType = ShopDefinitions[ShopEventType]['aggregateType'];

/** The payload of shop event type `T`. */
export type ShopPayload<T extends ShopEventType> = PayloadOf<ShopDefinitions, T>;

/**
 * A shop event, discriminated by `type`: switching on it narrows the payload.
 *
 * @example
 * if (event.type === 'cart.item_added.v1') total += event.payload.quantity * event.payload.unitPriceCents;
 */
export type ShopEvent = EventOf<typeof shopCatalog>;

/** A shop event to append. */
export type NewShopEvent = NewEventOf<typeof shopCatalog>;

// Test support: random but valid shop histories drawn from a seed — customers, products, carts
// (with their orders) and payload-only "blob" aggregates no projection reads — cut into
// transactions of random sizes that interleave several aggregates, and committed to the outbox
// the way the shop does (catalog events through `outbox.append`, blobs with raw SQL).
import {
  limits,
  shopCatalog,
  type NewShopEvent,
  type ShopAggregateType,
  type ShopPayload,
} from '@sluice/shop-catalog';
import { createOutbox, type AppendContext } from '@sluice/outbox';
import { SUBJECT_KEYS_DDL, type Queryable } from '@sluice/privacy';
import { CompiledQuery, sql, type Kysely, type Transaction } from 'kysely';
import { randomUUID } from 'node:crypto';
import { testPrivacy } from './privacy.js';
import { createRandom, type Random } from './seeded-random.js';

/** The aggregate type of the blobs: a topic of its own that no projection reads. */
export const BLOB_AGGREGATE_TYPE = 'blob';

interface CatalogStream {
  kind: 'catalog';
  type: ShopAggregateType;
  id: string;
  events: NewShopEvent[];
}

interface BlobStream {
  kind: 'blob';
  id: string;
  /** Each event's payload as JSON text. */
  payloads: string[];
}

export type Stream = CatalogStream | BlobStream;

/** Events `from` (the aggregate's version before them) up to `to` of one stream. */
export interface Append {
  stream: Stream;
  from: number;
  to: number;
}

export interface WorkloadTransaction {
  appends: Append[];
  context: AppendContext;
  events: number;
}

export interface Workload {
  streams: Stream[];
  transactions: WorkloadTransaction[];
  events: number;
}

export type WorkloadProfile = 'mixed' | 'large-aggregates';

/** How a profile draws its aggregates: ranges of counts, and shares of long and medium streams. */
interface ProfileShape {
  customers: [number, number];
  carts: [number, number];
  bigOrder: number;
  large: number;
  medium: number;
}

const profiles: Record<WorkloadProfile, ProfileShape> = {
  mixed: { customers: [1, 12], carts: [10, 90], bigOrder: 0.4, large: 0.12, medium: 0.35 },
  'large-aggregates': {
    customers: [1, 4],
    carts: [15, 45],
    bigOrder: 0.2,
    large: 0.75,
    medium: 0.1,
  },
};

// Units per cart line, as shop-api keeps them; the catalog's largest amount.
const MAX_LINE_QUANTITY = 10_000;
const MAX_CENTS = limits.cents.maximum;
const LETTERS = Array.from('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789');
const NAME_CHARACTERS = [
  ...LETTERS,
  ' ',
  ' ',
  '-',
  "'",
  '"',
  '\\',
  'é',
  'ß',
  'ø',
  '日',
  '本',
  '😀',
];
const BLOB_CHARACTERS = [...LETTERS, ' ', '"', '\\', '\n', '\t', '<', '&', 'é', '€', '😀'];
const LOCAL_PART = Array.from('abcdefghijklmnopqrstuvwxyz0123456789_+-');
const SKU_CHARACTERS = Array.from('ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-');

/** Events per aggregate: 1–12, 8–120 (crossing 9 → 10) or 90–500 (crossing 99 → 100). */
function streamLength(random: Random, profile: WorkloadProfile): number {
  const { large, medium } = profiles[profile];
  const r = random.next();
  if (r < large) return random.int(90, 500);
  if (r < large + medium) return random.int(8, 120);
  return random.int(1, 12);
}

const personName = (random: Random) => random.text(random.logInt(1, 200), NAME_CHARACTERS);
const email = (random: Random) =>
  `${random.text(random.logInt(1, 40), LOCAL_PART)}@${random.text(random.int(1, 20), LETTERS).toLowerCase()}.example`;
const price = (random: Random) => (random.chance(0.05) ? 0 : random.logInt(1, 200_000));

function customerStream(random: Random, id: string, length: number): CatalogStream {
  const events: NewShopEvent[] = [
    {
      type: 'customer.registered.v1',
      payload: { customerId: id, email: email(random), name: personName(random) },
    },
  ];
  const erased = length > 1 && random.chance(0.2);
  while (events.length < length - (erased ? 1 : 0)) {
    events.push(
      random.chance(0.5)
        ? { type: 'customer.renamed.v1', payload: { customerId: id, name: personName(random) } }
        : { type: 'customer.email_changed.v1', payload: { customerId: id, email: email(random) } },
    );
  }
  if (erased) events.push({ type: 'customer.erased.v1', payload: { customerId: id } });
  return { kind: 'catalog', type: 'customer', id, events };
}

function productStream(random: Random, id: string, length: number): CatalogStream {
  let priceCents = price(random);
  let stock = random.int(0, 100_000);
  const sku = random.text(random.logInt(1, 64), SKU_CHARACTERS);
  const events: NewShopEvent[] = [
    {
      type: 'product.listed.v1',
      payload: { productId: id, sku, name: personName(random), priceCents, stock },
    },
  ];
  const delisted = length > 1 && random.chance(0.15);
  while (events.length < length - (delisted ? 1 : 0)) {
    if (random.chance(0.5)) {
      const previousPriceCents = priceCents;
      priceCents = price(random);
      events.push({
        type: 'product.repriced.v1',
        payload: { productId: id, priceCents, previousPriceCents },
      });
    } else {
      const previousStock = stock;
      stock = random.int(0, 100_000);
      events.push({
        type: 'product.restocked.v1',
        payload: { productId: id, stock, previousStock },
      });
    }
  }
  if (delisted) events.push({ type: 'product.delisted.v1', payload: { productId: id } });
  return { kind: 'catalog', type: 'product', id, events };
}

interface Line {
  quantity: number;
  unitPriceCents: number;
}

/** A cart's next item event, as the shop makes them: a line keeps the price of its first unit. */
function itemEvent(
  random: Random,
  cartId: string,
  lines: Map<string, Line>,
  products: readonly string[],
): NewShopEvent {
  const present = [...lines.keys()];
  const productId =
    present.length > 0 && random.chance(0.5) ? random.pick(present) : random.pick(products);
  const line = lines.get(productId);
  const quantity = random.logInt(1, 100);
  if (line !== undefined && (random.chance(0.3) || line.quantity + quantity > MAX_LINE_QUANTITY)) {
    lines.delete(productId);
    return { type: 'cart.item_removed.v1', payload: { cartId, productId, ...line } };
  }
  const unitPriceCents = line?.unitPriceCents ?? price(random);
  lines.set(productId, { quantity: (line?.quantity ?? 0) + quantity, unitPriceCents });
  return { type: 'cart.item_added.v1', payload: { cartId, productId, quantity, unitPriceCents } };
}

/** The checkout events of a cart: `cart.checked_out.v1` and its order's `order.placed.v1`. */
function checkout(
  random: Random,
  cartId: string,
  customerId: string,
  lines: Map<string, Line>,
): { checkedOut: NewShopEvent; order: CatalogStream } | undefined {
  const orderLines = [...lines]
    .map(([productId, line]) => ({ productId, ...line }))
    .sort((a, b) => (a.productId < b.productId ? -1 : 1));
  const totalCents = orderLines.reduce((sum, l) => sum + l.quantity * l.unitPriceCents, 0);
  if (orderLines.length === 0 || totalCents > MAX_CENTS) return undefined;
  const orderId = random.uuid();
  const placed: ShopPayload<'order.placed.v1'> = {
    orderId,
    cartId,
    customerId,
    lines: orderLines,
    totalCents,
  };
  return {
    checkedOut: { type: 'cart.checked_out.v1', payload: { cartId, orderId, totalCents } },
    order: {
      kind: 'catalog',
      type: 'order',
      id: orderId,
      events: [{ type: 'order.placed.v1', payload: placed }],
    },
  };
}

/** A cart of `length` events, ending in a checkout (and an order) when it draws one. */
function cartStreams(
  random: Random,
  customerId: string,
  length: number,
  products: readonly string[],
): CatalogStream[] {
  const cartId = random.uuid();
  const events: NewShopEvent[] = [{ type: 'cart.opened.v1', payload: { cartId, customerId } }];
  const lines = new Map<string, Line>();
  const checksOut = length >= 3 && random.chance(0.45);
  while (events.length < length - (checksOut ? 1 : 0))
    events.push(itemEvent(random, cartId, lines, products));
  const cart: CatalogStream = { kind: 'catalog', type: 'cart', id: cartId, events };
  if (!checksOut) return [cart];
  const done = checkout(random, cartId, customerId, lines);
  events.push(done?.checkedOut ?? itemEvent(random, cartId, lines, products));
  return done === undefined ? [cart] : [cart, done.order];
}

/** A cart that puts `lines` distinct products in and checks out: the largest valid payload. */
function bigOrderStreams(
  random: Random,
  customerId: string,
  lines: number,
  products: readonly string[],
): CatalogStream[] {
  const cartId = random.uuid();
  const events: NewShopEvent[] = [{ type: 'cart.opened.v1', payload: { cartId, customerId } }];
  const cartLines = new Map<string, Line>();
  for (const productId of products.slice(0, lines)) {
    const line = { quantity: random.logInt(1, 20), unitPriceCents: price(random) };
    cartLines.set(productId, line);
    events.push({ type: 'cart.item_added.v1', payload: { cartId, productId, ...line } });
  }
  const done = checkout(random, cartId, customerId, cartLines);
  if (done === undefined) return [{ kind: 'catalog', type: 'cart', id: cartId, events }];
  events.push(done.checkedOut);
  return [{ kind: 'catalog', type: 'cart', id: cartId, events }, done.order];
}

/**
 * Blob payloads from a few bytes to 3 MB, at least one past the relay's claim-check threshold
 * (900 KiB) and one in its compressed range (64 KiB to 900 KiB). Sizes count characters; the
 * JSON text averages about 1.15 bytes per character (escapes, multi-byte characters).
 */
function blobStreams(random: Random): BlobStream[] {
  const sizes = [random.int(70_000, 750_000), random.int(1_000_000, 3_000_000)];
  for (let i = random.int(0, 4); i > 0; i -= 1) sizes.push(random.logInt(2, 3_000_000));
  // The characters come from a generator of their own, so their number shifts no later draw.
  const fill = createRandom(random.int(0, 2 ** 31));
  const streams: BlobStream[] = [];
  for (let part = 0; part < sizes.length;) {
    const id = random.uuid();
    const payloads: string[] = [];
    for (let n = random.int(1, 3); n > 0 && part < sizes.length; n -= 1, part += 1) {
      const data = fill.text(sizes[part] ?? 0, BLOB_CHARACTERS);
      payloads.push(JSON.stringify({ blobId: id, part, data }));
    }
    streams.push({ kind: 'blob', id, payloads });
  }
  return streams;
}

function streamEvents(stream: Stream): number {
  return stream.kind === 'blob' ? stream.payloads.length : stream.events.length;
}

/** Who acted and why, as shop-api would record it. */
function appendContext(random: Random): AppendContext {
  const context: AppendContext = {
    actor: random.pick(['shop-api', 'customer', 'ops:alice', 'ops:bob']),
    correlationId: random.uuid(),
  };
  if (random.chance(0.3)) context.reason = random.text(random.logInt(1, 80), NAME_CHARACTERS);
  return context;
}

/**
 * Cuts the streams into transactions of 1 to `maxEvents` events, each taking a run of events
 * from one random aggregate after another; an order goes in the transaction of its cart's
 * checkout, as the shop writes them.
 */
function cutTransactions(
  random: Random,
  streams: readonly Stream[],
  orderOf: Map<Stream, Stream>,
): WorkloadTransaction[] {
  const orders = new Set(orderOf.values());
  const open = streams.filter((s) => !orders.has(s)).map((stream) => ({ stream, next: 0 }));
  const maxEvents = random.pick([20, 300, 3000]);
  const transactions: WorkloadTransaction[] = [];
  while (open.length > 0) {
    const size = random.logInt(1, maxEvents);
    const appends: Append[] = [];
    let events = 0;
    while (events < size && open.length > 0) {
      const index = random.int(0, open.length - 1);
      const cursor = open[index] as (typeof open)[number];
      const length = streamEvents(cursor.stream);
      const take = Math.min(length - cursor.next, random.logInt(1, size - events));
      appends.push({ stream: cursor.stream, from: cursor.next, to: cursor.next + take });
      cursor.next += take;
      events += take;
      const order = orderOf.get(cursor.stream);
      if (order !== undefined && cursor.next === length) {
        appends.push({ stream: order, from: 0, to: 1 });
        events += 1;
      }
      if (cursor.next === length) open.splice(index, 1);
    }
    transactions.push({ appends, context: appendContext(random), events });
  }
  return transactions;
}

/** A shop history of at most about `maxEvents` events (blobs aside), drawn from `random`. */
export function generateWorkload(
  random: Random,
  options: { profile: WorkloadProfile; maxEvents: number },
): Workload {
  const profile = profiles[options.profile];
  const bigOrderLines = random.chance(profile.bigOrder) ? random.logInt(20, 1000) : 0;
  const products = Array.from({ length: Math.max(bigOrderLines, random.logInt(1, 300)) }, () =>
    random.uuid(),
  );
  const customers = Array.from({ length: random.int(...profile.customers) }, () => random.uuid());
  const streams: Stream[] = [
    ...customers.map((id) => customerStream(random, id, streamLength(random, options.profile))),
    ...products.map((id) => productStream(random, id, random.logInt(1, 12))),
  ];
  const orderOf = new Map<Stream, Stream>();
  const addCart = ([cart, order]: CatalogStream[]) => {
    if (cart === undefined) return;
    streams.push(cart);
    if (order !== undefined) {
      streams.push(order);
      orderOf.set(cart, order);
    }
  };
  if (bigOrderLines > 0)
    addCart(bigOrderStreams(random, random.pick(customers), bigOrderLines, products));
  const total = () => streams.reduce((sum, stream) => sum + streamEvents(stream), 0);
  const wanted = random.int(...profile.carts);
  for (let carts = 0; carts < wanted; carts += 1) {
    // The budget bounds the run time; one cart at least, whatever the other aggregates took.
    const room = options.maxEvents - total();
    if (room <= 0 && carts > 0) break;
    const length = Math.min(streamLength(random, options.profile), Math.max(1, room));
    addCart(cartStreams(random, random.pick(customers), length, products));
  }
  streams.push(...blobStreams(random));
  return { streams, transactions: cutTransactions(random, streams, orderOf), events: total() };
}

const outbox = createOutbox({ schema: 'shop', catalog: shopCatalog });

async function insertBlobs<DB>(trx: Transaction<DB>, append: Append, stream: BlobStream) {
  for (let version = append.from + 1; version <= append.to; version += 1) {
    await sql`
      INSERT INTO shop.outbox (id, aggregate_type, aggregate_id, aggregate_version, type, payload)
      VALUES (${randomUUID()}::uuid, ${BLOB_AGGREGATE_TYPE}, ${stream.id}, ${version},
              'blob.stored.v1', ${stream.payloads[version - 1]}::jsonb)`.execute(trx);
  }
  await sql`
    INSERT INTO shop.outbox_heads (aggregate_type, aggregate_id, version)
    VALUES (${BLOB_AGGREGATE_TYPE}, ${stream.id}, ${append.to})
    ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET version = excluded.version`.execute(
    trx,
  );
}

/** Databases whose `sluice.subject_keys` this module made sure of. */
const withSubjectKeys = new WeakSet<object>();

const queryable = <DB>(trx: Transaction<DB>): Queryable => ({
  query: (text, values = []) => trx.executeQuery(CompiledQuery.raw(text, values)),
});

/**
 * Commits one transaction of the workload: all its events, or none; personal fields sealed as
 * shop-api seals them (with the tests' master key), since the catalog publishes them sealed only.
 */
export async function commitTransaction<DB>(
  db: Kysely<DB>,
  transaction: WorkloadTransaction,
): Promise<void> {
  if (!withSubjectKeys.has(db)) {
    await sql.raw(SUBJECT_KEYS_DDL).execute(db);
    withSubjectKeys.add(db);
  }
  await db.transaction().execute(async (trx) => {
    for (const append of transaction.appends) {
      const { stream } = append;
      if (stream.kind === 'blob') {
        await insertBlobs(trx, append, stream);
      } else {
        const events = stream.events.slice(append.from, append.to);
        await outbox.append(
          trx,
          { type: stream.type, id: stream.id, expectedVersion: append.from },
          await testPrivacy.sealEvents(queryable(trx), events),
          transaction.context,
        );
      }
    }
  });
}

/** Aggregates and the highest version per aggregate type, and the blob payload sizes. */
export function describeWorkload(workload: Workload): Record<string, unknown> {
  const byType: Record<string, { aggregates: number; maxVersion: number }> = {};
  for (const stream of workload.streams) {
    const type = stream.kind === 'blob' ? BLOB_AGGREGATE_TYPE : stream.type;
    const entry = (byType[type] ??= { aggregates: 0, maxVersion: 0 });
    entry.aggregates += 1;
    entry.maxVersion = Math.max(entry.maxVersion, streamEvents(stream));
  }
  const blobBytes = workload.streams.flatMap((s) =>
    s.kind === 'blob' ? s.payloads.map((p) => Buffer.byteLength(p)) : [],
  );
  return { byType, blobBytes, transactions: workload.transactions.length };
}

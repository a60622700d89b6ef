// Random sequences of shop commands at and around the event catalog's limits (prices, stock,
// quantities, lines per cart, name and email lengths): never a 500, and a 4xx changes nothing.
// Carts may start with lines written straight into the table, as carts from before the limits.
import fc from 'fast-check';
import type { LightMyRequestResponse } from 'fastify';
import { sql } from 'kysely';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startShopApi, type ShopApiHarness } from './test-harness.js';

const MAX_CENTS = 100_000_000_000;
const MAX_STOCK = 1_000_000_000;
const FILLERS = 1001;
const seed = Number(process.env.FC_SEED ?? Math.floor(Math.random() * 2 ** 31));

let api: ShopApiHarness;
let customerId = '';
const fillers: string[] = [];

beforeAll(async () => {
  api = await startShopApi('shop_limits_property');
  const customer = await api.request('POST', '/customers', {
    body: { email: 'property@example.com', name: 'Property' },
  });
  customerId = customer.json<{ id: string }>().id;
  for (let start = 0; start < FILLERS; start += 50) {
    const batch = Array.from({ length: Math.min(50, FILLERS - start) }, (_, i) =>
      api.request('POST', '/products', {
        body: { sku: `FILL-${start + i}`, name: 'Filler', priceCents: 1, stock: MAX_STOCK },
      }),
    );
    fillers.push(...(await Promise.all(batch)).map((res) => res.json<{ id: string }>().id));
  }
});
afterAll(() => api.close());

type Action =
  | { kind: 'add'; product: number; quantity: number }
  | { kind: 'remove'; product: number }
  | { kind: 'checkout' }
  | { kind: 'reprice'; product: number; priceCents: number }
  | { kind: 'restock'; product: number; stock: number }
  | { kind: 'list'; sku: string; name: string; priceCents: number; stock: number }
  | { kind: 'register'; email: string; name: string };

const cents = fc.oneof(
  fc.constantFrom(0, 1, MAX_CENTS / 10_000, MAX_CENTS - 1, MAX_CENTS, MAX_CENTS + 1, -1),
  fc.integer({ min: 0, max: MAX_CENTS }),
);
const stock = fc.oneof(
  fc.constantFrom(0, 1, 10_000, MAX_STOCK, MAX_STOCK + 1, 2 ** 31),
  fc.integer({ min: 0, max: MAX_STOCK }),
);
const quantity = fc.oneof(
  fc.constantFrom(1, 999, 1000, 1001, 10_000, 0, -1),
  fc.integer({ min: 1, max: 1000 }),
);
/** Text of about `length` code points, some of them astral or combining. */
const text = (length: number) =>
  fc.string({
    unit: fc.constantFrom('a', 'é', '😀', 'e\u0301', ' '),
    minLength: length - 3,
    maxLength: length + 1,
  });
const sku = fc.oneof(
  fc.stringMatching(/^[A-Za-z0-9._-]{60,66}$/),
  fc.stringMatching(/^[A-Za-z0-9._-]{1,8}$/),
  fc.constantFrom('', 'has space', 'ümlaut'),
);
const email = fc.oneof(
  fc.emailAddress(),
  fc.integer({ min: 236, max: 244 }).map((local) => `${'x'.repeat(local)}@example.com`),
  fc.constantFrom('', 'no-at-sign', 'a@b'),
);
const product = fc.nat({ max: 7 });

const action: fc.Arbitrary<Action> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('add'), product, quantity }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('remove'), product }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('checkout') }) },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant('reprice'), product, priceCents: cents }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('restock'), product, stock }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('list'),
      sku,
      name: text(200),
      priceCents: cents,
      stock,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('register'), email, name: text(200) }),
  },
);

const scenario = fc.record({
  prefill: fc.constantFrom(0, 0, 0, 999, 1000, 1001),
  products: fc.array(fc.record({ priceCents: cents, stock }), { minLength: 1, maxLength: 5 }),
  actions: fc.array(action, { minLength: 1, maxLength: 12 }),
});

/** What any write could change: counts of append-only tables, this cart, every product. */
async function fingerprint(cartId: string): Promise<string> {
  const { rows } = await sql<{ state: string }>`
    SELECT concat_ws(' ',
      (SELECT count(*) FROM shop.outbox), (SELECT count(*) FROM shop.orders),
      (SELECT count(*) FROM shop.order_lines), (SELECT count(*) FROM shop.carts),
      (SELECT count(*) FROM shop.cart_items), (SELECT count(*) FROM shop.customers),
      (SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM shop.outbox_heads t),
      (SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM shop.products t),
      (SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM shop.carts t WHERE id = ${cartId}),
      (SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM shop.cart_items t
        WHERE cart_id = ${cartId})) AS state`.execute(api.db);
  return rows[0]?.state ?? '';
}

interface CartBody {
  /** A cart's lines. */
  items?: { quantity: number; unitPriceCents: number }[];
  /** An order's lines. */
  lines?: { quantity: number; unitPriceCents: number }[];
  totalCents: number;
}

/** The body's lines (cart items or order lines) within the catalog, and its total exact. */
function expectWithinCatalog(body: CartBody, what: string) {
  const lines = body.items ?? body.lines ?? [];
  expect(lines.length, what).toBeGreaterThan(0);
  const exact = lines.reduce(
    (sum, line) => sum + BigInt(line.quantity) * BigInt(line.unitPriceCents),
    0n,
  );
  expect(lines.length, what).toBeLessThanOrEqual(1000);
  expect(BigInt(body.totalCents), what).toBe(exact);
  expect(body.totalCents, what).toBeLessThanOrEqual(MAX_CENTS);
}

/** The request `act` stands for, on cart `cartId` and product `productId`. */
async function requestFor(
  act: Action,
  cartId: string,
  productId: string,
): Promise<LightMyRequestResponse> {
  switch (act.kind) {
    case 'add':
      return api.request('POST', `/carts/${cartId}/items`, {
        body: { productId, quantity: act.quantity },
      });
    case 'remove':
      return api.request('DELETE', `/carts/${cartId}/items/${productId}`);
    case 'checkout':
      return api.request('POST', `/carts/${cartId}/checkout`);
    case 'reprice':
    case 'restock': {
      const etag = (await api.request('GET', `/products/${productId}`)).headers.etag ?? '';
      return api.request('PATCH', `/products/${productId}`, {
        body: act.kind === 'reprice' ? { priceCents: act.priceCents } : { stock: act.stock },
        headers: { 'if-match': etag },
      });
    }
    case 'list': {
      const { sku, name, priceCents, stock } = act;
      return api.request('POST', '/products', { body: { sku, name, priceCents, stock } });
    }
    case 'register':
      return api.request('POST', '/customers', { body: { email: act.email, name: act.name } });
  }
}

it('random carts at the limits: never a 500, and every 4xx changes nothing', async () => {
  console.info(`cart limits property: seed ${seed} (FC_SEED=${seed} replays it)`);
  let runs = 0;
  const outcomes = new Map<string, number>();
  await fc.assert(
    fc.asyncProperty(scenario, async ({ prefill, products, actions }) => {
      runs += 1;
      let cartId = '00000000-0000-0000-0000-000000000000';
      let step = `open cart (run ${runs})`;
      /** Sends one request and checks the two promises. */
      const send = async (request: () => Promise<LightMyRequestResponse>) => {
        const before = await fingerprint(cartId);
        const res = await request();
        expect(res.statusCode, `${step}: ${res.body.slice(0, 500)}`).toBeLessThan(500);
        let outcome = String(res.statusCode);
        if (res.statusCode >= 400) {
          expect(res.headers['content-type'], step).toMatch(/^application\/problem\+json/);
          expect(await fingerprint(cartId), `${step} changed state`).toBe(before);
          outcome += ` ${res.json<{ code: string }>().code}`;
        }
        outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
        return res;
      };
      const openCart = async () => {
        const res = await send(() => api.request('POST', '/carts', { body: { customerId } }));
        expect(res.statusCode, step).toBe(201);
        cartId = res.json<{ id: string }>().id;
      };

      const ids: string[] = [];
      for (const spec of products) {
        step = `list ${JSON.stringify(spec)}`;
        const res = await send(() =>
          api.request('POST', '/products', {
            body: { sku: `P-${runs}-${ids.length}`, name: 'Product', ...spec },
          }),
        );
        ids.push(res.statusCode === 201 ? res.json<{ id: string }>().id : (fillers[0] ?? ''));
      }
      ids.push(fillers[0] ?? '', fillers[FILLERS - 1] ?? '');
      await openCart();
      await sql`INSERT INTO shop.cart_items (cart_id, product_id, quantity, unit_price_cents)
                SELECT ${cartId}::uuid, id, 1, price_cents FROM shop.products
                 WHERE id = ANY(${fillers.slice(0, prefill)}::uuid[])`.execute(api.db);

      for (const act of actions) {
        step = `${JSON.stringify(act).slice(0, 200)} (prefill ${prefill})`;
        const productId = 'product' in act ? (ids[act.product % ids.length] ?? '') : '';
        const res = await send(() => requestFor(act, cartId, productId));
        if (res.statusCode >= 300) continue;
        if (act.kind === 'add' || act.kind === 'checkout') {
          expectWithinCatalog(res.json<CartBody>(), step);
        }
        if (act.kind === 'checkout') await openCart();
      }
    }),
    { seed, numRuns: 40 },
  );
  console.info(
    `cart limits property: ${runs} runs, outcomes ${JSON.stringify(Object.fromEntries(outcomes))}`,
  );
});

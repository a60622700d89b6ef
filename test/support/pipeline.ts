// Test support: the whole pipeline as real processes on a database and topics of its own —
// shop-api and a relay started, projectors started on demand — with the cart-summary view
// compared against the same fold computed from the write model.
import { createTestDatabase, testServers, uniqueName, waitFor } from '@sluice/testkit';
import pg from 'pg';
import { shopAdminHeaders } from './access.js';
import { PRODUCT_SALES_COUNTS } from './pipeline-invariants.js';
import { startService, startShopApi, type ServiceProcess } from './services.js';

export interface Pipeline {
  /** shop-api's base URL. */
  base: string;
  /** A pool on the pipeline's database. */
  pool: pg.Pool;
  topicPrefix: string;
  groupPrefix: string;
  kafkaBrokers: readonly string[];
  /** The relays started so far, the first by {@link startPipeline}, running or not. */
  relays: readonly ServiceProcess[];
  /** Another relay of the same slot (a standby while one leads), plus `env`. */
  startRelay(env?: Record<string, string>): ServiceProcess;
  /**
   * A projector of the shop's projections on this pipeline (metrics on a free port, 6 s session
   * timeout), plus `env`.
   */
  startProjector(env?: Record<string, string>): ServiceProcess;
  /** POSTs JSON to shop-api as an admin and returns the JSON answer. */
  post(path: string, body?: unknown): Promise<Record<string, unknown>>;
  /** Waits until `views.cart_summaries` equals the fold of `shop.*`, row for row. */
  expectCartSummariesConverge(timeoutMs?: number): Promise<void>;
  /** Waits until `views.product_sales` equals the fold of the events in `shop.outbox`. */
  expectProductSalesConverge(timeoutMs?: number): Promise<void>;
  /** Offset gaps any projection recorded: a range it passed over must be none in a healthy run. */
  offsetGaps(): Promise<number>;
  /** Events the cart-summary projection's active generation applied (the sum of its aggregates' versions). */
  cartEventsApplied(): Promise<number>;
  /** Kills every process still running and drops the database. */
  close(): Promise<void>;
}

/** Settings of the pipeline's services, on top of those it gives them. */
export type PipelineEnv = Partial<
  Record<'shop-api' | 'relay' | 'projector', Record<string, string>>
>;

/** Where the pipeline runs, when not on the test run's servers. */
export interface PipelineOptions {
  /**
   * The PostgreSQL server, as a URL whose query (e.g. `?sslmode=verify-full&sslrootcert=…`) every
   * connection keeps: the services', the pool's. Default: the test run's.
   */
  databaseServerUrl?: string;
  /** The Kafka cluster. Default: the test run's. */
  kafkaBrokers?: readonly string[];
}

/** Starts shop-api and a relay on a fresh database named after `prefix`. */
export async function startPipeline(
  prefix: string,
  env: PipelineEnv = {},
  options: PipelineOptions = {},
): Promise<Pipeline> {
  const { databaseUrl } = testServers();
  const kafkaBrokers = options.kafkaBrokers ?? testServers().kafkaBrokers;
  const database = await createTestDatabase(options.databaseServerUrl ?? databaseUrl, prefix);
  const pool = new pg.Pool({ connectionString: database.url, max: 4 });
  pool.on('error', () => undefined);
  const topicPrefix = `${uniqueName(prefix)}.`;
  const groupPrefix = `${topicPrefix}g.`;
  const running = new Set<ServiceProcess>();
  const track = (service: ServiceProcess) => {
    running.add(service);
    void service.exited().then(() => running.delete(service));
    return service;
  };
  const start = (name: 'relay' | 'projector', settings: Record<string, string>) =>
    track(
      startService(name, {
        DATABASE_URL: database.url,
        KAFKA_BROKERS: kafkaBrokers.join(','),
        ...settings,
        ...env[name],
      }),
    );

  const shopApi = await startShopApi({ DATABASE_URL: database.url, ...env['shop-api'] });
  track(shopApi.service);
  const relaySettings = {
    RELAY_SLOT: uniqueName(`${prefix}_slot`),
    RELAY_PUBLICATION: uniqueName(`${prefix}_pub`),
    RELAY_TOPIC_PREFIX: topicPrefix,
    RELAY_METRICS_PORT: '0',
  };
  const relays = [start('relay', relaySettings)];

  async function rows(query: string): Promise<string[]> {
    return (await pool.query<{ row: string }>(query)).rows.map((r) => r.row);
  }

  async function converge(
    view: string,
    fold: string,
    message: string,
    timeoutMs: number,
  ): Promise<void> {
    await waitFor(
      async () => JSON.stringify(await rows(view)) === JSON.stringify(await rows(fold)),
      { timeoutMs, intervalMs: 250, message },
    );
  }

  return {
    base: shopApi.base,
    pool,
    topicPrefix,
    groupPrefix,
    kafkaBrokers,
    relays,
    startRelay(settings = {}) {
      const relay = start('relay', { ...relaySettings, ...settings });
      relays.push(relay);
      return relay;
    },
    startProjector: (settings = {}) =>
      start('projector', {
        PROJECTOR_TOPIC_PREFIX: topicPrefix,
        PROJECTOR_GROUP_PREFIX: groupPrefix,
        PROJECTOR_METRICS_PORT: '0',
        PROJECTOR_SESSION_TIMEOUT_MS: '6000',
        ...settings,
      }),
    async post(path, body) {
      const response = await fetch(`${shopApi.base}${path}`, {
        method: 'POST',
        headers: {
          ...shopAdminHeaders(),
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      return (await response.json()) as Record<string, unknown>;
    },
    expectCartSummariesConverge: (timeoutMs = 120_000) =>
      converge(
        `SELECT concat_ws('|', cart_id, status, item_count, total_cents, version) AS row
           FROM views.cart_summaries ORDER BY 1`,
        `SELECT concat_ws('|', c.id, c.status, COALESCE(sum(i.quantity), 0),
                COALESCE(sum(i.quantity * i.unit_price_cents), 0), c.version) AS row
           FROM shop.carts c LEFT JOIN shop.cart_items i ON i.cart_id = c.id GROUP BY c.id ORDER BY 1`,
        'cart summaries to equal the fold of shop.*',
        timeoutMs,
      ),
    expectProductSalesConverge: (timeoutMs = 120_000) =>
      converge(
        `SELECT concat_ws('|', product_id, added_count, removed_count, units_sold, revenue_cents) AS row
           FROM views.product_sales ORDER BY 1`,
        `${PRODUCT_SALES_COUNTS}
         SELECT concat_ws('|', product_id, sum(added), sum(removed), sum(sold), sum(revenue)) AS row
           FROM counts GROUP BY product_id ORDER BY 1`,
        'product sales to equal the fold of shop.outbox',
        timeoutMs,
      ),
    async offsetGaps() {
      return (await pool.query('SELECT 1 FROM sluice.projection_offset_gaps')).rowCount ?? 0;
    },
    async cartEventsApplied() {
      const { rows } = await pool.query<{ n: string }>(
        `SELECT COALESCE(sum(version), 0)::text AS n FROM sluice.projection_versions
          WHERE projection = COALESCE((SELECT instance FROM sluice.projection_generations
                                        WHERE projection = 'cart_summary' AND state = 'active'), 'cart_summary')`,
      );
      return Number(rows[0]?.n ?? 0);
    },
    async close() {
      const exits = [...running].map((service) => service.exited());
      for (const service of running) service.kill('SIGKILL');
      await Promise.all(exits);
      await pool.end();
      await database.drop();
    },
  };
}

/**
 * A shopping workload over `carts` carts: rounds of item adds, a removal every seventh round,
 * then a checkout of the first ten carts. Resolves when every write was answered.
 */
export async function shoppingWorkload(
  pipeline: Pipeline,
  options: { carts: number; rounds: number; tag: string },
): Promise<void> {
  const created = async (path: string, body: unknown) => {
    const answer = await pipeline.post(path, body);
    if (typeof answer.id !== 'string') throw new Error(`POST ${path}: ${JSON.stringify(answer)}`);
    return answer;
  };
  const customer = await created('/customers', {
    email: `${options.tag.toLowerCase()}@example.com`,
    name: 'P',
  });
  const products = await Promise.all(
    [1, 2, 3].map((i) =>
      created('/products', {
        sku: `${options.tag}-${i}`,
        name: 'P',
        priceCents: 100 * i,
        stock: 100_000,
      }),
    ),
  );
  const carts = await Promise.all(
    Array.from({ length: options.carts }, () => created('/carts', { customerId: customer.id })),
  );
  for (let round = 0; round < options.rounds; round += 1) {
    await Promise.all(
      carts.map(async (cart, i) => {
        const product = products[(round + i) % 3];
        await pipeline.post(`/carts/${String(cart.id)}/items`, {
          productId: product?.id,
          quantity: 1 + (i % 3),
        });
        if (round % 7 === 6) {
          await fetch(`${pipeline.base}/carts/${String(cart.id)}/items/${String(product?.id)}`, {
            method: 'DELETE',
            headers: shopAdminHeaders(),
          });
        }
      }),
    );
  }
  await Promise.all(
    carts.slice(0, 10).map((cart) => pipeline.post(`/carts/${String(cart.id)}/checkout`)),
  );
}

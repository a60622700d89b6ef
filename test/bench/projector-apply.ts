// Benchmark: how fast the projector applies a backlog of cart events into the cart-summary view,
// against the ceiling — the same projection's upserts run as plain batched SQL (same batches, no
// Kafka, checkpoints, version guards or decoding) — and the end-to-end latency from a write's
// commit in shop-api to its visibility in the view, through the relay, at a steady write rate.
//
//   cd /work/main && pnpm -s build && pnpm exec tsx test/bench/projector-apply.ts
//
// Prints one JSON object on stdout; progress goes to stderr. Environment (all optional):
//   DATABASE_URL                   server to use (fresh databases are created on it and dropped)
//   KAFKA_BROKERS                  default 127.0.0.1:19092
//   BENCH_EVENTS                   cart events in the backlog (default 500000)
//   BENCH_CARTS                    carts they belong to (default 5000)
//   BENCH_LATENCY_RATE             writes per second for the latency run (default 500)
//   BENCH_LATENCY_SECONDS          length of the latency run (default 20)
//   BENCH_SKIP_APPLY=1 / BENCH_SKIP_LATENCY=1   run one half only
//   BENCH_NODE_ARGS                extra node flags for the services it starts, e.g.
//                                  "--cpu-prof --cpu-prof-dir=/tmp/bench-prof"
//   BENCH_MAX_IN_FLIGHT            writes waiting for a response at most (default 64)
//   BENCH_LATENCY_PROJECTIONS      PROJECTOR_PROJECTIONS of the latency run (default: all four)
//   BENCH_TRACING                  the apply runs' tracing modes, a comma list of off, 0.1 (10 %
//                                  of traces, parentbased_traceidratio), 1 (always_on)
//                                  (default off,0.1)
//   BENCH_ROUNDS                   times the list is run, alternating (default 2: off, 0.1, off,
//                                  0.1)
//   BENCH_SERVICE_ROOT             a built checkout whose projector (and shop-views) the apply
//                                  runs measure (default this repository), to compare builds
//
// Apply: the backlog is produced straight to a fresh `outbox.event.cart` topic (6 partitions,
// keyed by cart), then services/projector runs the shop's module (startService's default) with
// PROJECTOR_PROJECTIONS=cart_summary. The rate counts from its first applied batch to the
// checkpoint reaching the end of every partition.
// The view must equal the fold computed here from the generated events. Ceiling: the same
// events, split by partition as Kafka did and cut into batches of the projector's mean batch
// size, each applied by `cartSummary.apply` in its own transaction.
// Tracing: the projector applies the same topic once per mode in BENCH_TRACING × BENCH_ROUNDS,
// each run into a fresh database with its own consumer groups; traced runs export OTLP/HTTP to a
// sink in this process that counts requests and bytes. Inherited OTEL_* variables are ignored
// (the latency run does not trace). `projector` and `ratio` are the first untraced run's;
// `tracing` compares the modes in this run.
//
// Latency: shop-api, relay and projector (all projections) run as processes; POST
// /carts/:id/items at a fixed rate over 200 carts; an observer polls the projection's applied
// versions every 5 ms. Latency = first poll seeing the write's version − the POST's response.
import { toKafkaRecord, topicFor } from '@sluice/contracts';
import type { ShopEvent } from '@sluice/shop-catalog';
import { createDatabase } from '@sluice/database';
import { errorMessage } from '@sluice/errors';
import { tableNamer } from '@sluice/projector';
import { cartSummary } from '@sluice/shop-views';
import {
  createTestDatabase,
  freePort,
  testKafka,
  uniqueName,
  waitFor,
  type TestDatabase,
} from '@sluice/testkit';
import { Partitioners, type Kafka } from 'kafkajs';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import {
  listeningAddress,
  metricValue,
  startService,
  startShopApi,
  type ServiceProcess,
} from '../support/services.js';
import { TEST_ACCESS_SECRET } from '../support/access.js';
import { TEST_MASTER_KEY } from '../support/privacy.js';
import {
  clearTracingEnvironment,
  envNumber,
  httpRequest,
  log,
  memoryMb,
  processTicks,
  serviceRoot,
  startOtlpSink,
  summarizeTracing,
  TRACING_GOAL,
  tracingEnvironment,
  tracingModes,
  type SinkCounts,
  type TracingMode,
} from './support.js';

const config = {
  serverUrl: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:54329/sluice',
  brokers: (process.env.KAFKA_BROKERS ?? '127.0.0.1:19092').split(','),
  events: Math.floor(envNumber('BENCH_EVENTS', 500_000)),
  carts: Math.floor(envNumber('BENCH_CARTS', 5000)),
  latencyRate: envNumber('BENCH_LATENCY_RATE', 500),
  latencySeconds: envNumber('BENCH_LATENCY_SECONDS', 20),
  skipApply: process.env.BENCH_SKIP_APPLY === '1',
  skipLatency: process.env.BENCH_SKIP_LATENCY === '1',
  nodeArgs: (process.env.BENCH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean),
  maxInFlight: Math.floor(envNumber('BENCH_MAX_IN_FLIGHT', 64)),
  tracing: tracingModes(),
};
const GOALS = { eventsPerSecond: 20_000, ratio: 0.5, p50Ms: 30, p99Ms: 150 } as const;
const PARTITIONS = 6;
const TICKS_PER_SECOND = 100;
const round = (value: number, digits = 2) => Math.round(value * 10 ** digits) / 10 ** digits;
const running = new Set<Pick<ServiceProcess, 'kill' | 'exited'>>();

function start(
  name: 'relay' | 'projector',
  env: Record<string, string>,
  nodeArgs: readonly string[] = [],
): ServiceProcess {
  const service = startService(name, { LOG_LEVEL: 'warn', ...env }, nodeArgs);
  running.add(service);
  void service.exited().then(() => running.delete(service));
  return service;
}

async function stop(service: Pick<ServiceProcess, 'kill' | 'exited'>): Promise<void> {
  service.kill('SIGTERM');
  await service.exited();
}

// ---------------------------------------------------------------- the backlog

interface CartFold {
  status: string;
  items: number;
  totalCents: number;
  version: number;
}

/** Carts opened, filled and partly emptied, versions interleaved across carts like live traffic. */
function generateBacklog(): { events: ShopEvent[]; fold: Map<string, CartFold> } {
  const perCart = Math.max(2, Math.floor(config.events / config.carts));
  const carts = Array.from({ length: config.carts }, () => randomUUID());
  const products = Array.from({ length: 50 }, () => randomUUID());
  const customer = randomUUID();
  const fold = new Map<string, CartFold>();
  const lastAdded = new Map<string, { productId: string; quantity: number; price: number }>();
  const events: ShopEvent[] = [];
  const now = Date.now();
  for (let version = 1; version <= perCart; version += 1) {
    for (const [index, cartId] of carts.entries()) {
      const base = {
        id: randomUUID(),
        aggregateType: 'cart' as const,
        aggregateId: cartId,
        aggregateVersion: version,
        occurredAt: new Date(now + version).toISOString(),
        metadata: { correlation_id: `bench-${index}` },
      };
      const state = fold.get(cartId) ?? { status: 'open', items: 0, totalCents: 0, version: 0 };
      state.version = version;
      const added = lastAdded.get(cartId);
      if (version === 1) {
        events.push({ ...base, type: 'cart.opened.v1', payload: { cartId, customerId: customer } });
      } else if (version % 5 === 0 && added !== undefined) {
        events.push({
          ...base,
          type: 'cart.item_removed.v1',
          payload: {
            cartId,
            productId: added.productId,
            quantity: added.quantity,
            unitPriceCents: added.price,
          },
        });
        state.items -= added.quantity;
        state.totalCents -= added.quantity * added.price;
        lastAdded.delete(cartId);
      } else {
        const item = {
          productId: products[(version + index) % products.length] ?? customer,
          quantity: 1 + (version % 3),
          price: 100 + ((version * 37 + index) % 900),
        };
        events.push({
          ...base,
          type: 'cart.item_added.v1',
          payload: {
            cartId,
            productId: item.productId,
            quantity: item.quantity,
            unitPriceCents: item.price,
          },
        });
        state.items += item.quantity;
        state.totalCents += item.quantity * item.price;
        lastAdded.set(cartId, item);
      }
      fold.set(cartId, state);
    }
  }
  return { events, fold };
}

/** Kafka's partition for each event: kafkajs's default (Java-compatible) partitioner on the key. */
function partitionsOf(events: readonly ShopEvent[], topic: string): ShopEvent[][] {
  const partitioner = Partitioners.DefaultPartitioner();
  const partitionMetadata = Array.from({ length: PARTITIONS }, (_, partitionId) => ({
    partitionErrorCode: 0,
    partitionId,
    leader: 1,
    replicas: [1],
    isr: [1],
  }));
  const parts: ShopEvent[][] = Array.from({ length: PARTITIONS }, () => []);
  for (const event of events) {
    const partition = partitioner({
      topic,
      partitionMetadata,
      message: { key: event.aggregateId, value: null },
    });
    parts[partition]?.push(event);
  }
  return parts;
}

async function produce(kafka: Kafka, topic: string, events: readonly ShopEvent[]): Promise<void> {
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  try {
    for (let from = 0; from < events.length; from += 2000) {
      await producer.send({
        topic,
        acks: -1,
        messages: events
          .slice(from, from + 2000)
          .map((event) => toKafkaRecord(event, { source: '/bench', commitLsn: '0/0' })),
      });
    }
  } finally {
    await producer.disconnect();
  }
}

async function viewMatchesFold(pool: pg.Pool, fold: Map<string, CartFold>): Promise<boolean> {
  const { rows } = await pool.query<{
    cart_id: string;
    status: string;
    item_count: number;
    total_cents: string;
    version: string;
  }>(
    'SELECT cart_id, status, item_count, total_cents::text, version::text FROM views.cart_summaries',
  );
  if (rows.length !== fold.size) return false;
  return rows.every((row) => {
    const expected = fold.get(row.cart_id);
    return (
      expected !== undefined &&
      row.status === expected.status &&
      row.item_count === expected.items &&
      Number(row.total_cents) === expected.totalCents &&
      Number(row.version) === expected.version
    );
  });
}

// ---------------------------------------------------------------- apply rate and ceiling

/** The projector of the measured build (see serviceRoot) running the shop's projections. */
function startProjector(env: Record<string, string>) {
  const root = serviceRoot();
  const main = join(root, 'services', 'projector', 'dist', 'main.js');
  const child = spawn(process.execPath, [...config.nodeArgs, main], {
    env: {
      ...process.env,
      LOG_LEVEL: 'warn',
      PROJECTOR_MODULES: join(root, 'packages', 'shop-views', 'dist', 'index.js'),
      SLUICE_ACCESS_SECRET: TEST_ACCESS_SECRET,
      SLUICE_MASTER_KEY: TEST_MASTER_KEY,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exit = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
  const projector = {
    pid: child.pid ?? 0,
    output: () => output,
    exited: () => exit,
    kill: (signal: NodeJS.Signals) => child.kill(signal),
  };
  running.add(projector);
  void exit.then(() => running.delete(projector));
  return projector;
}

/** Applies the backlog in `topic` with the projector, into `database`, tracing as `tracing` says. */
async function projectorRun(
  database: TestDatabase,
  backlog: { topic: string; events: number; fold: Map<string, CartFold> },
  tracing: Record<string, string>,
) {
  const pool = new pg.Pool({ connectionString: database.url, max: 2 });
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const prefix = backlog.topic.slice(0, backlog.topic.length - topicFor('cart').length);
  const spawnedAt = performance.now();
  const projector = startProjector({
    DATABASE_URL: database.url,
    KAFKA_BROKERS: config.brokers.join(','),
    PROJECTOR_TOPIC_PREFIX: prefix,
    PROJECTOR_GROUP_PREFIX: `${uniqueName('bench_apply')}.g.`,
    PROJECTOR_METRICS_PORT: String(port),
    PROJECTOR_PROJECTIONS: 'cart_summary',
    ...tracing,
  });
  const pid = projector.pid;
  let firstApplyAt: number | undefined;
  let ticksAtFirstApply = 0;
  let peakRss = 0;
  const applied = async () => {
    const { rows } = await pool
      .query<{ n: string }>(
        `SELECT COALESCE(sum(next_offset), 0)::text AS n FROM sluice.projection_checkpoints
          WHERE projection = 'cart_summary'`,
      )
      .catch(() => ({ rows: [{ n: '0' }] }));
    return Number(rows[0]?.n ?? 0);
  };
  const died = projector.exited().then((code) => {
    throw new Error(`the projector exited (${String(code)}):\n${projector.output().slice(-2000)}`);
  });
  died.catch(() => undefined);
  try {
    const drained = waitFor(
      async () => {
        peakRss = Math.max(peakRss, memoryMb(pid)?.rss ?? 0);
        const done = await applied();
        if (done > 0 && firstApplyAt === undefined) {
          firstApplyAt = performance.now();
          ticksAtFirstApply = processTicks(pid)?.ticks ?? 0;
        }
        return done >= backlog.events;
      },
      { timeoutMs: 600_000, intervalMs: 20, message: 'the projector to apply the backlog' },
    );
    await Promise.race([drained, died]);
    const doneAt = performance.now();
    const ticks = (processTicks(pid)?.ticks ?? 0) - ticksAtFirstApply;
    const applySeconds = (doneAt - (firstApplyAt ?? spawnedAt)) / 1000;
    const batches = await metricValue(
      base,
      'sluice_projector_batch_size_count{projection="cart_summary"}',
    );
    const peak = Math.max(peakRss, memoryMb(pid)?.hwm ?? 0);
    await stop(projector);
    return {
      eventsPerSecond: Math.round(backlog.events / applySeconds),
      applySeconds: round(applySeconds),
      startupSeconds: round(((firstApplyAt ?? doneAt) - spawnedAt) / 1000),
      batches,
      cores: round(ticks / TICKS_PER_SECOND / applySeconds),
      cpuMicrosPerEvent: round((ticks / TICKS_PER_SECOND / backlog.events) * 1e6, 3),
      peakRssMb: round(peak, 1),
      viewEqualsFold: await viewMatchesFold(pool, backlog.fold),
    };
  } finally {
    await pool.end();
  }
}

/** The projection's own statement per batch of `batchSize`, nothing else, into `database`. */
async function ceilingRun(
  database: TestDatabase,
  backlog: { topic: string; events: ShopEvent[]; fold: Map<string, CartFold> },
  batchSize: number,
) {
  const pool = new pg.Pool({ connectionString: database.url, max: 2 });
  try {
    // The projector applied generation 1; the same table is emptied and filled again.
    await pool.query('TRUNCATE views.cart_summaries_g1');
    const db = createDatabase<Record<string, never>>({ url: database.url, maxConnections: 1 });
    const started = performance.now();
    for (const partition of partitionsOf(backlog.events, backlog.topic)) {
      for (let from = 0; from < partition.length; from += batchSize) {
        const batch = partition.slice(from, from + batchSize);
        await db
          .transaction()
          .execute((trx) => cartSummary.apply(batch, { trx, table: tableNamer(1) }));
      }
    }
    const seconds = (performance.now() - started) / 1000;
    await db.destroy();
    return { seconds, viewEqualsFold: await viewMatchesFold(pool, backlog.fold) };
  } finally {
    await pool.end();
  }
}

type ProjectorRun = Awaited<ReturnType<typeof projectorRun>> & {
  mode: TracingMode;
  otlp: SinkCounts;
};

/** One projector run per tracing mode, each into a fresh database; the first one's is kept. */
async function projectorRuns(
  backlog: { topic: string; events: number; fold: Map<string, CartFold> },
  keep: (database: TestDatabase) => void,
): Promise<ProjectorRun[]> {
  const sink = await startOtlpSink();
  const runs: ProjectorRun[] = [];
  try {
    for (const [index, mode] of config.tracing.entries()) {
      const database = await createTestDatabase(config.serverUrl, 'bench_apply');
      if (index === 0) keep(database);
      log(`projector ${index + 1}/${config.tracing.length}, tracing ${mode}`);
      const before = sink.counts();
      try {
        const run = await projectorRun(database, backlog, tracingEnvironment(mode, sink.endpoint));
        const after = sink.counts();
        const otlp = {
          requests: after.requests - before.requests,
          bytes: after.bytes - before.bytes,
        };
        log(`projector (tracing ${mode}): ${run.eventsPerSecond} events/s`);
        runs.push({ ...run, mode, otlp });
      } finally {
        if (index > 0) await database.drop();
      }
    }
  } finally {
    await sink.close();
  }
  return runs;
}

function tracingReport(runs: readonly ProjectorRun[]) {
  return {
    order: runs.map((run) => run.mode),
    runs: runs.map(({ mode, eventsPerSecond, cpuMicrosPerEvent, peakRssMb, otlp, cores }) => ({
      mode,
      eventsPerSecond,
      cpuMicrosPerEvent,
      peakRssMb,
      otlp,
      cores,
    })),
    ...summarizeTracing(runs),
  };
}

async function applyRun(kafka: Kafka) {
  const topic = `${uniqueName('bench_apply')}.${topicFor('cart')}`;
  let kept: TestDatabase | undefined;
  const admin = kafka.admin();
  await admin.connect();
  try {
    log(`generating ${config.events} events over ${config.carts} carts`);
    const { events, fold } = generateBacklog();
    await admin.createTopics({
      topics: [{ topic, numPartitions: PARTITIONS }],
      waitForLeaders: true,
    });
    const producedAt = performance.now();
    await produce(kafka, topic, events);
    log(`produced ${events.length} records in ${round((performance.now() - producedAt) / 1000)} s`);
    const backlog = { topic, events: events.length, fold };
    const runs = await projectorRuns(backlog, (database) => (kept = database));
    const first = runs.find((run) => run.mode === 'off') ?? runs[0];
    if (first === undefined || kept === undefined) throw new Error('no projector run');

    const batchSize = Math.max(1, Math.round(events.length / first.batches));
    const ceiling = await ceilingRun(kept, { topic, events, fold }, batchSize);
    const ceilingRate = Math.round(events.length / ceiling.seconds);
    return {
      events: events.length,
      carts: config.carts,
      projector: {
        tracing: first.mode,
        eventsPerSecond: first.eventsPerSecond,
        applySeconds: first.applySeconds,
        startupSeconds: first.startupSeconds,
        batches: first.batches,
        meanBatchSize: batchSize,
        cores: first.cores,
        peakRssMb: first.peakRssMb,
        viewEqualsFold: runs.every((run) => run.viewEqualsFold),
      },
      ceiling: {
        what: 'cartSummary.apply per batch, one transaction each',
        eventsPerSecond: ceilingRate,
        seconds: round(ceiling.seconds),
        viewEqualsFold: ceiling.viewEqualsFold,
      },
      ratio: round(first.eventsPerSecond / ceilingRate, 3),
      tracing: tracingReport(runs),
      serviceRoot: serviceRoot(),
    };
  } finally {
    await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
    await admin.disconnect();
    await kept?.drop();
  }
}

// ---------------------------------------------------------------- end-to-end latency

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

async function latencyRun() {
  const database = await createTestDatabase(config.serverUrl, 'bench_latency');
  const pool = new pg.Pool({ connectionString: database.url, max: 2 });
  const agent = new http.Agent({ keepAlive: true, maxSockets: config.maxInFlight });
  const prefix = `${uniqueName('bench_latency')}.`;
  try {
    const env = { DATABASE_URL: database.url, KAFKA_BROKERS: config.brokers.join(',') };
    const api = await startShopApi({ ...env, LOG_LEVEL: 'warn' }, config.nodeArgs);
    running.add(api.service);
    const relay = start(
      'relay',
      {
        ...env,
        RELAY_SLOT: uniqueName('bench_slot'),
        RELAY_PUBLICATION: uniqueName('bench_pub'),
        RELAY_TOPIC_PREFIX: prefix,
        RELAY_METRICS_PORT: '0',
        LOG_LEVEL: 'info',
      },
      config.nodeArgs,
    );
    const projector = start(
      'projector',
      {
        ...env,
        PROJECTOR_TOPIC_PREFIX: prefix,
        PROJECTOR_GROUP_PREFIX: `${prefix}g.`,
        PROJECTOR_METRICS_PORT: '0',
        LOG_LEVEL: 'info',
        ...(process.env.BENCH_LATENCY_PROJECTIONS === undefined
          ? {}
          : { PROJECTOR_PROJECTIONS: process.env.BENCH_LATENCY_PROJECTIONS }),
      },
      config.nodeArgs,
    );
    const port = Number(new URL(api.base).port);
    const post = async (path: string, body: unknown) => {
      const response = await httpRequest(agent, port, 'POST', path, JSON.stringify(body));
      if (response.status >= 300)
        throw new Error(`POST ${path}: ${response.status} ${response.body.slice(0, 300)}`);
      return JSON.parse(response.body) as { id: string; version: number };
    };
    const customer = await post('/customers', { email: 'bench@example.com', name: 'Bench' });
    const product = await post('/products', {
      sku: 'BENCH-1',
      name: 'Bench',
      priceCents: 250,
      stock: 10_000_000,
    });
    const carts = await Promise.all(
      Array.from({ length: 200 }, () => post('/carts', { customerId: customer.id })),
    );
    await projector.waitForOutput('"msg":"consuming"', {
      timeoutMs: 60_000,
      message: 'the projector to join its groups',
    });
    const versionOf = async () => {
      const { rows } = await pool.query<{ aggregate_id: string; version: string }>(
        `SELECT aggregate_id, version::text FROM sluice.projection_versions
          WHERE projection = 'cart_summary' AND aggregate_type = 'cart'`,
      );
      return new Map(rows.map((row) => [row.aggregate_id, Number(row.version)]));
    };
    await waitFor(async () => (await versionOf()).size === carts.length, {
      timeoutMs: 60_000,
      message: 'the opened carts in the view',
    });

    // Writes at a fixed rate; each waits for its version in the view.
    const pending = new Map<string, { cartId: string; version: number; committedAt: number }>();
    const latencies: number[] = [];
    let failures = 0;
    const writing = new AbortController();
    const observer = (async () => {
      while (!writing.signal.aborted || pending.size > 0) {
        const ids = [...new Set([...pending.values()].map((write) => write.cartId))];
        if (ids.length > 0) {
          const { rows } = await pool.query<{ aggregate_id: string; version: string }>(
            `SELECT aggregate_id, version::text FROM sluice.projection_versions
              WHERE projection = 'cart_summary' AND aggregate_type = 'cart'
                AND aggregate_id = ANY($1::text[])`,
            [ids],
          );
          const seenAt = performance.now();
          const versions = new Map(rows.map((row) => [row.aggregate_id, Number(row.version)]));
          for (const [key, write] of pending) {
            if ((versions.get(write.cartId) ?? 0) >= write.version) {
              latencies.push(seenAt - write.committedAt);
              pending.delete(key);
            }
          }
        }
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    })();
    const total = Math.round(config.latencyRate * config.latencySeconds);
    const intervalMs = 1000 / config.latencyRate;
    const startedAt = performance.now();
    const writes = new Set<Promise<void>>();
    for (let i = 0; i < total; i += 1) {
      const due = startedAt + i * intervalMs;
      const wait = due - performance.now();
      if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait));
      // An open loop up to a bound: past it the API is the bottleneck, and achievedRate says so.
      while (writes.size >= config.maxInFlight) await Promise.race(writes);
      const cart = carts[i % carts.length];
      if (cart === undefined) continue;
      const write = post(`/carts/${cart.id}/items`, { productId: product.id, quantity: 1 })
        .then(
          (result) => {
            pending.set(`${cart.id}:${result.version}`, {
              cartId: cart.id,
              version: result.version,
              committedAt: performance.now(),
            });
          },
          (error: unknown) => {
            failures += 1;
            if (failures <= 3) log(`write failed: ${errorMessage(error)}`);
          },
        )
        .finally(() => writes.delete(write));
      writes.add(write);
    }
    await Promise.all(writes);
    const achievedRate = total / ((performance.now() - startedAt) / 1000);
    await waitFor(() => pending.size === 0, {
      timeoutMs: 60_000,
      message: 'every write to show in the view',
    });
    writing.abort();
    await observer;
    const sorted = [...latencies].sort((a, b) => a - b);
    // Where the time goes, from the services' own histograms (means over the run).
    const meanMs = async (service: ServiceProcess, metric: string, labels = '') => {
      const base = listeningAddress(service);
      if (base === undefined) return NaN;
      const sum = await metricValue(base, `${metric}_sum${labels}`);
      const count = await metricValue(base, `${metric}_count${labels}`);
      return round((sum / count) * 1000, 1);
    };
    const stages = {
      relayCommitToKafkaAckMeanMs: await meanMs(relay, 'sluice_relay_publish_latency_seconds'),
      projectorEventToViewCommitMeanMs: await meanMs(
        projector,
        'sluice_projector_apply_latency_seconds',
        '{projection="cart_summary"}',
      ),
    };
    return {
      writes: total,
      failedWrites: failures,
      targetRate: config.latencyRate,
      achievedRate: Math.round(achievedRate),
      pollIntervalMs: 5,
      p50Ms: round(percentile(sorted, 50), 1),
      p90Ms: round(percentile(sorted, 90), 1),
      p99Ms: round(percentile(sorted, 99), 1),
      maxMs: round(sorted.at(-1) ?? NaN, 1),
      stages,
    };
  } finally {
    for (const service of [...running]) await stop(service);
    agent.destroy();
    await pool.end();
    await database.drop();
  }
}

// ---------------------------------------------------------------- main

clearTracingEnvironment();
const kafka = testKafka(config.brokers, 'bench-projector');
try {
  const apply = config.skipApply ? undefined : await applyRun(kafka);
  if (apply !== undefined) log(`apply: ${JSON.stringify(apply)}`);
  const latency = config.skipLatency ? undefined : await latencyRun();
  const meets = {
    ...(apply === undefined
      ? {}
      : {
          eventsPerSecond: apply.projector.eventsPerSecond >= GOALS.eventsPerSecond,
          ratio: apply.ratio >= GOALS.ratio,
          viewsEqualFold: apply.projector.viewEqualsFold && apply.ceiling.viewEqualsFold,
          tracing10: apply.tracing.meetsGoal,
        }),
    ...(latency === undefined
      ? {}
      : { p50: latency.p50Ms <= GOALS.p50Ms, p99: latency.p99Ms <= GOALS.p99Ms }),
  };
  process.stdout.write(
    `${JSON.stringify(
      {
        benchmark: 'projector-apply',
        apply,
        latency,
        goals: { ...GOALS, tracing: TRACING_GOAL },
        meetsGoals: meets,
      },
      null,
      2,
    )}\n`,
  );
} catch (error) {
  log(`failed: ${errorMessage(error)}`);
  for (const service of running) service.kill('SIGKILL');
  process.exitCode = 1;
}

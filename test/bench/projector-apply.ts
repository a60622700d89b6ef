// Benchmark: how fast the projector applies a backlog of cart events into the cart-summary view,
// against the ceiling — the same projection's upserts run as plain batched SQL (same batches, no
// Kafka, checkpoints, version guards or decoding). End-to-end latency: pipeline-latency.ts.
//
//   cd /work/main && pnpm -s build && pnpm exec tsx test/bench/projector-apply.ts
//
// Prints one JSON object on stdout; progress goes to stderr. Environment (all optional):
//   DATABASE_URL                   server to use (fresh databases are created on it and dropped)
//   KAFKA_BROKERS                  default 127.0.0.1:19092
//   BENCH_EVENTS                   cart events in the backlog (default 500000)
//   BENCH_CARTS                    carts they belong to (default 5000)
//   BENCH_PRIVACY_EVENTS           customer events in the privacy backlog (default 100000)
//   BENCH_PRIVACY_CUSTOMERS        customers they belong to (default 20000)
//   BENCH_PRIVACY_ROUNDS           sealed/clear pairs of runs (default 2: on, off, off, on)
//   BENCH_SKIP_APPLY=1 / BENCH_SKIP_PRIVACY=1   leave that part out
//   BENCH_NODE_ARGS                extra node flags for the services it starts, e.g.
//                                  "--cpu-prof --cpu-prof-dir=/tmp/bench-prof"
//   BENCH_TRACING                  the apply runs' tracing modes, a comma list of off, 0.1 (10 %
//                                  of traces, parentbased_traceidratio), 1 (always_on)
//                                  (default off,0.1)
//   BENCH_ROUNDS                   times the list is run, alternating (default 2: off, 0.1, off,
//                                  0.1)
//   BENCH_MEMORY_LIMIT_MB          run the projector in a memory limit (a cgroup, as a container's
//                                  limit; Node sizes its heap from it), e.g. 1024 as the Helm
//                                  chart sets; needs root
//   BENCH_SERVICE_ROOT             a built checkout whose projector (and shop-views) the apply
//                                  runs measure (default this repository), to compare builds
//
// Apply: the backlog is produced straight to a fresh `outbox.event.cart` topic (6 partitions,
// keyed by cart), then services/projector runs the shop's module (startService's default) with
// PROJECTOR_PROJECTIONS=cart_summary. The rate counts the events after its first applied batch,
// from that batch's commit to the checkpoint reaching the end of every partition.
// The view must equal the fold computed here from the generated events. Ceiling: the same
// events, split by partition as Kafka did and cut into batches of the projector's mean batch
// size, each applied by `cartSummary.apply` in its own transaction.
// Tracing: the projector applies the same topic once per mode in BENCH_TRACING × BENCH_ROUNDS,
// each run into a fresh database with its own consumer groups; traced runs export OTLP/HTTP to a
// sink in this process that counts requests and bytes. Inherited OTEL_* variables are ignored.
// `projector` and `ratio` are the first untraced run's;
// `tracing` compares the modes in this run.
//
// Privacy (`privacy`): customers registered, renamed and given new emails, sealed as shop-api
// seals them (a key per customer, the keys loaded into each run's database) and the same events
// in clear, each produced to topics of their own; the projector applies them with
// PROJECTOR_PROJECTIONS=audit_log (the projection that reveals customer events): sealed (`on`:
// the shop's module, as deployed) and clear (`off`: the same projection over `shopCatalogInClear`,
// from a module written to a temporary directory, so nothing is revealed), each run into a fresh
// database, in pairs, each variant leading every other pair (on, off, off, on, ...: a drift falls
// on both alike). Per run: events/s and the projector's CPU per event; `onVsOff` compares the
// means, the spreads say how noisy the runs were. Every run's audit log must hold each event's
// payload in clear.
import { toKafkaRecord, topicFor } from '@sluice/contracts';
import { createDatabase } from '@sluice/database';
import { errorMessage } from '@sluice/errors';
import { tableNamer } from '@sluice/projector';
import { createPrivacy, parseMasterKey, SUBJECT_KEYS_DDL } from '@sluice/privacy';
import { shopProtectedFields, type ShopEvent } from '@sluice/shop-catalog';
import { auditLog, cartSummary } from '@sluice/shop-views';
import {
  createTestDatabase,
  createTopicsWith,
  freePort,
  testKafka,
  uniqueName,
  waitFor,
  type TestDatabase,
} from '@sluice/testkit';
import { Partitioners, type Kafka } from 'kafkajs';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import pg from 'pg';
import { metricValue, type ServiceProcess } from '../support/services.js';
import { TEST_ACCESS_SECRET } from '../support/access.js';
import { TEST_MASTER_KEY } from '../support/privacy.js';
import {
  clearTracingEnvironment,
  envArgs,
  envNumber,
  inMemoryLimit,
  log,
  machineTicks,
  memoryMb,
  processTicks,
  serviceRoot,
  startOtlpSink,
  summarizePrivacy,
  summarizeTracing,
  TRACING_GOAL,
  tracingEnvironment,
  tracingModes,
  type PrivacyRun,
  type SinkCounts,
  type TracingMode,
} from './support.js';

const config = {
  serverUrl: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:54329/sluice',
  brokers: (process.env.KAFKA_BROKERS ?? '127.0.0.1:19092').split(','),
  events: Math.floor(envNumber('BENCH_EVENTS', 500_000)),
  carts: Math.floor(envNumber('BENCH_CARTS', 5000)),
  skipApply: process.env.BENCH_SKIP_APPLY === '1',
  nodeArgs: envArgs('BENCH_NODE_ARGS'),
  memoryLimitMb: envNumber('BENCH_MEMORY_LIMIT_MB', 0),
  tracing: tracingModes(),
  privacyEvents: Math.floor(envNumber('BENCH_PRIVACY_EVENTS', 100_000)),
  privacyCustomers: Math.floor(envNumber('BENCH_PRIVACY_CUSTOMERS', 20_000)),
  privacyRounds: Math.floor(envNumber('BENCH_PRIVACY_ROUNDS', 2)),
  skipPrivacy: process.env.BENCH_SKIP_PRIVACY === '1',
};
const GOALS = { eventsPerSecond: 20_000, ratio: 0.6, peakRssMb: 250 } as const;
const PARTITIONS = 6;
const TICKS_PER_SECOND = 100;
const round = (value: number, digits = 2) => Math.round(value * 10 ** digits) / 10 ** digits;
const running = new Set<Pick<ServiceProcess, 'kill' | 'exited'>>();

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
  const [command, args] = inMemoryLimit(config.memoryLimitMb, process.execPath, [
    ...config.nodeArgs,
    main,
  ]);
  const child = spawn(command, args, {
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

/**
 * A backlog for the projector: the prefix of its topics, its size, the projection that applies
 * it, and whether that projection's view holds what it should once applied.
 */
interface Backlog {
  prefix: string;
  events: number;
  projection: string;
  viewIsRight(pool: pg.Pool): Promise<boolean>;
}

/** Applies `backlog` with the projector, into `database`, with `env` (e.g. tracing settings). */
async function projectorRun(database: TestDatabase, backlog: Backlog, env: Record<string, string>) {
  const pool = new pg.Pool({ connectionString: database.url, max: 2 });
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const spawnedAt = performance.now();
  const projector = startProjector({
    DATABASE_URL: database.url,
    KAFKA_BROKERS: config.brokers.join(','),
    PROJECTOR_TOPIC_PREFIX: backlog.prefix,
    PROJECTOR_GROUP_PREFIX: `${uniqueName('bench_apply')}.g.`,
    PROJECTOR_METRICS_PORT: String(port),
    PROJECTOR_PROJECTIONS: backlog.projection,
    ...env,
  });
  const pid = projector.pid;
  let firstApplyAt: number | undefined;
  let ticksAtFirstApply = 0;
  let appliedAtFirst = 0;
  let peakRss = 0;
  const applied = async () => {
    const { rows } = await pool
      .query<{ n: string }>(
        `SELECT COALESCE(sum(next_offset), 0)::text AS n FROM sluice.projection_checkpoints
          WHERE projection = $1`,
        [backlog.projection],
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
          appliedAtFirst = done;
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
      `sluice_projector_batch_size_count{projection="${backlog.projection}"}`,
    );
    const peak = Math.max(peakRss, memoryMb(pid)?.hwm ?? 0);
    await stop(projector);
    // The clock starts once the first batch shows as applied: the events after it are measured.
    const measured = backlog.events - appliedAtFirst;
    if (measured === 0)
      log('the backlog was applied in one batch: no rate measured (make it larger)');
    return {
      eventsPerSecond: measured === 0 ? NaN : Math.round(measured / applySeconds),
      applySeconds: round(applySeconds),
      measuredEvents: measured,
      startupSeconds: round(((firstApplyAt ?? doneAt) - spawnedAt) / 1000),
      batches,
      cores: round(ticks / TICKS_PER_SECOND / applySeconds),
      cpuMicrosPerEvent:
        measured === 0 ? NaN : round((ticks / TICKS_PER_SECOND / measured) * 1e6, 3),
      peakRssMb: round(peak, 1),
      viewEqualsFold: await backlog.viewIsRight(pool),
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
  backlog: Backlog,
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
    await createTopicsWith(admin, [{ topic, numPartitions: PARTITIONS }]);
    const producedAt = performance.now();
    await produce(kafka, topic, events);
    log(`produced ${events.length} records in ${round((performance.now() - producedAt) / 1000)} s`);
    const backlog = {
      prefix: topic.slice(0, topic.length - topicFor('cart').length),
      events: events.length,
      projection: 'cart_summary',
      viewIsRight: (pool: pg.Pool) => viewMatchesFold(pool, fold),
    };
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
      memoryLimitMb: config.memoryLimitMb || null,
    };
  } finally {
    await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
    await admin.disconnect();
    await kept?.drop();
  }
}

// ---------------------------------------------------------------- privacy: sealed against clear

/** Customers registered, renamed and given new emails, versions interleaved across customers. */
function generateCustomerBacklog(): ShopEvent[] {
  const perCustomer = Math.max(2, Math.floor(config.privacyEvents / config.privacyCustomers));
  const customers = Array.from({ length: config.privacyCustomers }, () => randomUUID());
  const events: ShopEvent[] = [];
  const now = Date.now();
  for (let version = 1; version <= perCustomer; version += 1) {
    for (const [index, customerId] of customers.entries()) {
      const base = {
        id: randomUUID(),
        aggregateType: 'customer' as const,
        aggregateId: customerId,
        aggregateVersion: version,
        occurredAt: new Date(now + version).toISOString(),
        metadata: { correlation_id: `bench-${index}`, actor: 'bench' },
      };
      const name = `Customer ${index} (${version})`;
      const email = `customer-${index}.${version}@bench.example.com`;
      if (version === 1) {
        events.push({
          ...base,
          type: 'customer.registered.v1',
          payload: { customerId, email, name },
        });
      } else if (version % 2 === 0) {
        events.push({ ...base, type: 'customer.renamed.v1', payload: { customerId, name } });
      } else {
        events.push({ ...base, type: 'customer.email_changed.v1', payload: { customerId, email } });
      }
    }
  }
  return events;
}

interface SubjectKeyRow {
  subject: string;
  wrapped_key: Buffer;
  master_key_id: string;
}

/** `events` sealed as shop-api seals them (a key per customer), and the keys' rows. */
async function sealBacklog(events: readonly ShopEvent[]) {
  const database = await createTestDatabase(config.serverUrl, 'bench_keys');
  const pool = new pg.Pool({ connectionString: database.url, max: 1 });
  try {
    await pool.query(SUBJECT_KEYS_DDL);
    const privacy = createPrivacy({
      keys: { current: parseMasterKey(TEST_MASTER_KEY) },
      fields: shopProtectedFields,
    });
    const sealed = await privacy.sealEvents(pool, events);
    const { rows } = await pool.query<SubjectKeyRow>(
      'SELECT subject, wrapped_key, master_key_id FROM sluice.subject_keys',
    );
    return { sealed, keys: rows };
  } finally {
    await pool.end();
    await database.drop();
  }
}

/** The subject keys in `database`, where shop-api would have made them. */
async function loadSubjectKeys(database: TestDatabase, keys: readonly SubjectKeyRow[]) {
  const pool = new pg.Pool({ connectionString: database.url, max: 1 });
  try {
    await pool.query(SUBJECT_KEYS_DDL);
    await pool.query(
      `INSERT INTO sluice.subject_keys (subject, wrapped_key, master_key_id)
       SELECT * FROM unnest($1::text[], $2::bytea[], $3::text[])`,
      [
        keys.map((k) => k.subject),
        keys.map((k) => k.wrapped_key),
        keys.map((k) => k.master_key_id),
      ],
    );
  } finally {
    await pool.end();
  }
}

/** The audit log holds one row per event with its payload in clear, as generated. */
async function auditLogHoldsClear(pool: pg.Pool, events: readonly ShopEvent[]): Promise<boolean> {
  const { rows } = await pool.query<{ event_id: string; data: unknown }>(
    'SELECT event_id, data FROM views.audit_log',
  );
  const expected = new Map(events.map((event) => [event.id, event.payload as unknown]));
  return (
    rows.length === expected.size &&
    rows.every((row) => isDeepStrictEqual(row.data, expected.get(row.event_id)))
  );
}

/**
 * A projection module for the `off` runs, in a temporary directory (the projector imports modules
 * by path): the audit log over the shop's events in clear (`shopCatalogInClear`), whose catalog
 * protects no field, so the projector reveals nothing and reads no key.
 */
function auditLogInClear(): { path: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'bench-privacy-'));
  const dist = (name: string) =>
    JSON.stringify(pathToFileURL(join(serviceRoot(), 'packages', name, 'dist', 'index.js')).href);
  const path = join(dir, 'audit-log-in-clear.mjs');
  writeFileSync(
    path,
    [
      `import { auditLog } from ${dist('shop-views')};`,
      `import { shopCatalogInClear } from ${dist('shop-catalog')};`,
      `export { migrations } from ${dist('shop-views')};`,
      'export const auditLogInClear = { ...auditLog, catalog: shopCatalogInClear };',
      '',
    ].join('\n'),
  );
  return { path, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** One projector run of a customer backlog, and how busy the whole machine was meanwhile. */
async function privacyRun(
  privacy: PrivacyRun['privacy'],
  backlog: Backlog,
  keys: readonly SubjectKeyRow[],
  env: Record<string, string>,
) {
  const database = await createTestDatabase(config.serverUrl, 'bench_privacy');
  try {
    await loadSubjectKeys(database, keys);
    const before = machineTicks();
    const startedAt = performance.now();
    const run = await projectorRun(database, backlog, env);
    const seconds = (performance.now() - startedAt) / 1000;
    const busy = machineTicks().busy - before.busy;
    log(`projector, privacy ${privacy}: ${run.eventsPerSecond} events/s`);
    return { privacy, ...run, machineBusyCores: round(busy / TICKS_PER_SECOND / seconds) };
  } finally {
    await database.drop();
  }
}

/**
 * The same customer backlog sealed (`on`) and in clear (`off`), each in topics of its own,
 * applied by the audit log — the projection that reveals customer events — in pairs: `on` as
 * deployed, `off` by the same projection over the clear catalog.
 */
async function privacyApplyRun(kafka: Kafka) {
  const clear = generateCustomerBacklog();
  log(`sealing ${clear.length} customer events of ${config.privacyCustomers} customers`);
  const { sealed, keys } = await sealBacklog(clear);
  const base = uniqueName('bench_privacy');
  const backlogs = {
    on: { prefix: `${base}.sealed.`, events: sealed },
    off: { prefix: `${base}.clear.`, events: clear },
  };
  const customerTopic = topicFor('customer');
  const topics = Object.values(backlogs).flatMap(({ prefix }) =>
    auditLog.aggregateTypes.map((type) => `${prefix}${topicFor(type)}`),
  );
  const inClear = auditLogInClear();
  const env = { on: {}, off: { PROJECTOR_MODULES: inClear.path } };
  const admin = kafka.admin();
  await admin.connect();
  try {
    await createTopicsWith(
      admin,
      topics.map((topic) => ({
        topic,
        numPartitions: topic.endsWith(customerTopic) ? PARTITIONS : 1,
      })),
    );
    for (const { prefix, events } of Object.values(backlogs))
      await produce(kafka, `${prefix}${customerTopic}`, events);
    const runs: Awaited<ReturnType<typeof privacyRun>>[] = [];
    for (let round = 1; round <= config.privacyRounds; round += 1) {
      const order = ['on', 'off'] as const;
      for (const privacy of round % 2 === 1 ? order : [...order].reverse()) {
        const backlog = {
          prefix: backlogs[privacy].prefix,
          events: clear.length,
          projection: auditLog.name,
          viewIsRight: (pool: pg.Pool) => auditLogHoldsClear(pool, clear),
        };
        runs.push(await privacyRun(privacy, backlog, keys, env[privacy]));
      }
    }
    return {
      events: clear.length,
      customers: config.privacyCustomers,
      projection: auditLog.name,
      runs: runs.map((run) => ({
        privacy: run.privacy,
        eventsPerSecond: run.eventsPerSecond,
        cpuMicrosPerEvent: run.cpuMicrosPerEvent,
        measuredEvents: run.measuredEvents,
        cores: run.cores,
        machineBusyCores: run.machineBusyCores,
        batches: run.batches,
        peakRssMb: run.peakRssMb,
      })),
      ...summarizePrivacy(
        runs.map((run) => ({
          privacy: run.privacy,
          perSecond: run.eventsPerSecond,
          cpuMicrosPerOp: run.cpuMicrosPerEvent,
        })),
      ),
      viewsEqualClear: runs.every((run) => run.viewEqualsFold),
    };
  } finally {
    await admin.deleteTopics({ topics }).catch(() => undefined);
    await admin.disconnect();
    inClear.remove();
  }
}

// ---------------------------------------------------------------- main

clearTracingEnvironment();
const kafka = testKafka(config.brokers, 'bench-projector');
try {
  const apply = config.skipApply ? undefined : await applyRun(kafka);
  if (apply !== undefined) log(`apply: ${JSON.stringify(apply)}`);
  const privacy = config.skipPrivacy ? undefined : await privacyApplyRun(kafka);
  if (privacy !== undefined) log(`privacy: ${JSON.stringify(privacy.onVsOff)}`);
  const meets = {
    ...(apply === undefined
      ? {}
      : {
          eventsPerSecond: apply.projector.eventsPerSecond >= GOALS.eventsPerSecond,
          ratio: apply.ratio >= GOALS.ratio,
          peakRssMb: apply.projector.peakRssMb <= GOALS.peakRssMb,
          viewsEqualFold: apply.projector.viewEqualsFold && apply.ceiling.viewEqualsFold,
          tracing10: apply.tracing.meetsGoal,
        }),
    ...(privacy === undefined ? {} : { privacyViewsEqualClear: privacy.viewsEqualClear }),
  };
  process.stdout.write(
    `${JSON.stringify(
      {
        benchmark: 'projector-apply',
        apply,
        privacy,
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

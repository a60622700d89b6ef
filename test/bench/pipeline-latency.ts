// Benchmark: the whole pipeline at steady write rates — end-to-end latency (a write's commit in
// shop-api to its visibility in the view) and where the CPU goes, per process, per write; and the
// pipeline's CPU while idle.
//
//   cd /work/main && pnpm -s build && pnpm exec tsx test/bench/pipeline-latency.ts
//
// Prints one JSON object on stdout; progress goes to stderr. Environment (all optional):
//   DATABASE_URL            server to use (a fresh database is created on it and dropped)
//   KAFKA_BROKERS           default 127.0.0.1:19092
//   BENCH_RATES             writes per second, a comma list (default 100,250,500)
//   BENCH_STEP_SECONDS      length of each rate's run (default 20)
//   BENCH_IDLE_SECONDS      length of the idle measurement (default 40)
//   BENCH_IDLE_SETTLE_SECONDS  wait before it, after the services started (default 60: V8
//                           collects a service's start-up garbage some 50 s after it starts)
//   BENCH_KAFKA_ALONE_SECONDS  Kafka measured before the services start (default 20)
//   BENCH_MAX_IN_FLIGHT     writes waiting for a response at most (default 64)
//   BENCH_NODE_ARGS         extra node flags for the services, e.g.
//                           "--cpu-prof --cpu-prof-dir=/tmp/bench-prof"
//
// shop-api, relay and projector (all four shop projections) run as processes on one database,
// started as in production (shop-api verifies each request's token, seals personal fields). The
// services inherit this environment: PROJECTOR_CONSUMER_GROUPS=per-projection compares the
// projections reading through a consumer group each (the output says which).
// Writes: POST /carts/:id/items at a fixed rate over 200 carts (an open loop up to
// BENCH_MAX_IN_FLIGHT). An observer polls the cart-summary projection's applied versions every
// 5 ms; latency = first poll seeing the write's version − the POST's response.
// CPU: utime + stime from /proc, sampled every 500 ms, per process: the three services, the
// PostgreSQL backends serving each (by application_name; the relay's walsender on its own), the
// rest of PostgreSQL, Kafka, and this process (load generator + observer, with its backend).
// "Pipeline" is everything but this process and its backend. Idle also reports Kafka's own
// CPU with none of this run's clients (measured first), and the pipeline above that baseline.
import { errorMessage } from '@sluice/errors';
import { createTestDatabase, uniqueName, waitFor, type TestDatabase } from '@sluice/testkit';
import { readdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import {
  listeningAddress,
  metricValue,
  startService,
  startShopApi,
  type ServiceProcess,
} from '../support/services.js';
import {
  envArgs,
  envNumber,
  httpRequest,
  log,
  machineTicks,
  processTicks,
  round,
  sleep,
} from './support.js';

const config = {
  serverUrl: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:54329/sluice',
  brokers: process.env.KAFKA_BROKERS ?? '127.0.0.1:19092',
  rates: (process.env.BENCH_RATES ?? '100,250,500').split(',').filter(Boolean).map(Number),
  stepSeconds: envNumber('BENCH_STEP_SECONDS', 20),
  idleSeconds: envNumber('BENCH_IDLE_SECONDS', 40),
  idleSettleSeconds: envNumber('BENCH_IDLE_SETTLE_SECONDS', 60),
  kafkaAloneSeconds: envNumber('BENCH_KAFKA_ALONE_SECONDS', 20),
  maxInFlight: Math.floor(envNumber('BENCH_MAX_IN_FLIGHT', 64)),
  nodeArgs: envArgs('BENCH_NODE_ARGS'),
};
const GOALS = { pipelineCpuMsPerWriteAt500: 2.0, idleCorePercent: 3, p50Ms: 30, p99Ms: 150 };
const TICK_MS = 10;
const OBSERVER = 'bench-observer';
const running = new Set<ServiceProcess>();

// ---------------------------------------------------------------- CPU by process

/** Who a PostgreSQL backend works for, from its application_name and type. */
function backendLabel(row: { application_name: string; backend_type: string }): string {
  if (row.backend_type === 'walsender') return 'postgres: relay walsender';
  const name = row.application_name;
  if (name === OBSERVER) return 'postgres: bench observer';
  if (name.startsWith('sluice-relay')) return 'postgres: relay';
  if (name === 'sluice-projector') return 'postgres: projector';
  if (name === 'shop-api') return 'postgres: shop-api';
  return 'postgres: other';
}

function pidsWhere(test: (comm: string, cmdline: string, ppid: number) => boolean): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (test(comm, cmdline, ppid)) pids.push(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return pids;
}

const kafkaPids = () =>
  pidsWhere((comm, cmdline) => comm === 'java' && /kafka\.Kafka/.test(cmdline));

/** Kafka's CPU (percent of a core) over `seconds`, before any client of this run connects. */
async function kafkaAlone(seconds: number): Promise<number> {
  const ticks = () => kafkaPids().reduce((sum, pid) => sum + (processTicks(pid)?.ticks ?? 0), 0);
  const before = ticks();
  await sleep(seconds * 1000);
  return ((ticks() - before) * TICK_MS) / (seconds * 10);
}

/** Accumulates CPU milliseconds by label from periodic /proc samples. */
function cpuSampler(pool: pg.Pool, fixed: Record<string, number>, postmaster: number) {
  const kafka = kafkaPids();
  const last = new Map<number, number>();
  const totals = new Map<string, number>();
  let selfLast = process.cpuUsage();
  const add = (label: string, pid: number) => {
    const ticks = processTicks(pid)?.ticks;
    if (ticks === undefined) return;
    const delta = ticks - (last.get(pid) ?? ticks);
    last.set(pid, ticks);
    totals.set(label, (totals.get(label) ?? 0) + delta * TICK_MS);
  };
  async function sample() {
    for (const [label, pid] of Object.entries(fixed)) add(label, pid);
    for (const pid of kafka) add('kafka', pid);
    const { rows } = await pool.query<{
      pid: number;
      application_name: string;
      backend_type: string;
    }>('SELECT pid, application_name, backend_type FROM pg_stat_activity');
    const labels = new Map(rows.map((row) => [row.pid, backendLabel(row)]));
    const postgres = pidsWhere((comm, _, ppid) => ppid === postmaster && comm === 'postgres');
    for (const pid of [postmaster, ...postgres]) add(labels.get(pid) ?? 'postgres: other', pid);
    const self = process.cpuUsage();
    const selfMs = (self.user - selfLast.user + self.system - selfLast.system) / 1000;
    selfLast = self;
    totals.set('bench (load + observer)', (totals.get('bench (load + observer)') ?? 0) + selfMs);
  }
  return {
    sample,
    /** CPU ms by label since the last call (sampling first). */
    async take(): Promise<Map<string, number>> {
      await sample();
      const taken = new Map(totals);
      totals.clear();
      return taken;
    },
  };
}

type Sampler = ReturnType<typeof cpuSampler>;

const BENCH_LABELS = new Set(['bench (load + observer)', 'postgres: bench observer']);

function pipelineMs(cpu: Map<string, number>): number {
  return [...cpu].reduce((sum, [label, ms]) => sum + (BENCH_LABELS.has(label) ? 0 : ms), 0);
}

/** Samples every 500 ms while `work` runs; the CPU it took by label. */
async function measure<T>(sampler: Sampler, work: () => Promise<T>) {
  await sampler.take();
  const machineBefore = machineTicks();
  const state = { done: false };
  const ticking = (async () => {
    while (!state.done) {
      await sleep(500);
      await sampler.sample();
    }
  })();
  const startedAt = performance.now();
  let result: T;
  try {
    result = await work();
  } finally {
    state.done = true;
    await ticking;
  }
  const cpu = await sampler.take();
  const machine = machineTicks();
  return {
    result,
    cpu,
    seconds: (performance.now() - startedAt) / 1000,
    machineBusyTicks: machine.busy - machineBefore.busy,
    stealTicks: machine.steal - machineBefore.steal,
  };
}

// ---------------------------------------------------------------- the pipeline

interface Shop {
  post(path: string, body: unknown): Promise<{ id: string; version: number }>;
  carts: { id: string }[];
  productId: string;
}

interface Started {
  port: number;
  pids: Record<string, number>;
  /** Sums and counts of the relay's and the projector's stage histograms, for means per step. */
  stages(): Promise<Record<string, [sum: number, count: number]>>;
}

async function startPipeline(database: TestDatabase): Promise<Started> {
  const env = {
    DATABASE_URL: database.url,
    KAFKA_BROKERS: config.brokers,
    LOG_LEVEL: 'warn',
  };
  const prefix = `${uniqueName('bench_pipe')}.`;
  const api = await startShopApi(env, config.nodeArgs);
  const relay = startService(
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
  const projector = startService(
    'projector',
    {
      ...env,
      PROJECTOR_TOPIC_PREFIX: prefix,
      PROJECTOR_GROUP_PREFIX: `${prefix}g.`,
      PROJECTOR_METRICS_PORT: '0',
      LOG_LEVEL: 'info',
    },
    config.nodeArgs,
  );
  for (const service of [api.service, relay, projector]) running.add(service);
  await projector.waitForOutput('"msg":"consuming"', {
    timeoutMs: 60_000,
    message: 'the projector to join its groups',
  });
  const pid = (service: ServiceProcess) => service.child.pid ?? 0;
  const histogram = async (
    service: ServiceProcess,
    metric: string,
    labels = '',
  ): Promise<[number, number]> => {
    const base = listeningAddress(service) ?? '';
    const read = (part: string) => metricValue(base, `${metric}_${part}${labels}`);
    return [await read('sum'), await read('count')];
  };
  return {
    port: Number(new URL(api.base).port),
    pids: { 'shop-api': pid(api.service), relay: pid(relay), projector: pid(projector) },
    stages: async () => ({
      relayCommitToKafkaAckMeanMs: await histogram(relay, 'sluice_relay_publish_latency_seconds'),
      projectorEventToViewCommitMeanMs: await histogram(
        projector,
        'sluice_projector_apply_latency_seconds',
        '{projection="cart_summary"}',
      ),
      projectorRecordsPerBatch: await histogram(
        projector,
        'sluice_projector_batch_size',
        '{projection="cart_summary"}',
      ),
    }),
  };
}

/** Each stage's mean between two readings of {@link Started.stages}: in ms for times (`…Ms`). */
function stageMeans(
  before: Record<string, [number, number]>,
  after: Record<string, [number, number]>,
): Record<string, number> {
  return Object.fromEntries(
    Object.entries(after).map(([stage, [sum, count]]) => {
      const [sum0, count0] = before[stage] ?? [0, 0];
      const scale = stage.endsWith('Ms') ? 1000 : 1;
      return [stage, round(((sum - sum0) / (count - count0)) * scale, 1)];
    }),
  );
}

async function openShop(port: number, agent: http.Agent): Promise<Shop> {
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
    stock: 100_000_000,
  });
  const carts = await Promise.all(
    Array.from({ length: 200 }, () => post('/carts', { customerId: customer.id })),
  );
  return { post, carts, productId: product.id };
}

async function appliedVersions(pool: pg.Pool, ids?: string[]): Promise<Map<string, number>> {
  const { rows } = await pool.query<{ aggregate_id: string; version: string }>(
    `SELECT aggregate_id, version::text FROM sluice.projection_versions
      WHERE projection = 'cart_summary' AND aggregate_type = 'cart'
        AND ($1::text[] IS NULL OR aggregate_id = ANY($1::text[]))`,
    [ids ?? null],
  );
  return new Map(rows.map((row) => [row.aggregate_id, Number(row.version)]));
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

/** Writes at `rate` for the step's length; each write waits for its version in the view. */
async function writeAtRate(shop: Shop, pool: pg.Pool, rate: number) {
  const pending = new Map<string, { cartId: string; version: number; committedAt: number }>();
  const latencies: number[] = [];
  let failures = 0;
  const state = { writing: true };
  const observer = (async () => {
    while (state.writing || pending.size > 0) {
      const ids = [...new Set([...pending.values()].map((write) => write.cartId))];
      if (ids.length > 0) {
        const versions = await appliedVersions(pool, ids);
        const seenAt = performance.now();
        for (const [key, write] of pending) {
          if ((versions.get(write.cartId) ?? 0) < write.version) continue;
          latencies.push(seenAt - write.committedAt);
          pending.delete(key);
        }
      }
      await sleep(5);
    }
  })();
  const total = Math.round(rate * config.stepSeconds);
  const startedAt = performance.now();
  const writes = new Set<Promise<void>>();
  for (let i = 0; i < total; i += 1) {
    const wait = startedAt + (i * 1000) / rate - performance.now();
    if (wait > 1) await sleep(wait);
    while (writes.size >= config.maxInFlight) await Promise.race(writes);
    const cart = shop.carts[i % shop.carts.length];
    if (cart === undefined) continue;
    const write = shop
      .post(`/carts/${cart.id}/items`, { productId: shop.productId, quantity: 1 })
      .then(
        ({ version }) => {
          const committedAt = performance.now();
          pending.set(`${cart.id}:${version}`, { cartId: cart.id, version, committedAt });
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
  const deadline = performance.now() + 60_000;
  while (pending.size > 0 && performance.now() < deadline) await sleep(20);
  state.writing = false;
  await observer;
  return { total, failures, achievedRate, latencies: latencies.sort((a, b) => a - b) };
}

// ---------------------------------------------------------------- report

function cpuReport(cpu: Map<string, number>, divisor: number, digits = 3) {
  return Object.fromEntries(
    [...cpu]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([label, ms]) => [label, round(ms / divisor, digits)]),
  );
}

async function idleRun(sampler: Sampler, kafkaAlonePercent: number) {
  // Start-up work (the JIT, the first metadata) is not idleness.
  await sleep(config.idleSettleSeconds * 1000);
  const idle = await measure(sampler, () => sleep(config.idleSeconds * 1000));
  const corePercent = (ms: number) => (ms / (idle.seconds * 1000)) * 100;
  const pipeline = corePercent(pipelineMs(idle.cpu));
  return {
    seconds: round(idle.seconds, 1),
    pipelineCorePercent: round(pipeline),
    kafkaAloneCorePercent: round(kafkaAlonePercent),
    pipelineAboveKafkaAloneCorePercent: round(pipeline - kafkaAlonePercent),
    corePercentByProcess: cpuReport(
      new Map([...idle.cpu].map(([label, ms]) => [label, corePercent(ms)])),
      1,
    ),
  };
}

async function rateRun(
  sampler: Sampler,
  shop: Shop,
  pool: pg.Pool,
  rate: number,
  pipeline: Started,
) {
  const before = await pipeline.stages();
  const measured = await measure(sampler, () => writeAtRate(shop, pool, rate));
  const after = await pipeline.stages();
  const stages = stageMeans(before, after);
  const batches =
    (after.projectorRecordsPerBatch?.[1] ?? 0) - (before.projectorRecordsPerBatch?.[1] ?? 0);
  const { total, failures, achievedRate, latencies } = measured.result;
  const written = total - failures;
  return {
    targetRate: rate,
    achievedRate: Math.round(achievedRate),
    writes: total,
    failedWrites: failures,
    p50Ms: round(percentile(latencies, 50), 1),
    p90Ms: round(percentile(latencies, 90), 1),
    p99Ms: round(percentile(latencies, 99), 1),
    maxMs: round(latencies.at(-1) ?? NaN, 1),
    stages: { ...stages, projectorBatchesPerSecond: round(batches / measured.seconds, 1) },
    pipelineCpuMsPerWrite: round(pipelineMs(measured.cpu) / written, 3),
    cpuMsPerWrite: cpuReport(measured.cpu, written),
    machineBusyPercent: round(
      (measured.machineBusyTicks * TICK_MS * 100) / (measured.seconds * 1000 * 2),
      1,
    ),
    stealPercent: round((measured.stealTicks * 100) / Math.max(1, measured.machineBusyTicks), 1),
  };
}

async function postmasterPid(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query<{ dir: string }>(
    "SELECT current_setting('data_directory') AS dir",
  );
  return Number(readFileSync(`${rows[0]?.dir ?? ''}/postmaster.pid`, 'utf8').split('\n')[0]);
}

async function main() {
  const database = await createTestDatabase(config.serverUrl, 'bench_pipeline');
  const pool = new pg.Pool({ connectionString: database.url, max: 2, application_name: OBSERVER });
  const agent = new http.Agent({ keepAlive: true, maxSockets: config.maxInFlight });
  try {
    log(`Kafka alone for ${config.kafkaAloneSeconds} s`);
    const kafkaAlonePercent = await kafkaAlone(config.kafkaAloneSeconds);
    const pipeline = await startPipeline(database);
    const shop = await openShop(pipeline.port, agent);
    await waitFor(async () => (await appliedVersions(pool)).size === shop.carts.length, {
      timeoutMs: 60_000,
      message: 'the opened carts in the view',
    });
    const sampler = cpuSampler(pool, pipeline.pids, await postmasterPid(pool));
    const idle = await idleRun(sampler, kafkaAlonePercent);
    log(`idle: ${JSON.stringify(idle)}`);
    const rates = [];
    for (const rate of config.rates) {
      const step = await rateRun(sampler, shop, pool, rate, pipeline);
      log(`${rate}/s: ${JSON.stringify(step)}`);
      rates.push(step);
    }
    const at500 = rates.find((step) => step.targetRate === 500);
    return {
      benchmark: 'pipeline-latency',
      projectorConsumerGroups: process.env.PROJECTOR_CONSUMER_GROUPS ?? 'shared',
      idle,
      rates,
      goals: GOALS,
      meetsGoals: {
        idle: idle.pipelineCorePercent <= GOALS.idleCorePercent,
        ...(at500 === undefined
          ? {}
          : {
              cpuPerWriteAt500: at500.pipelineCpuMsPerWrite <= GOALS.pipelineCpuMsPerWriteAt500,
              achieved500: at500.achievedRate >= 490,
              p50At500: at500.p50Ms <= GOALS.p50Ms,
              p99At500: at500.p99Ms <= GOALS.p99Ms,
            }),
      },
    };
  } finally {
    for (const service of running) {
      service.kill('SIGTERM');
      await service.exited();
    }
    agent.destroy();
    await pool.end();
    await database.drop();
  }
}

try {
  process.stdout.write(`${JSON.stringify(await main(), null, 2)}\n`);
} catch (error) {
  log(`failed: ${errorMessage(error)}`);
  for (const service of running) service.kill('SIGKILL');
  process.exitCode = 1;
}

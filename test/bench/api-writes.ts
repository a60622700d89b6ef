// Benchmark: how many `POST /carts/:id/items` writes per second shop-api sustains over real
// HTTP, against the ceiling — the same transaction sent as raw SQL by as many pg clients.
//
//   cd /work/main && pnpm exec tsx test/bench/api-writes.ts
//
// Prints one JSON object on stdout; progress goes to stderr. Environment (all optional):
//   DATABASE_URL          server to use (a fresh database is created on it and dropped after)
//   BENCH_SECONDS         measured duration of each workload (default 20)
//   BENCH_REQUESTS        ...or at most this many requests per workload (default 40000)
//   BENCH_ROUNDS          the measured time is split into this many interleaved rounds (default 4)
//   BENCH_WARMUP_SECONDS  warm-up of each workload, not measured (default 3)
//   BENCH_CLIENTS         concurrent HTTP / pg clients (default 16)
//   BENCH_CARTS           carts written to, chosen at random per request (default 2000)
//   BENCH_PRODUCTS        products added to carts (default 8)
//   BENCH_POOL_SIZE       shop-api's DATABASE_POOL_SIZE (default 20)
//   BENCH_SKIP_BUILD=1    do not run `pnpm -s build` first
//   BENCH_API_NODE_ARGS   extra node flags for shop-api, e.g. "--cpu-prof --cpu-prof-dir=/tmp/p"
//   BENCH_PRIVACY_SECONDS     measured duration of each privacy variant (default BENCH_SECONDS)
//   BENCH_PRIVACY_ROUNDS      its rounds of both variants (default 4: on, off, off, on, ...)
//   BENCH_PRIVACY_CUSTOMERS   customers registered per variant before it (default 1000)
//   BENCH_SKIP_PRIVACY=1      do not measure privacy
//
// Workloads, each warmed up, then run in interleaved rounds: (1) `api`: shop-api over HTTP
// with keep-alive connections; (2) `ceiling`: raw SQL, one transaction of lock cart, read price,
// upsert line, bump cart version, advance outbox head, insert outbox row; (3)
// `ceilingEndpointSql`: (2) plus the three reads the endpoint also does (existing line before
// the upsert; cart and its lines for the response), i.e. every statement the endpoint sends,
// so the gap splits into "extra SQL" and "HTTP + framework + JS". `ratio` = api / ceiling.
//
// Privacy (`privacy`): a customer workload (each client in turn registers a customer — two fields
// sealed, a subject key made —, renames one, changes one's email — one field sealed with the
// existing key) against shop-api's app with sealing on and off (test/bench/privacy-cost.ts: one
// process, two ports; `off` lays the fields out as envelopes without keys or cipher), in rounds
// of both, each leading every other round (on, off, off, on, ...) to cancel a drift. Per
// variant: writes/s, p50/p99, that process's CPU per write and PostgreSQL's (from /proc);
// `onVsOff` compares them. The check: every `on` customer event is encrypted and each `on`
// customer has a key; no `off` event is, and no `off` customer has one.
import { errorMessage } from '@sluice/errors';
import { freePort, uniqueName, waitFor, withAdminClient, withDatabase } from '@sluice/testkit';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import {
  cleanUpOnSignals,
  envArgs,
  envNumber,
  httpRequest,
  log,
  machineTicks,
  processTicks,
  repoRoot,
  stopProcess,
  summarizePrivacy,
  type PrivacyRun,
} from './support.js';
import { TEST_SHOP_AUTH_SECRET } from '../support/access.js';
import { TEST_MASTER_KEY } from '../support/privacy.js';

// ---------------------------------------------------------------- configuration

const config = {
  serverUrl: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:54329/sluice',
  seconds: envNumber('BENCH_SECONDS', 20),
  maxRequests: Math.floor(envNumber('BENCH_REQUESTS', 40_000)),
  warmupSeconds: envNumber('BENCH_WARMUP_SECONDS', 3),
  rounds: Math.floor(envNumber('BENCH_ROUNDS', 4)),
  clients: Math.floor(envNumber('BENCH_CLIENTS', 16)),
  carts: Math.floor(envNumber('BENCH_CARTS', 2000)),
  products: Math.floor(envNumber('BENCH_PRODUCTS', 8)),
  poolSize: Math.floor(envNumber('BENCH_POOL_SIZE', 20)),
  skipBuild: process.env.BENCH_SKIP_BUILD === '1',
  apiNodeArgs: envArgs('BENCH_API_NODE_ARGS'),
  privacySeconds: envNumber('BENCH_PRIVACY_SECONDS', envNumber('BENCH_SECONDS', 20)),
  privacyRounds: Math.floor(envNumber('BENCH_PRIVACY_ROUNDS', 4)),
  privacyCustomers: Math.floor(envNumber('BENCH_PRIVACY_CUSTOMERS', 1000)),
  skipPrivacy: process.env.BENCH_SKIP_PRIVACY === '1',
};
const GOAL_RATIO = 0.6;
/** Cores other processes may use (averaged over a workload) before the result is flagged. */
const OTHER_CPU_LIMIT = 0.25;

async function postForId(agent: http.Agent, port: number, path: string, body: object) {
  const response = await httpRequest(agent, port, 'POST', path, JSON.stringify(body));
  if (response.status !== 201) {
    throw new Error(`POST ${path} → ${response.status}: ${response.body.slice(0, 300)}`);
  }
  const parsed = JSON.parse(response.body) as { id?: unknown };
  if (typeof parsed.id !== 'string') throw new Error(`POST ${path} returned no id`);
  return parsed.id;
}

async function mapConcurrent<T, R>(
  items: readonly T[],
  concurrency: number,
  action: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      results[index] = await action(items[index] as T, index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  return results;
}

// ---------------------------------------------------------------- CPU accounting (Linux /proc)

const TICKS_PER_SECOND = 100; // USER_HZ on every mainstream Linux build

interface CpuSnapshot {
  /** utime + stime per live process, with its command name. */
  processes: Map<number, { comm: string; ticks: number }>;
  /** Busy ticks of the whole machine (all CPUs), from /proc/stat. */
  busy: number;
}

function cpuSnapshot(): CpuSnapshot | undefined {
  try {
    const processes = new Map<number, { comm: string; ticks: number }>();
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      // undefined when the process ended while we looked
      const ticks = processTicks(Number(entry));
      if (ticks !== undefined) processes.set(Number(entry), ticks);
    }
    return { processes, busy: machineTicks().busy };
  } catch {
    return undefined;
  }
}
/** CPU ticks used between two snapshots by each party; processes that ended are not seen. */
interface CpuTicks {
  bench: number;
  api: number;
  postgres: number;
  busy: number;
  others: Map<string, number>;
}

function cpuTicks(
  before: CpuSnapshot | undefined,
  after: CpuSnapshot | undefined,
  apiPid: number | undefined,
): CpuTicks | undefined {
  if (before === undefined || after === undefined) return undefined;
  const ticks: CpuTicks = {
    bench: 0,
    api: 0,
    postgres: 0,
    busy: after.busy - before.busy,
    others: new Map(),
  };
  for (const [pid, now] of after.processes) {
    const delta = now.ticks - (before.processes.get(pid)?.ticks ?? 0);
    if (delta <= 0) continue;
    if (pid === process.pid) ticks.bench += delta;
    else if (pid === apiPid) ticks.api += delta;
    else if (now.comm === 'postgres') ticks.postgres += delta;
    else ticks.others.set(now.comm, (ticks.others.get(now.comm) ?? 0) + delta);
  }
  return ticks;
}

/**
 * Cores used on average by each party (2.0 = two cores busy): this benchmark, shop-api, all
 * `postgres` processes, and everything else — a large `otherCores` means the measurement
 * shared the machine with something (a build, another test run).
 */
function cpuCores(slices: readonly (CpuTicks | undefined)[], seconds: number) {
  if (slices.length === 0 || slices.some((slice) => slice === undefined)) return null;
  const cores = (ticks: number) => Math.round((ticks / TICKS_PER_SECOND / seconds) * 100) / 100;
  const sum = (pick: (slice: CpuTicks) => number) =>
    slices.reduce((total, slice) => total + (slice === undefined ? 0 : pick(slice)), 0);
  const bench = sum((slice) => slice.bench);
  const api = sum((slice) => slice.api);
  const postgres = sum((slice) => slice.postgres);
  const busy = sum((slice) => slice.busy);
  const others = new Map<string, number>();
  for (const slice of slices) {
    for (const [comm, ticks] of slice?.others ?? [])
      others.set(comm, (others.get(comm) ?? 0) + ticks);
  }
  return {
    benchClientCores: cores(bench),
    shopApiCores: cores(api),
    postgresCores: cores(postgres),
    otherCores: cores(Math.max(0, busy - bench - api - postgres)),
    busiestOthers: [...others]
      .sort((x, y) => y[1] - x[1])
      .slice(0, 3)
      .map(([comm, ticks]) => ({ comm, cores: cores(ticks) }))
      .filter((other) => other.cores >= 0.01),
    machineBusyCores: cores(busy),
    machineCores: os.availableParallelism(),
  };
}

// ---------------------------------------------------------------- phases

/** One uninterrupted run of one workload. */
interface Slice {
  latencies: number[];
  errors: number;
  errorSamples: string[];
  seconds: number;
  cpu: CpuTicks | undefined;
}

function rate(slice: Pick<Slice, 'latencies' | 'seconds'>): number {
  return slice.seconds > 0 ? Math.round((slice.latencies.length / slice.seconds) * 10) / 10 : 0;
}

function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return 0;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return Math.round((sorted[index] ?? 0) * 1000) / 1000;
}

async function runSlice(
  label: string,
  limits: { seconds: number; maxRequests: number },
  apiPid: number | undefined,
  operation: (client: number) => Promise<void>,
): Promise<Slice> {
  const latencies: number[] = [];
  const errorSamples: string[] = [];
  let started = 0;
  let errors = 0;
  const cpuBefore = cpuSnapshot();
  const start = performance.now();
  const deadline = start + limits.seconds * 1000;
  const progress = setInterval(() => {
    const elapsed = (performance.now() - start) / 1000;
    log(
      `${label}: ${latencies.length} ok, ${errors} errors, ${Math.round(latencies.length / elapsed)}/s`,
    );
  }, 5000);
  const worker = async (client: number): Promise<void> => {
    while (started < limits.maxRequests && performance.now() < deadline) {
      started += 1;
      const t0 = performance.now();
      try {
        await operation(client);
        latencies.push(performance.now() - t0);
      } catch (error) {
        errors += 1;
        if (errorSamples.length < 5) errorSamples.push(errorMessage(error));
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: config.clients }, (_, client) => worker(client)));
  } finally {
    clearInterval(progress);
  }
  const seconds = (performance.now() - start) / 1000;
  const slice = {
    latencies,
    errors,
    errorSamples,
    seconds,
    cpu: cpuTicks(cpuBefore, cpuSnapshot(), apiPid),
  };
  log(
    `${label}: ${rate(slice)}/s (${latencies.length} ok, ${errors} errors in ${seconds.toFixed(2)} s)`,
  );
  return slice;
}

/** A workload's slices from all rounds, as one result. */
function summarize(slices: readonly Slice[]) {
  const latencies = slices.flatMap((slice) => slice.latencies);
  const seconds = slices.reduce((total, slice) => total + slice.seconds, 0);
  const sorted = Float64Array.from(latencies).sort();
  return {
    writesPerSec: rate({ latencies, seconds }),
    p50Ms: percentile(sorted, 0.5),
    p90Ms: percentile(sorted, 0.9),
    p99Ms: percentile(sorted, 0.99),
    maxMs: percentile(sorted, 1),
    requests: latencies.length,
    errors: slices.reduce((total, slice) => total + slice.errors, 0),
    errorSamples: slices.flatMap((slice) => slice.errorSamples).slice(0, 5),
    seconds: Math.round(seconds * 100) / 100,
    writesPerSecByRound: slices.map(rate),
    cpu: cpuCores(
      slices.map((slice) => slice.cpu),
      seconds,
    ),
  };
}

// ---------------------------------------------------------------- the raw-SQL transaction

/** A UUIDv7, as the outbox assigns: 48-bit millisecond time, version 7, variant 10. */
function uuidv7(): string {
  const bytes = randomBytes(16);
  bytes.writeUIntBE(Date.now(), 0, 6);
  bytes.writeUInt8(0x70 | (bytes.readUInt8(6) & 0x0f), 6);
  bytes.writeUInt8(0x80 | (bytes.readUInt8(8) & 0x3f), 8);
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * One `POST /carts/:id/items` as raw SQL, in one transaction, with the statements Kysely
 * sends for the route (same shapes, unnamed parameterised statements). `endpointReads` adds
 * the three reads the route does besides the writes.
 */
async function addItemSql(
  client: pg.Client,
  cartId: string,
  productId: string,
  quantity: number,
  endpointReads: boolean,
): Promise<void> {
  await client.query('BEGIN');
  try {
    const cart = await client.query<{ version: number; status: string }>(
      'select * from "shop"."carts" where "id" = $1 for update',
      [cartId],
    );
    const row = cart.rows[0];
    if (row === undefined) throw new Error(`no cart ${cartId}`);
    if (row.status !== 'open') throw new Error(`cart ${cartId} is ${row.status}`);
    const product = await client.query<{ price_cents: string }>(
      'select "price_cents" from "shop"."products" where "id" = $1 and "delisted_at" is null',
      [productId],
    );
    const price = product.rows[0]?.price_cents;
    if (price === undefined) throw new Error(`no listed product ${productId}`);
    let unitPriceCents = Number(price);
    if (endpointReads) {
      const line = await client.query<{ quantity: number; unit_price_cents: string }>(
        'select "quantity", "unit_price_cents" from "shop"."cart_items" ' +
          'where "cart_id" = $1 and "product_id" = $2',
        [cartId, productId],
      );
      const existing = line.rows[0];
      if (existing !== undefined) {
        if (existing.quantity + quantity > 10_000) throw new Error('quantity_limit');
        unitPriceCents = Number(existing.unit_price_cents);
      }
    }
    await client.query(
      'insert into "shop"."cart_items" ("cart_id", "product_id", "quantity", "unit_price_cents") ' +
        'values ($1, $2, $3, $4) on conflict ("cart_id", "product_id") ' +
        'do update set "quantity" = "shop"."cart_items"."quantity" + $5',
      [cartId, productId, quantity, unitPriceCents, quantity],
    );
    await client.query(
      'update "shop"."carts" set "version" = $1, "updated_at" = $2 where "id" = $3',
      [row.version + 1, new Date(), cartId],
    );
    const head = await client.query(
      `UPDATE "shop"."outbox_heads" SET version = version + $1
        WHERE aggregate_type = $2 AND aggregate_id = $3
          AND version = $4
       RETURNING version`,
      [1, 'cart', cartId, row.version],
    );
    if (head.rowCount !== 1) throw new Error(`version_conflict on cart ${cartId}`);
    const payload = { cartId, productId, quantity, unitPriceCents };
    const metadata = {
      traceparent: `00-${randomBytes(16).toString('hex')}-${randomBytes(8).toString('hex')}-01`,
      correlation_id: uuidv7(),
      actor: 'anonymous',
    };
    await client.query(
      `INSERT INTO "shop"."outbox"
          (id, aggregate_type, aggregate_id, aggregate_version, type, payload, metadata, occurred_at)
        VALUES ($1::uuid, $2, $3, $4, $5,
               $6::jsonb, $7::jsonb, $8::timestamptz)`,
      [
        uuidv7(),
        'cart',
        cartId,
        row.version + 1,
        'cart.item_added.v1',
        JSON.stringify(payload),
        JSON.stringify(metadata),
        new Date().toISOString(),
      ],
    );
    if (endpointReads) {
      await client.query('select * from "shop"."carts" where "id" = $1', [cartId]);
      await client.query(
        'select "product_id", "quantity", "unit_price_cents" from "shop"."cart_items" ' +
          'where "cart_id" = $1 order by "product_id"',
        [cartId],
      );
    }
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

// ---------------------------------------------------------------- privacy on and off

type Variant = PrivacyRun['privacy'];
const VARIANTS: readonly Variant[] = ['on', 'off'];
/** The privacy workload's customers have emails here, unlike the carts' customers. */
const PRIVACY_DOMAIN = 'privacy.bench.example.com';

interface CustomerRef {
  id: string;
  version: number;
}

/**
 * The privacy workload on one variant's `port`: each client in turn registers a customer, renames
 * one of its own and changes one's email (If-Match with the version it holds), so clients never
 * conflict.
 */
function customerWorkload(
  agent: http.Agent,
  port: number,
  variant: Variant,
  seeded: readonly string[],
): (client: number) => Promise<void> {
  const owned: CustomerRef[][] = Array.from({ length: config.clients }, () => []);
  seeded.forEach((id, index) => owned[index % config.clients]?.push({ id, version: 1 }));
  const steps = new Array<number>(config.clients).fill(0);
  let serial = 0;
  const send = async (path: string, body: object, expected: number, ifMatch?: number) => {
    const method = ifMatch === undefined ? 'POST' : 'PATCH';
    const headers = ifMatch === undefined ? {} : { 'if-match': `"${ifMatch}"` };
    const response = await httpRequest(agent, port, method, path, JSON.stringify(body), headers);
    if (response.status !== expected)
      throw new Error(`${method} ${path} → ${response.status}: ${response.body.slice(0, 300)}`);
    return JSON.parse(response.body) as CustomerRef;
  };
  return async (client) => {
    const mine = owned[client] ?? [];
    const step = (steps[client] = (steps[client] ?? 0) + 1) % 3;
    const n = (serial += 1);
    const email = `${variant}-${n}@${PRIVACY_DOMAIN}`;
    const customer = mine[Math.floor(Math.random() * mine.length)];
    if (step === 0 || customer === undefined) {
      mine.push(await send('/customers', { email, name: `Customer ${n}` }, 201));
      return;
    }
    const change = step === 1 ? { name: `Customer ${n} renamed` } : { email };
    const updated = await send(`/customers/${customer.id}`, change, 200, customer.version);
    customer.version = updated.version;
  };
}

/** shop-api's app with sealing on and off (test/bench/privacy-cost.ts, built), once both listen. */
async function startPrivacyServer(): Promise<Record<Variant, number>> {
  const started = spawn(process.execPath, [...config.apiNodeArgs, privacyJs], {
    cwd: root,
    env: {
      ...process.env,
      DATABASE_URL: databaseUrl,
      DATABASE_POOL_SIZE: String(config.poolSize),
      SHOP_AUTH_SECRET: TEST_SHOP_AUTH_SECRET,
      SLUICE_MASTER_KEY: TEST_MASTER_KEY,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  privacyChild = started;
  started.stderr.on('data', (chunk: Buffer) =>
    process.stderr.write(`[privacy-cost] ${chunk.toString()}`),
  );
  let output = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error('privacy-cost did not listen in 60 s')),
      60_000,
    );
    started.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      const line = output.split('\n')[0];
      if (line === undefined || !output.includes('\n')) return;
      clearTimeout(timer);
      resolve(JSON.parse(line) as Record<Variant, number>);
    });
    started.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`privacy-cost exited (code ${String(code)})`));
    });
  });
}

const microsPer = (ticks: number, writes: number) =>
  writes === 0 ? 0 : Math.round((ticks / TICKS_PER_SECOND / writes) * 1e9) / 1000;

/**
 * Seeds each variant's customers, warms both up, then runs them in rounds, each variant leading
 * every other round (on, off, off, on, ...), so a drift of the machine falls on both alike.
 */
async function privacyRuns(agent: http.Agent) {
  const ports = await startPrivacyServer();
  const pid = privacyChild?.pid;
  const workloads = new Map<Variant, (client: number) => Promise<void>>();
  for (const variant of VARIANTS) {
    const seeded = await mapConcurrent(
      Array.from({ length: config.privacyCustomers }, (_, i) => i),
      config.clients,
      (i) =>
        postForId(agent, ports[variant], '/customers', {
          email: `${variant}-seed-${i}@${PRIVACY_DOMAIN}`,
          name: `Seeded customer ${i}`,
        }),
    );
    workloads.set(variant, customerWorkload(agent, ports[variant], variant, seeded));
  }
  const operation = (variant: Variant) => workloads.get(variant) ?? (() => Promise.resolve());
  const warmup = { seconds: config.warmupSeconds, maxRequests: Number.POSITIVE_INFINITY };
  for (const variant of VARIANTS)
    await runSlice(`privacy ${variant} warm-up`, warmup, pid, operation(variant));
  const slice = {
    seconds: config.privacySeconds / config.privacyRounds,
    maxRequests: Number.POSITIVE_INFINITY,
  };
  const slices: Record<Variant, Slice[]> = { on: [], off: [] };
  const runs: PrivacyRun[] = [];
  for (let round = 1; round <= config.privacyRounds; round++) {
    for (const variant of round % 2 === 1 ? VARIANTS : [...VARIANTS].reverse()) {
      const label = `privacy round ${round}/${config.privacyRounds} ${variant}`;
      const result = await runSlice(label, slice, pid, operation(variant));
      slices[variant].push(result);
      const cpuMicrosPerOp = microsPer(result.cpu?.api ?? 0, result.latencies.length);
      runs.push({ privacy: variant, perSecond: rate(result), cpuMicrosPerOp });
    }
  }
  return { slices, runs };
}

/**
 * Every `on` customer event is encrypted (an envelope whose IV is not the `off` variant's zeros)
 * and every `on` customer has a key; no `off` event is, and no `off` customer has one.
 */
async function privacyCheck(client: pg.Client) {
  const { rows } = await client.query<{
    variant: string;
    customers: string;
    keys: string;
    events: string;
    sealed: string;
  }>(
    `SELECT split_part(c.email, '-', 1) AS variant, count(DISTINCT c.id)::text AS customers,
            count(DISTINCT k.subject)::text AS keys, count(o.id)::text AS events,
            count(o.id) FILTER (
              WHERE coalesce(o.payload->>'email', o.payload->>'name') LIKE 'sluice:enc:v1:%'
                AND split_part(coalesce(o.payload->>'email', o.payload->>'name'), ':', 5) <> $2
            )::text AS sealed
       FROM shop.customers c
       JOIN shop.outbox o ON o.aggregate_type = 'customer' AND o.aggregate_id = c.id::text
       LEFT JOIN sluice.subject_keys k ON k.subject = c.id::text
      WHERE c.email LIKE $1
      GROUP BY 1`,
    [`%@${PRIVACY_DOMAIN}`, Buffer.alloc(12).toString('base64url')],
  );
  const of = (variant: Variant) => {
    const row = rows.find((candidate) => candidate.variant === variant);
    return {
      customers: Number(row?.customers ?? 0),
      subjectKeys: Number(row?.keys ?? 0),
      events: Number(row?.events ?? 0),
      sealedEvents: Number(row?.sealed ?? 0),
    };
  };
  const on = of('on');
  const off = of('off');
  const ok =
    on.events > 0 &&
    on.sealedEvents === on.events &&
    on.subjectKeys === on.customers &&
    off.events > 0 &&
    off.sealedEvents === 0 &&
    off.subjectKeys === 0;
  return { on, off, ok };
}

/** Each variant's rate, latencies and CPU per write; `on` against `off`. */
function privacyReport(
  measured: { slices: Record<Variant, Slice[]>; runs: PrivacyRun[] },
  check: Awaited<ReturnType<typeof privacyCheck>>,
) {
  const summary = summarizePrivacy(measured.runs);
  const variant = (name: Variant) => {
    const of = summarize(measured.slices[name]);
    const ticks = (pick: (cpu: CpuTicks) => number) =>
      measured.slices[name].reduce(
        (total, s) => total + (s.cpu === undefined ? 0 : pick(s.cpu)),
        0,
      );
    return {
      writesPerSec: of.writesPerSec,
      writesPerSecByRound: of.writesPerSecByRound,
      spread: summary[name].spread,
      p50Ms: of.p50Ms,
      p99Ms: of.p99Ms,
      serverCpuMicrosPerWrite: microsPer(
        ticks((cpu) => cpu.api),
        of.requests,
      ),
      postgresCpuMicrosPerWrite: microsPer(
        ticks((cpu) => cpu.postgres),
        of.requests,
      ),
      writes: of.requests,
      errors: of.errors,
      errorSamples: of.errorSamples,
      cpu: of.cpu,
    };
  };
  const on = variant('on');
  const off = variant('off');
  const ratio = (x: number, y: number) => (y > 0 ? Math.round((x / y) * 1000) / 1000 : null);
  return {
    workload: 'POST /customers; PATCH /customers/:id name; PATCH /customers/:id email (in turn)',
    order: summary.order,
    on,
    off,
    onVsOff: {
      throughputRatio: ratio(on.writesPerSec, off.writesPerSec),
      serverCpuPerWriteRatio: ratio(on.serverCpuMicrosPerWrite, off.serverCpuMicrosPerWrite),
      postgresCpuPerWriteRatio: ratio(on.postgresCpuMicrosPerWrite, off.postgresCpuMicrosPerWrite),
      p50Ratio: ratio(on.p50Ms, off.p50Ms),
      p99Ratio: ratio(on.p99Ms, off.p99Ms),
      throughputRatioByPair: summary.onVsOff.throughputRatioByPair,
    },
    check,
  };
}

// ---------------------------------------------------------------- main

const root = repoRoot();
const mainJs = join(root, 'services/shop-api/dist/main.js');
// Built like shop-api: under tsx's loader every dynamic import() would cost a round trip to it.
const privacyJs = join(root, 'test/dist/bench/privacy-cost.js');
const databaseName = uniqueName('bench_api');
const databaseUrl = withDatabase(config.serverUrl, databaseName);
const agent = new http.Agent({ keepAlive: true, maxSockets: config.clients + 4 });
let child: ChildProcess | undefined;
let privacyChild: ChildProcess | undefined;
let databaseCreated = false;
const sqlClients: pg.Client[] = [];

async function stopChild(): Promise<void> {
  const running = [child, privacyChild];
  child = undefined;
  privacyChild = undefined;
  for (const started of running) if (started !== undefined) await stopProcess(started, 10_000);
}

let cleaning: Promise<void> | undefined;
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    agent.destroy();
    await Promise.all(sqlClients.map((client) => client.end().catch(() => undefined)));
    await stopChild().catch((error: unknown) => log(`stopping shop-api: ${errorMessage(error)}`));
    if (databaseCreated) {
      await withAdminClient(config.serverUrl, (client) =>
        client.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(databaseName)} WITH (FORCE)`),
      )
        .then(() => log(`dropped database ${databaseName}`))
        .catch((error: unknown) => log(`dropping ${databaseName}: ${errorMessage(error)}`));
    }
  })();
  return cleaning;
}

cleanUpOnSignals(cleanup);

async function startApi(port: number): Promise<ChildProcess> {
  const started = spawn(process.execPath, [...config.apiNodeArgs, mainJs], {
    cwd: root,
    env: {
      ...process.env,
      DATABASE_URL: databaseUrl,
      API_PORT: String(port),
      LOG_LEVEL: 'warn',
      DATABASE_POOL_SIZE: String(config.poolSize),
      SHOP_AUTH_SECRET: TEST_SHOP_AUTH_SECRET,
      SLUICE_MASTER_KEY: TEST_MASTER_KEY,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  started.stdout.on('data', (chunk: Buffer) =>
    process.stderr.write(`[shop-api] ${chunk.toString()}`),
  );
  started.stderr.on('data', (chunk: Buffer) =>
    process.stderr.write(`[shop-api] ${chunk.toString()}`),
  );
  const exited = new Promise<never>((_, reject) =>
    started.once('exit', (code, signal) =>
      reject(new Error(`shop-api exited early (code ${String(code)}, signal ${String(signal)})`)),
    ),
  );
  exited.catch(() => undefined); // observed below while starting; later exits end the run
  await Promise.race([
    waitFor(async () => (await httpRequest(agent, port, 'GET', '/readyz')).status === 200, {
      timeoutMs: 60_000,
      intervalMs: 100,
      message: 'shop-api /readyz',
    }),
    exited,
  ]);
  return started;
}

/**
 * Drops `bench_api_*` databases nobody is connected to: left by a run that was killed before
 * it could clean up (e.g. Ctrl-C under `pnpm exec`, where tsx may SIGKILL the script). A run
 * in progress always has connections open, and a plain DROP fails if one appears meanwhile.
 */
async function dropAbandonedDatabases(): Promise<void> {
  await withAdminClient(config.serverUrl, async (client) => {
    const { rows } = await client.query<{ datname: string }>(
      `SELECT d.datname FROM pg_database d
        WHERE d.datname LIKE 'bench\\_api\\_%'
          AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)`,
    );
    for (const { datname } of rows) {
      try {
        await client.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(datname)}`);
        log(`dropped abandoned database ${datname}`);
      } catch (error) {
        log(`could not drop ${datname}: ${errorMessage(error)}`);
      }
    }
  });
}

async function postgresInfo(client: pg.Client) {
  const { rows } = await client.query<{ name: string; setting: string }>(
    `SELECT name, setting FROM pg_settings
      WHERE name IN ('server_version', 'synchronous_commit', 'fsync', 'wal_level', 'shared_buffers',
                     'max_connections', 'commit_delay')`,
  );
  return Object.fromEntries(rows.map((row) => [row.name, row.setting]));
}

async function main() {
  if (!config.skipBuild) {
    log('pnpm -s build');
    const build = spawnSync('pnpm', ['-s', 'build'], { cwd: root, stdio: ['ignore', 2, 2] });
    if (build.status !== 0)
      throw new Error(`pnpm -s build failed (status ${String(build.status)})`);
  }
  for (const built of [mainJs, privacyJs])
    if (!existsSync(built)) throw new Error(`${built} is missing: build the workspace first`);

  await dropAbandonedDatabases();
  await withAdminClient(config.serverUrl, (client) =>
    client.query(`CREATE DATABASE ${pg.escapeIdentifier(databaseName)}`),
  );
  databaseCreated = true;
  log(`database ${databaseName}`);

  const port = await freePort();
  child = await startApi(port);
  const apiPid = child.pid;
  log(`shop-api pid ${String(apiPid)} ready on :${port}`);

  // Seed through the API: customers, products, carts.
  const seedStart = performance.now();
  const customerCount = Math.max(1, Math.ceil(config.carts / 4));
  const customers = await mapConcurrent(
    Array.from({ length: customerCount }, (_, i) => i),
    config.clients,
    (i) =>
      postForId(agent, port, '/customers', {
        email: `bench-${i}@example.com`,
        name: `Bench Customer ${i}`,
      }),
  );
  const products = await mapConcurrent(
    Array.from({ length: config.products }, (_, i) => i),
    config.clients,
    (i) =>
      postForId(agent, port, '/products', {
        sku: `BENCH-${i}`,
        name: `Bench product ${i}`,
        priceCents: 199 + i * 100,
        stock: 1_000_000,
      }),
  );
  const carts = await mapConcurrent(
    Array.from({ length: config.carts }, (_, i) => i),
    config.clients,
    (i) => postForId(agent, port, '/carts', { customerId: customers[i % customerCount] }),
  );
  log(
    `seeded ${customerCount} customers, ${products.length} products, ${carts.length} carts in ` +
      `${Math.round(performance.now() - seedStart)} ms`,
  );

  const pick = <T>(items: readonly T[]): T => items[Math.floor(Math.random() * items.length)] as T;
  const slice = {
    seconds: config.seconds / config.rounds,
    maxRequests: Math.ceil(config.maxRequests / config.rounds),
  };
  const warmup = { seconds: config.warmupSeconds, maxRequests: Number.POSITIVE_INFINITY };

  // The API over HTTP.
  const apiOperation = async (): Promise<void> => {
    const cartId = pick(carts);
    const body = JSON.stringify({ productId: pick(products), quantity: 1 });
    const response = await httpRequest(agent, port, 'POST', `/carts/${cartId}/items`, body);
    if (response.status !== 200) {
      throw new Error(`HTTP ${response.status}: ${response.body.slice(0, 300)}`);
    }
  };
  // The same transaction as raw SQL, one connection per client.
  for (let i = 0; i < config.clients; i++) {
    const client = new pg.Client({ connectionString: databaseUrl, application_name: 'bench-sql' });
    sqlClients.push(client);
    await client.connect();
  }
  const pgSettings = await postgresInfo(sqlClients[0] as pg.Client);
  const sqlOperation = (endpointReads: boolean) => (client: number) =>
    addItemSql(sqlClients[client] as pg.Client, pick(carts), pick(products), 1, endpointReads);

  const workloads = [
    { name: 'api', operation: apiOperation },
    { name: 'ceiling', operation: sqlOperation(false) },
    { name: 'endpoint-sql', operation: sqlOperation(true) },
  ] as const;
  let itemWrites = 0;
  for (const workload of workloads) {
    const warm = await runSlice(`${workload.name} warm-up`, warmup, apiPid, workload.operation);
    itemWrites += warm.latencies.length;
  }
  // Rounds interleave the workloads, so a disturbance (another process, a checkpoint, the
  // tables growing) falls on all of them alike instead of on whichever ran at that moment.
  const slices: [Slice[], Slice[], Slice[]] = [[], [], []];
  for (let round = 1; round <= config.rounds; round++) {
    for (const [index, workload] of workloads.entries()) {
      const label = `round ${round}/${config.rounds} ${workload.name}`;
      const result = await runSlice(label, slice, apiPid, workload.operation);
      itemWrites += result.latencies.length;
      slices[index]?.push(result);
    }
  }
  const api = summarize(slices[0]);
  const ceiling = summarize(slices[1]);
  const ceilingEndpointSql = summarize(slices[2]);
  const ratioByRound = api.writesPerSecByRound.map((apiRate, round) => {
    const ceilingRate = ceiling.writesPerSecByRound[round] ?? 0;
    return ceilingRate > 0 ? Math.round((apiRate / ceilingRate) * 1000) / 1000 : 0;
  });

  // Sanity: every successful write left exactly one outbox row, and heads match carts.
  const check = await (sqlClients[0] as pg.Client).query<{ events: string; mismatched: string }>(
    `SELECT (SELECT count(*) FROM shop.outbox WHERE type = 'cart.item_added.v1') AS events,
            (SELECT count(*) FROM shop.carts c JOIN shop.outbox_heads h
               ON h.aggregate_type = 'cart' AND h.aggregate_id = c.id::text
              WHERE h.version <> c.version) AS mismatched`,
  );
  const events = Number(check.rows[0]?.events ?? -1);
  const mismatched = Number(check.rows[0]?.mismatched ?? -1);
  const privacy = config.skipPrivacy
    ? null
    : privacyReport(await privacyRuns(agent), await privacyCheck(sqlClients[0] as pg.Client));

  const ratio = ceiling.writesPerSec > 0 ? api.writesPerSec / ceiling.writesPerSec : 0;
  const ratioVsEndpointSql =
    ceilingEndpointSql.writesPerSec > 0 ? api.writesPerSec / ceilingEndpointSql.writesPerSec : 0;
  const errors =
    api.errors +
    ceiling.errors +
    ceilingEndpointSql.errors +
    (privacy === null ? 0 : privacy.on.errors + privacy.off.errors);
  // CPU used by anything but this benchmark, shop-api and PostgreSQL (another build or test
  // run on the machine) skews the comparison; say so rather than report it silently.
  const busiestOther = Math.max(
    ...[api, ceiling, ceilingEndpointSql].map((phase) => phase.cpu?.otherCores ?? 0),
  );
  const machineQuiet = busiestOther <= OTHER_CPU_LIMIT;
  if (!machineQuiet) {
    log(`warning: other processes used ${busiestOther} cores on average during a workload`);
  }
  return {
    benchmark: 'api-writes',
    endpoint: 'POST /carts/:id/items',
    apiWritesPerSec: api.writesPerSec,
    ceilingWritesPerSec: ceiling.writesPerSec,
    ratio: Math.round(ratio * 1000) / 1000,
    ratioByRound,
    goalRatio: GOAL_RATIO,
    meetsGoal: ratio >= GOAL_RATIO,
    ratioVsEndpointSql: Math.round(ratioVsEndpointSql * 1000) / 1000,
    apiP50Ms: api.p50Ms,
    apiP99Ms: api.p99Ms,
    ceilingP50Ms: ceiling.p50Ms,
    ceilingP99Ms: ceiling.p99Ms,
    clients: config.clients,
    requests: api.requests,
    errors,
    machineQuiet,
    api,
    ceiling: { statements: 'BEGIN + 6 + COMMIT', ...ceiling },
    ceilingEndpointSql: { statements: 'BEGIN + 9 + COMMIT', ...ceilingEndpointSql },
    privacy,
    setup: {
      carts: config.carts,
      customers: customerCount,
      products: config.products,
      secondsPerWorkload: config.seconds,
      maxRequestsPerWorkload: config.maxRequests,
      rounds: config.rounds,
      warmupSeconds: config.warmupSeconds,
      privacySecondsPerVariant: config.skipPrivacy ? null : config.privacySeconds,
      privacyRounds: config.skipPrivacy ? null : config.privacyRounds,
      privacyCustomersSeededPerVariant: config.skipPrivacy ? null : config.privacyCustomers,
      apiPoolSize: config.poolSize,
      apiNodeArgs: config.apiNodeArgs,
      httpClient: 'node:http Agent keepAlive',
    },
    check: {
      successfulItemWrites: itemWrites,
      itemAddedEvents: events,
      headsMismatchedWithCarts: mismatched,
      ok: events === itemWrites && mismatched === 0 && (privacy?.check.ok ?? true),
    },
    postgres: pgSettings,
    node: process.version,
    cpus: os.availableParallelism(),
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    platform: `${os.platform()} ${os.release()}`,
  };
}

try {
  const result = await main();
  await cleanup();
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  if (result.errors !== 0 || !result.check.ok) process.exitCode = 1;
} catch (error) {
  log(`failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  await cleanup();
  process.exitCode = 1;
}

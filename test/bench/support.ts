// What the benchmarks share: environment knobs, progress on stderr, the repository root.
import { createDatabase, migrate } from '@sluice/database';
import { errorMessage } from '@sluice/errors';
import { outboxMigrations } from '@sluice/outbox';
import { createTestDatabase, withAdminClient, type TestDatabase } from '@sluice/testkit';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import http from 'node:http';
import pg from 'pg';
import { writeOutboxEvents } from '../relay/harness.js';
import { shopAdminHeaders } from '../support/access.js';

/** A positive number from the environment, or `fallback` when unset. */
export function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number`);
  return value;
}

/** Command-line flags from the environment (space-separated), or `fallback`'s when unset. */
export function envArgs(name: string, fallback = ''): string[] {
  return (process.env[name] ?? fallback).split(/\s+/).filter((arg) => arg !== '');
}

/** Progress goes to stderr; stdout carries only the result JSON. */
export function log(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
}

export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'pnpm-workspace.yaml'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error('pnpm-workspace.yaml not found above the benchmark');
    dir = parent;
  }
  return dir;
}

/** SIGTERM, then SIGKILL after `timeoutMs`; resolves once the process exited. */
export async function stopProcess(child: ChildProcess, timeoutMs = 35_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  await exited;
  clearTimeout(timer);
}

/**
 * Runs `cleanup` once on SIGINT or SIGTERM, then exits 130. `on`, not `once`: a repeated signal
 * (Ctrl-C twice, or tsx relaying the group's SIGINT again) must not find the process without a
 * handler, which would exit before the benchmark's databases are dropped.
 */
export function cleanUpOnSignals(cleanup: () => Promise<void>): void {
  let interrupted = false;
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      if (interrupted) return;
      interrupted = true;
      log(`${signal}: cleaning up`);
      void cleanup().finally(() => process.exit(130));
    });
  }
}

// ---------------------------------------------------------------- Linux /proc

function readProc(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** utime + stime of a process, with its command name. */
export function processTicks(pid: number): { comm: string; ticks: number } | undefined {
  const stat = readProc(`/proc/${pid}/stat`);
  if (stat === undefined) return undefined;
  const open = stat.indexOf('(');
  const close = stat.lastIndexOf(')');
  if (open < 0 || close < 0) return undefined;
  // After "(comm) ", fields[0] is field 3 (state); utime and stime are fields 14 and 15.
  const fields = stat.slice(close + 2).split(' ');
  return {
    comm: stat.slice(open + 1, close),
    ticks: Number(fields[11] ?? 0) + Number(fields[12] ?? 0),
  };
}

/** A process's memory in MiB from /proc/<pid>/status: peak (VmHWM) and current (VmRSS). */
export function memoryMb(pid: number): { hwm: number; rss: number } | undefined {
  const status = readProc(`/proc/${pid}/status`);
  if (status === undefined) return undefined;
  const field = (name: string) =>
    Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1]);
  return { hwm: field('VmHWM') / 1024, rss: field('VmRSS') / 1024 };
}

/** Busy ticks of the whole machine (all CPUs), and the part of them stolen by the hypervisor. */
export function machineTicks(): { busy: number; steal: number } {
  const values = (readProc('/proc/stat')?.split('\n')[0] ?? '')
    .trim()
    .split(/\s+/)
    .slice(1, 9)
    .map(Number);
  const all = values.reduce((sum, value) => sum + value, 0);
  return { busy: all - (values[3] ?? 0) - (values[4] ?? 0), steal: values[7] ?? 0 };
}

/** A response read whole. */
export interface HttpResponse {
  status: number;
  body: string;
}

// shop-api's token, minted once: its verification is part of each request's cost, its signing not.
const SHOP_ADMIN = shopAdminHeaders();

/**
 * One request to 127.0.0.1:`port` through `agent` (keep-alive: far cheaper than `fetch`), with an
 * admin's token for shop-api (valid an hour) and `extraHeaders` (e.g. `if-match`).
 */
export function httpRequest(
  agent: http.Agent,
  port: number,
  method: string,
  path: string,
  json?: string,
  extraHeaders: http.OutgoingHttpHeaders = {},
): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const headers: http.OutgoingHttpHeaders =
      json === undefined
        ? { ...SHOP_ADMIN, ...extraHeaders }
        : {
            ...SHOP_ADMIN,
            ...extraHeaders,
            'content-type': 'application/json',
            'content-length': Buffer.byteLength(json),
          };
    const request = http.request(
      { host: '127.0.0.1', port, method, path, agent, headers },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => {
          resolve({
            status: response.statusCode ?? 0,
            body: Buffer.concat(chunks).toString('utf8'),
          });
        });
        response.on('error', reject);
      },
    );
    request.on('error', reject);
    request.end(json);
  });
}

// ---------------------------------------------------------------- builds and tracing modes

/**
 * The checkout whose built services are measured: `BENCH_SERVICE_ROOT` (another checkout,
 * built, to compare builds with the same benchmark), else this repository.
 */
export function serviceRoot(): string {
  const root = process.env.BENCH_SERVICE_ROOT ?? '';
  return root === '' ? repoRoot() : root;
}

/** How a measured run traces: `off`, `0.1` (10 % of traces, parent-based) or `1` (all). */
export type TracingMode = 'off' | '0.1' | '1';

const TRACING_MODES: readonly string[] = ['off', '0.1', '1'];

/**
 * The runs' tracing modes in order: `BENCH_TRACING` (a comma list, default `off,0.1`) repeated
 * `BENCH_ROUNDS` times (default 2), so modes alternate — off, 0.1, off, 0.1 — and a drift of the
 * machine over the benchmark shows as spread between runs of one mode, not as a mode's cost.
 */
export function tracingModes(): TracingMode[] {
  const modes = (process.env.BENCH_TRACING ?? 'off,0.1')
    .split(',')
    .map((mode) => mode.trim())
    .filter((mode) => mode !== '');
  const unknown = modes.filter((mode) => !TRACING_MODES.includes(mode));
  if (modes.length === 0 || unknown.length > 0)
    throw new Error(`BENCH_TRACING must list modes among off, 0.1, 1 (got ${unknown.join(', ')})`);
  const rounds = Math.floor(envNumber('BENCH_ROUNDS', 2));
  return Array.from({ length: rounds }, () => modes as TracingMode[]).flat();
}

/**
 * Removes the `OTEL_*` variables this process inherited: services start from its environment,
 * and `BENCH_TRACING` alone decides whether they trace.
 */
export function clearTracingEnvironment(): void {
  for (const name of Object.keys(process.env))
    if (name.startsWith('OTEL_')) Reflect.deleteProperty(process.env, name);
}

/** A service's `OTEL_*` settings for `mode`, exporting to the sink at `endpoint`. */
export function tracingEnvironment(mode: TracingMode, endpoint: string): Record<string, string> {
  if (mode === 'off') return {};
  return {
    OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
    ...(mode === '1'
      ? { OTEL_TRACES_SAMPLER: 'always_on' }
      : { OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: mode }),
  };
}

/** What an OTLP sink received so far. */
export interface SinkCounts {
  requests: number;
  bytes: number;
}

/**
 * A minimal OTLP/HTTP endpoint on 127.0.0.1: answers 200 (an empty export response) to
 * `POST /v1/traces`, counts requests and body bytes, and discards the bodies.
 */
export async function startOtlpSink(): Promise<{
  endpoint: string;
  counts(): SinkCounts;
  close(): Promise<void>;
}> {
  const counts: SinkCounts = { requests: 0, bytes: 0 };
  const server = http.createServer((request, response) => {
    const traces = request.method === 'POST' && request.url === '/v1/traces';
    request.on('data', (chunk: Buffer) => {
      if (traces) counts.bytes += chunk.length;
    });
    request.on('end', () => {
      if (traces) counts.requests += 1;
      response.writeHead(traces ? 200 : 404, { 'content-type': 'application/x-protobuf' });
      response.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('the sink has no port');
  return {
    endpoint: `http://127.0.0.1:${address.port}`,
    counts: () => ({ ...counts }),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** One measured run of a service under a tracing mode. */
export interface TracingRun {
  mode: TracingMode;
  eventsPerSecond: number;
  /** CPU time of the service process per event, in microseconds. */
  cpuMicrosPerEvent: number;
  peakRssMb: number;
  otlp: SinkCounts;
}

const mean = (values: readonly number[]) =>
  values.reduce((sum, value) => sum + value, 0) / values.length;
const round3 = (value: number) => Math.round(value * 1000) / 1000;

/** How much tracing at 10 % may cost in throughput, as a fraction of the same run's `off`. */
export const TRACING_GOAL = { maxThroughputCost10: 0.1 } as const;

/**
 * Each mode's mean throughput, CPU per event and peak RSS; `0.1` and `1` against `off` of the
 * same benchmark run (ratios of the means); the spread of the `off` runs ((max − min) / mean:
 * the noise a ratio must be read against); whether tracing at 10 % met its goal.
 */
export function summarizeTracing(runs: readonly TracingRun[]) {
  const byMode: Record<
    string,
    { runs: number; eventsPerSecond: number; cpuMicrosPerEvent: number; peakRssMb: number }
  > = {};
  for (const mode of TRACING_MODES) {
    const of = runs.filter((run) => run.mode === mode);
    if (of.length === 0) continue;
    byMode[mode] = {
      runs: of.length,
      eventsPerSecond: Math.round(mean(of.map((run) => run.eventsPerSecond))),
      cpuMicrosPerEvent: round3(mean(of.map((run) => run.cpuMicrosPerEvent))),
      peakRssMb: Math.max(...of.map((run) => run.peakRssMb)),
    };
  }
  const off = byMode.off;
  const against = (mode: string) => {
    const on = byMode[mode];
    if (off === undefined || on === undefined) return undefined;
    return {
      throughputRatio: round3(on.eventsPerSecond / off.eventsPerSecond),
      cpuPerEventRatio: round3(on.cpuMicrosPerEvent / off.cpuMicrosPerEvent),
    };
  };
  const offRates = runs.filter((run) => run.mode === 'off').map((run) => run.eventsPerSecond);
  const on10 = against('0.1');
  return {
    byMode,
    on10VsOff: on10 ?? null,
    on100VsOff: against('1') ?? null,
    offSpread:
      offRates.length < 2
        ? null
        : round3((Math.max(...offRates) - Math.min(...offRates)) / mean(offRates)),
    meetsGoal:
      on10 === undefined ? null : on10.throughputRatio >= 1 - TRACING_GOAL.maxThroughputCost10,
  };
}

// ---------------------------------------------------------------- privacy on and off

/**
 * One measured run of a workload with personal fields sealed (`on`) or in clear (`off`): its
 * rate and the CPU its measured process spent per operation.
 */
export interface PrivacyRun {
  privacy: 'on' | 'off';
  perSecond: number;
  cpuMicrosPerOp: number;
}

const spreadOf = (values: readonly number[]) =>
  values.length < 2 ? null : round3((Math.max(...values) - Math.min(...values)) / mean(values));

/**
 * Each variant's mean rate and CPU per operation with the spread of its runs ((max − min) /
 * mean), `on` against `off` (ratios of the means), and the throughput ratio of each `on` run to
 * the `off` run of the same round: runs alternate, so the pairs show how steady the ratio was.
 */
export function summarizePrivacy(runs: readonly PrivacyRun[]) {
  const side = (privacy: PrivacyRun['privacy']) => {
    const of = runs.filter((run) => run.privacy === privacy);
    const rates = of.map((run) => run.perSecond);
    return {
      runs: of.length,
      perSecond: of.length === 0 ? 0 : Math.round(mean(rates)),
      cpuMicrosPerOp: of.length === 0 ? 0 : round3(mean(of.map((run) => run.cpuMicrosPerOp))),
      perSecondByRun: rates,
      spread: spreadOf(rates),
    };
  };
  const on = side('on');
  const off = side('off');
  const ons = runs.filter((run) => run.privacy === 'on');
  const offs = runs.filter((run) => run.privacy === 'off');
  const pairs = ons.slice(0, offs.length).map((run, index) => {
    const other = offs[index];
    return other === undefined ? NaN : round3(run.perSecond / other.perSecond);
  });
  return {
    order: runs.map((run) => run.privacy),
    on,
    off,
    onVsOff: {
      throughputRatio: off.perSecond > 0 ? round3(on.perSecond / off.perSecond) : null,
      cpuPerOpRatio: off.cpuMicrosPerOp > 0 ? round3(on.cpuMicrosPerOp / off.cpuMicrosPerOp) : null,
      throughputRatioByPair: pairs,
    },
  };
}

// ---------------------------------------------------------------- small helpers

export const round = (value: number, digits = 2) => Math.round(value * 10 ** digits) / 10 ** digits;
export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------- child processes

/** A process a benchmark started, its output forwarded to stderr under a label. */
export interface Child {
  process: ChildProcess;
  pid: number;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Lines of output that match a pattern, counted. */
  count(pattern: RegExp): number;
  /** The last line of output that matches a pattern. */
  last(pattern: RegExp): string | undefined;
}

/**
 * `command` and `args` to run inside a memory limit of `limitMb` MiB, as a container limit
 * would hold the service (Node sizes its heap from it): a cgroup of its own (v2, or v1's memory
 * controller) that the shell joins before it becomes the command, so the process keeps the pid.
 * With 0, as given. Needs write access to /sys/fs/cgroup (root).
 */
export function inMemoryLimit(
  limitMb: number,
  command: string,
  args: readonly string[],
): [string, string[]] {
  if (limitMb === 0) return [command, [...args]];
  const bytes = String(Math.round(limitMb * 1024 * 1024));
  const v2 = existsSync('/sys/fs/cgroup/cgroup.controllers');
  const group = v2
    ? `/sys/fs/cgroup/sluice-bench-${limitMb}`
    : `/sys/fs/cgroup/memory/sluice-bench-${limitMb}`;
  mkdirSync(group, { recursive: true });
  writeFileSync(join(group, v2 ? 'memory.max' : 'memory.limit_in_bytes'), bytes);
  const script = `echo $$ > ${group}/cgroup.procs && exec "$0" "$@"`;
  return ['/bin/sh', ['-c', script, command, ...args]];
}

/** Starts `command` in the repository root; it is in `children` until it exits. */
export function startChild(
  children: Set<ChildProcess>,
  label: string,
  command: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
): Child {
  const started = spawn(command, args, { cwd: repoRoot(), env, stdio: ['ignore', 'pipe', 'pipe'] });
  if (started.pid === undefined) throw new Error(`${label} did not start`);
  children.add(started);
  const lines: string[] = [];
  const forward = (chunk: Buffer) => {
    for (const line of chunk.toString().split('\n')) {
      if (line === '') continue;
      if (lines.length < 10_000) lines.push(line);
      process.stderr.write(`[${label}] ${line.slice(0, 400)}\n`);
    }
  };
  started.stdout.on('data', forward);
  started.stderr.on('data', forward);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    started.once('exit', (code, signal) => {
      children.delete(started);
      resolve({ code, signal });
    }),
  );
  return {
    process: started,
    pid: started.pid,
    exited,
    count: (pattern) => lines.filter((line) => pattern.test(line)).length,
    last: (pattern) => lines.findLast((line) => pattern.test(line)),
  };
}

// ---------------------------------------------------------------- outbox databases

/**
 * Drops `<prefix>_*` databases (and their slots) older than an hour: left by a run that was
 * killed before it could clean up. Their slots pin hundreds of MB of WAL. The age comes from
 * the name (uniqueName puts Date.now() in base 36 there), so a concurrent run is left alone.
 */
export async function dropAbandonedDatabases(serverUrl: string, prefix: string): Promise<void> {
  await withAdminClient(serverUrl, async (client) => {
    const { rows } = await client.query<{ datname: string }>(
      `SELECT datname FROM pg_database WHERE starts_with(datname, $1)`,
      [`${prefix}_`],
    );
    for (const { datname } of rows) {
      const stamp = /^_([0-9a-z]+)_[0-9a-f]+$/.exec(datname.slice(prefix.length))?.[1];
      if (stamp === undefined || Date.now() - parseInt(stamp, 36) < 3_600_000) continue;
      try {
        await client.query(
          `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
            WHERE database = $1 AND active_pid IS NOT NULL`,
          [datname],
        );
        await sleep(200);
        await client.query(
          `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1`,
          [datname],
        );
        await client.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(datname)} WITH (FORCE)`);
        log(`dropped abandoned database ${datname}`);
      } catch (error) {
        log(`could not drop ${datname}: ${errorMessage(error)}`);
      }
    }
  });
}

/** A fresh database named `<prefix>_…` with `shop.outbox`, and a pool of 3 on it. */
export async function createOutboxDatabase(
  serverUrl: string,
  prefix: string,
): Promise<{ database: TestDatabase; pool: pg.Pool }> {
  const database = await createTestDatabase(serverUrl, prefix);
  log(`database ${database.name}`);
  const db = createDatabase<Record<string, never>>({ url: database.url, maxConnections: 1 });
  try {
    await migrate(db, 'outbox_migrations', outboxMigrations({ schema: 'shop' }));
  } catch (error) {
    await database.drop();
    throw error;
  } finally {
    await db.destroy();
  }
  const pool = new pg.Pool({ connectionString: database.url, max: 3 });
  pool.on('error', () => undefined);
  return { database, pool };
}

/**
 * A publication of `shop.outbox` inserts, then pgoutput slots made with
 * pg_create_logical_replication_slot (a client takes one as it is: registered with
 * snapshot_done = true, no initial snapshot). Publication first, so no slot decodes WAL from
 * before it exists.
 */
export async function createPublicationAndSlots(
  pool: pg.Pool,
  publication: string,
  slots: readonly string[],
): Promise<void> {
  await pool.query(
    `CREATE PUBLICATION ${pg.escapeIdentifier(publication)} FOR TABLE shop.outbox
       WITH (publish = 'insert')`,
  );
  log('creating slots (waits for transactions running anywhere on the server to end)');
  for (const slot of slots)
    await pool.query(`SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')`, [
      slot,
    ]);
}

/** Drops a slot, waiting while the walsender of a client that just left still holds it. */
export async function dropSlot(pool: pg.Pool, slot: string): Promise<void> {
  for (let attempt = 0; ; attempt += 1) {
    try {
      await pool.query('SELECT pg_drop_replication_slot($1)', [slot]);
      return;
    } catch (error) {
      // 55006: the slot is still active.
      if ((error as { code?: string }).code !== '55006' || attempt >= 100) throw error;
      await sleep(100);
    }
  }
}

/** The shape of a backlog: rows, their payload size, the carts and rows per transaction. */
export interface BacklogShape {
  events: number;
  payloadBytes: number;
  aggregates: number;
  /** At most 10000. */
  txRows: number;
}

/** Backlog of `events` rows over `aggregates` carts, ≤ txRows rows a transaction. */
export async function writeBacklog(
  pool: pg.Pool,
  shape: BacklogShape,
): Promise<{ transactions: number; seconds: number }> {
  const start = performance.now();
  let written = 0;
  let transactions = 0;
  let nextLog = 50_000;
  while (written < shape.events) {
    const remaining = shape.events - written;
    const aggregates = Math.min(shape.aggregates, remaining, shape.txRows);
    const perAggregate = Math.max(
      1,
      Math.min(Math.floor(shape.txRows / aggregates), Math.floor(remaining / aggregates)),
    );
    // One statement, so one transaction.
    written += await writeOutboxEvents(pool, {
      aggregates,
      perAggregate,
      payloadBytes: shape.payloadBytes,
    });
    transactions += 1;
    if (written >= nextLog || written >= shape.events) {
      const elapsed = (performance.now() - start) / 1000;
      log(`backlog: ${written} rows in ${elapsed.toFixed(1)} s`);
      nextLog += 50_000;
    }
  }
  return { transactions, seconds: (performance.now() - start) / 1000 };
}

// Benchmark: how fast the relay drains a WAL backlog of outbox inserts into Kafka, against the
// ceiling — PostgreSQL decoding the same backlog with pgoutput into pg_recvlogical, which
// throws it away (-f /dev/null).
//
//   cd /work/main && pnpm -s build && pnpm exec tsx test/bench/relay-drain.ts
//
// Prints one JSON object on stdout; progress goes to stderr. Environment (all optional):
//   DATABASE_URL            server to use (a fresh database is created on it and dropped after)
//   KAFKA_BROKERS           default 127.0.0.1:19092
//   BENCH_EVENTS            outbox rows in the backlog (default 500000)
//   BENCH_PAYLOAD_BYTES     approximate JSON payload size per row (default 300)
//   BENCH_AGGREGATES        carts the rows are spread over (default 1000)
//   BENCH_TX_ROWS           rows per backlog transaction, at most 10000 (default 10000)
//   BENCH_TIMEOUT_SECONDS   give up on a drain after this long (default 600)
//   BENCH_STALL_SECONDS     ...or when the relay's slot has not moved for this long (default 60)
//   BENCH_RELAY_NODE_ARGS   extra node flags for the relay, e.g.
//                           "--cpu-prof --cpu-prof-dir=/tmp/relay-prof"
//   BENCH_RELAY_ENV         extra relay environment, e.g. "RELAY_MAX_BATCH_EVENTS=10000 A=b"
//   BENCH_MEMORY_LIMIT_MB   run the relay in a memory limit (a cgroup, as a container's limit;
//                           Node sizes its heap from it), e.g. 512 as the Helm chart sets; root
//   BENCH_KEEP_TOPIC=1      keep the Kafka topics (deleted by default: ~0.5 GB per run)
//   BENCH_TRACING           the relay runs' tracing modes, a comma list of off, 0.1 (10 % of
//                           traces, parentbased_traceidratio), 1 (always_on) (default off,0.1)
//   BENCH_ROUNDS            times the list is run, alternating (default 2: off, 0.1, off, 0.1)
//   BENCH_SERVICE_ROOT      a built checkout whose services/relay/dist/main.js is measured
//                           (default this repository), to compare builds
//
// Order: publication, then both slots (relay's and ceiling's, made with
// pg_create_logical_replication_slot, so the relay takes its slot as it is — registered with
// snapshot_done = true, no initial snapshot), then the backlog, then the target position
// T = pg_current_wal_lsn(). Ceiling: pg_recvlogical --start -E T, timed until it exits.
// Relay: services/relay/dist/main.js, timed from spawn until its slot's confirmed_flush_lsn
// reaches T (the relay confirms only what Kafka acknowledged); then the topic's high offsets
// must add up to at least the backlog.
// Tracing: the relay runs once per mode in BENCH_TRACING × BENCH_ROUNDS, each on its own slot
// (all made before the backlog) and topic, on the same backlog; traced runs export OTLP/HTTP to
// a sink in this process that counts requests and bytes. Inherited OTEL_* variables are ignored.
// `relay` and `ratio` are the first untraced run's; `tracing` compares the modes in this run.
import { topicFor } from '@sluice/contracts';
import { errorMessage } from '@sluice/errors';
import { testKafka, uniqueName, type TestDatabase } from '@sluice/testkit';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import {
  cleanUpOnSignals,
  clearTracingEnvironment,
  createOutboxDatabase,
  createPublicationAndSlots,
  dropAbandonedDatabases,
  dropSlot,
  envArgs,
  envNumber,
  inMemoryLimit,
  log,
  machineTicks,
  memoryMb,
  processTicks,
  round,
  serviceRoot,
  sleep,
  startChild,
  startOtlpSink,
  stopProcess,
  summarizeTracing,
  TRACING_GOAL,
  tracingEnvironment,
  tracingModes,
  writeBacklog,
  type SinkCounts,
  type TracingMode,
} from './support.js';
import { AGGREGATE_TYPE, confirmedFlush } from '../relay/harness.js';

// ---------------------------------------------------------------- configuration

function envPairs(name: string): Record<string, string> {
  const pairs: Record<string, string> = {};
  for (const item of envArgs(name)) {
    const at = item.indexOf('=');
    if (at <= 0) throw new Error(`${name}: expected NAME=value, got ${item}`);
    pairs[item.slice(0, at)] = item.slice(at + 1);
  }
  return pairs;
}

const config = {
  serverUrl: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:54329/sluice',
  brokers: (process.env.KAFKA_BROKERS ?? '127.0.0.1:19092').split(','),
  events: Math.floor(envNumber('BENCH_EVENTS', 500_000)),
  payloadBytes: Math.floor(envNumber('BENCH_PAYLOAD_BYTES', 300)),
  aggregates: Math.floor(envNumber('BENCH_AGGREGATES', 1000)),
  txRows: Math.min(10_000, Math.floor(envNumber('BENCH_TX_ROWS', 10_000))),
  timeoutMs: envNumber('BENCH_TIMEOUT_SECONDS', 600) * 1000,
  stallMs: envNumber('BENCH_STALL_SECONDS', 60) * 1000,
  relayNodeArgs: envArgs('BENCH_RELAY_NODE_ARGS'),
  relayEnv: envPairs('BENCH_RELAY_ENV'),
  memoryLimitMb: envNumber('BENCH_MEMORY_LIMIT_MB', 0),
  keepTopic: process.env.BENCH_KEEP_TOPIC === '1',
  tracing: tracingModes(),
};
const GOALS = { eventsPerSecond: 25_000, ratio: 0.6, peakRssMb: 200 } as const;
const PG_BIN = '/usr/lib/postgresql/15/bin';
/** Cores used by processes outside the measured pipeline before a result is flagged. */
const OTHER_CPU_LIMIT = 0.25;
const POLL_MS = 50;

// ---------------------------------------------------------------- CPU and memory (Linux /proc)

const TICKS_PER_SECOND = 100; // USER_HZ on every mainstream Linux build

/**
 * CPU used during a phase, per party. Every process is sampled repeatedly, so one that ends
 * during the phase (pg_recvlogical, its walsender) keeps its last sample; one that starts
 * during the phase counts from zero.
 */
function createCpuTracker(roles: () => Map<number, string>) {
  const baseline = new Map<number, number>();
  const last = new Map<number, { comm: string; ticks: number }>();
  const roleOf = new Map<number, string>();
  const machineStart = machineTicks();
  const started = performance.now();
  let first = true;
  function sample(): void {
    const known = roles();
    for (const [pid, role] of known) roleOf.set(pid, role);
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const pid = Number(entry);
      const ticks = processTicks(pid);
      if (ticks === undefined) continue;
      if (!last.has(pid)) baseline.set(pid, first ? ticks.ticks : 0);
      last.set(pid, ticks);
    }
    first = false;
  }
  sample();
  return {
    sample,
    /** Average cores per party over the phase (2.0 = two cores busy). */
    finish() {
      sample();
      const seconds = (performance.now() - started) / 1000;
      const cores = (ticks: number) => round(ticks / TICKS_PER_SECOND / seconds);
      const byRole = new Map<string, number>();
      for (const [pid, { comm, ticks }] of last) {
        const used = ticks - (baseline.get(pid) ?? 0);
        if (used <= 0) continue;
        const role =
          roleOf.get(pid) ??
          (pid === process.pid
            ? 'bench'
            : comm === 'postgres'
              ? 'postgresOther'
              : comm === 'java'
                ? 'kafka'
                : 'other');
        byRole.set(role, (byRole.get(role) ?? 0) + used);
      }
      const machine = machineTicks();
      const result: Record<string, number> = {};
      for (const [role, ticks] of [...byRole].sort((a, b) => b[1] - a[1]))
        result[`${role}Cores`] = cores(ticks);
      result.machineBusyCores = cores(machine.busy - machineStart.busy);
      result.machineStealCores = cores(machine.steal - machineStart.steal);
      return result;
    },
  };
}

// ---------------------------------------------------------------- database helpers

const relayMain = join(serviceRoot(), 'services', 'relay', 'dist', 'main.js');
let database: TestDatabase | undefined;
let pool: pg.Pool | undefined;
const children = new Set<ChildProcess>();
let topicToDelete: string | undefined;

async function queryOne<R extends pg.QueryResultRow>(
  sql: string,
  values: unknown[] = [],
): Promise<R> {
  if (pool === undefined) throw new Error('no pool');
  const row = (await pool.query<R>(sql, values)).rows[0];
  if (row === undefined) throw new Error(`no row from ${sql}`);
  return row;
}

async function currentLsn(): Promise<{ text: string; value: bigint }> {
  const row = await queryOne<{ text: string; value: string }>(
    `SELECT pg_current_wal_lsn()::text AS text, (pg_current_wal_lsn() - '0/0')::text AS value`,
  );
  return { text: row.text, value: BigInt(row.value) };
}

async function slotActivePid(slot: string): Promise<number | undefined> {
  if (pool === undefined) return undefined;
  const { rows } = await pool.query<{ active_pid: number | null }>(
    'SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1',
    [slot],
  );
  return rows[0]?.active_pid ?? undefined;
}

// ---------------------------------------------------------------- child processes

let cleaning: Promise<void> | undefined;
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    for (const child of [...children]) {
      await stopProcess(child).catch((error: unknown) =>
        log(`stopping child: ${errorMessage(error)}`),
      );
    }
    await pool?.end().catch(() => undefined);
    pool = undefined;
    if (database !== undefined) {
      // Terminates the slots' walsenders, drops the slots, then the database.
      await database
        .drop()
        .then(() => log(`dropped database ${database?.name ?? ''} and its slots`))
        .catch((error: unknown) => log(`dropping ${database?.name ?? ''}: ${errorMessage(error)}`));
      database = undefined;
    }
    await deleteTopic();
  })();
  return cleaning;
}

/** Deletes the last run's topic (unless BENCH_KEEP_TOPIC=1). */
async function deleteTopic(): Promise<void> {
  if (topicToDelete === undefined || config.keepTopic) return;
  const kafkaAdmin = testKafka(config.brokers).admin();
  const topic = topicToDelete;
  topicToDelete = undefined;
  await kafkaAdmin
    .connect()
    .then(() => kafkaAdmin.deleteTopics({ topics: [topic], timeout: 30_000 }))
    .then(() => log(`deleted topic ${topic}`))
    .catch((error: unknown) => log(`deleting topic ${topic}: ${errorMessage(error)}`))
    .finally(() => kafkaAdmin.disconnect());
}

cleanUpOnSignals(cleanup);

// ---------------------------------------------------------------- phases

async function runCeiling(slot: string, publication: string, target: string) {
  if (database === undefined) throw new Error('no database');
  const url = database.url;
  let walsender: number | undefined;
  const child = startChild(
    children,
    'pg_recvlogical',
    join(PG_BIN, 'pg_recvlogical'),
    [
      '-d',
      url,
      '--slot',
      slot,
      '--start',
      '-o',
      'proto_version=1',
      '-o',
      `publication_names=${publication}`,
      '-f',
      '/dev/null',
      '--no-loop',
      '-E',
      target,
    ],
    process.env,
  );
  const start = performance.now();
  const cpu = createCpuTracker(() => {
    const roles = new Map([[child.pid, 'pgRecvlogical']]);
    if (walsender !== undefined) roles.set(walsender, 'walsender');
    return roles;
  });
  let exit: { code: number | null; signal: NodeJS.Signals | null; at: number } | undefined;
  void child.exited.then((result) => (exit = { ...result, at: performance.now() }));
  // Read through a function: `exit` changes while awaiting, which narrowing cannot see.
  const exitOf = () => exit;
  let polls = 0;
  while (exitOf() === undefined) {
    if (performance.now() - start > config.timeoutMs) throw new Error('pg_recvlogical timed out');
    walsender ??= await slotActivePid(slot);
    if (++polls % 5 === 0) cpu.sample();
    await Promise.race([child.exited, sleep(POLL_MS)]);
  }
  const ended = exitOf();
  const seconds = ((ended?.at ?? performance.now()) - start) / 1000;
  const cpuCores = cpu.finish();
  if (ended?.code !== 0)
    throw new Error(`pg_recvlogical exited with ${String(ended?.code)} ${String(ended?.signal)}`);
  return { seconds, cpu: cpuCores };
}

async function runRelay(names: {
  slot: string;
  publication: string;
  topicPrefix: string;
  target: bigint;
  tracing: Record<string, string>;
}) {
  if (database === undefined || pool === undefined) throw new Error('no database');
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    DATABASE_URL: database.url,
    KAFKA_BROKERS: config.brokers.join(','),
    RELAY_SLOT: names.slot,
    RELAY_PUBLICATION: names.publication,
    RELAY_TOPIC_PREFIX: names.topicPrefix,
    RELAY_METRICS_PORT: '0',
    LOG_LEVEL: 'warn',
    ...names.tracing,
    ...config.relayEnv,
  };
  const start = performance.now();
  const child = startChild(
    children,
    'relay',
    ...inMemoryLimit(config.memoryLimitMb, process.execPath, [...config.relayNodeArgs, relayMain]),
    env,
  );
  let walsender: number | undefined;
  let slotActiveAfter: number | undefined;
  let firstProgressAfter: number | undefined;
  const cpu = createCpuTracker(() => {
    const roles = new Map([[child.pid, 'relay']]);
    if (walsender !== undefined) roles.set(walsender, 'walsender');
    return roles;
  });
  let exited = false;
  void child.exited.then(() => (exited = true));
  const hasExited = () => exited;
  let peakRss = 0;
  let polls = 0;
  let initial: bigint | undefined;
  let lastConfirmed = -1n;
  let lastProgress = start;
  let rssAtSlotActive: number | undefined;
  for (;;) {
    if (hasExited()) throw new Error('the relay exited before draining the backlog');
    const elapsed = performance.now() - start;
    if (elapsed > config.timeoutMs) throw new Error('the relay did not drain the backlog in time');
    const confirmed = await confirmedFlush(pool, names.slot);
    initial ??= confirmed;
    if (firstProgressAfter === undefined && confirmed > initial) firstProgressAfter = elapsed;
    if (walsender === undefined) {
      walsender = await slotActivePid(names.slot);
      if (walsender !== undefined) {
        slotActiveAfter = elapsed;
        rssAtSlotActive = memoryMb(child.pid)?.rss;
      }
    }
    peakRss = Math.max(peakRss, memoryMb(child.pid)?.rss ?? 0);
    if (confirmed >= names.target) break;
    if (confirmed !== lastConfirmed) {
      lastConfirmed = confirmed;
      lastProgress = performance.now();
    } else if (performance.now() - lastProgress > config.stallMs) {
      const problem = child.last(/"level":"(warn|error|fatal)"/) ?? 'nothing logged';
      throw new Error(
        `the relay's slot has not moved for ${config.stallMs / 1000} s; its last complaint: ${problem.slice(0, 600)}`,
      );
    }
    if (++polls % 5 === 0) cpu.sample();
    if (polls % 100 === 0) {
      const left = Number(names.target - confirmed) / 1024 / 1024;
      log(`relay: ${(elapsed / 1000).toFixed(1)} s, ${left.toFixed(1)} MB of WAL to confirm`);
    }
    await sleep(POLL_MS);
  }
  const seconds = (performance.now() - start) / 1000;
  const cpuCores = cpu.finish();
  const memory = memoryMb(child.pid);
  const peakRssMb = Math.max(peakRss, memory?.hwm ?? 0);
  const relayTicks = processTicks(child.pid)?.ticks ?? 0;
  const retries = child.count(/Kafka send failed/);
  log(`relay drained in ${seconds.toFixed(2)} s; stopping it`);
  await stopProcess(child.process);
  const exit = await child.exited;
  return {
    seconds,
    peakRssMb,
    rssAtSlotActiveMb: rssAtSlotActive === undefined ? null : round(rssAtSlotActive, 1),
    slotActiveAfterSeconds: slotActiveAfter === undefined ? null : round(slotActiveAfter / 1000),
    firstAckAfterSeconds:
      firstProgressAfter === undefined ? null : round(firstProgressAfter / 1000),
    sendRetries: retries,
    exitCode: exit.code,
    cpuSeconds: relayTicks / TICKS_PER_SECOND,
    cpu: cpuCores,
  };
}

async function topicRecords(topic: string): Promise<number> {
  const kafkaAdmin = testKafka(config.brokers).admin();
  await kafkaAdmin.connect();
  try {
    const offsets = await kafkaAdmin.fetchTopicOffsets(topic);
    return offsets.reduce((sum, partition) => sum + Number(partition.high), 0);
  } finally {
    await kafkaAdmin.disconnect();
  }
}

// ---------------------------------------------------------------- tracing modes

type RelayRun = Awaited<ReturnType<typeof runRelay>>;

interface ModeRun {
  mode: TracingMode;
  relay: RelayRun;
  kafkaRecords: number;
  otlp: SinkCounts;
}

/** One relay run per tracing mode, each from its own slot into its own topic. */
async function runRelays(
  names: { slots: readonly string[]; publication: string },
  target: bigint,
  events: number,
): Promise<ModeRun[]> {
  const sink = await startOtlpSink();
  const runs: ModeRun[] = [];
  try {
    for (const [index, mode] of config.tracing.entries()) {
      const slot = names.slots[index] ?? '';
      const topicPrefix = `${uniqueName('bench_relay')}.`;
      const topic = `${topicPrefix}${topicFor(AGGREGATE_TYPE)}`;
      log(`relay ${index + 1}/${config.tracing.length}, tracing ${mode}: ${relayMain}`);
      topicToDelete = topic;
      const before = sink.counts();
      const tracing = tracingEnvironment(mode, sink.endpoint);
      const relay = await runRelay({ ...names, slot, topicPrefix, target, tracing });
      const after = sink.counts();
      const kafkaRecords = await topicRecords(topic);
      const rate = Math.round(events / relay.seconds);
      log(`relay (tracing ${mode}): ${rate} events/s; ${kafkaRecords} records in ${topic}`);
      await deleteTopic();
      if (pool === undefined) throw new Error('no pool');
      await dropSlot(pool, slot);
      const otlp = {
        requests: after.requests - before.requests,
        bytes: after.bytes - before.bytes,
      };
      runs.push({ mode, relay, kafkaRecords, otlp });
    }
  } finally {
    await sink.close();
  }
  return runs;
}

function tracingRuns(runs: readonly ModeRun[], events: number) {
  return runs.map(({ mode, relay, otlp }) => ({
    mode,
    eventsPerSecond: Math.round(events / relay.seconds),
    cpuMicrosPerEvent: round((relay.cpuSeconds * 1e6) / events, 3),
    peakRssMb: round(relay.peakRssMb, 1),
    otlp,
  }));
}

function tracingReport(runs: readonly ModeRun[], events: number) {
  const measured = tracingRuns(runs, events);
  return {
    order: runs.map((run) => run.mode),
    runs: measured.map((run, index) => ({
      ...run,
      seconds: round(runs[index]?.relay.seconds ?? NaN),
      relayCores: runs[index]?.relay.cpu.relayCores ?? null,
      machineBusyCores: runs[index]?.relay.cpu.machineBusyCores ?? null,
    })),
    ...summarizeTracing(measured),
  };
}

// ---------------------------------------------------------------- main

async function main() {
  if (!existsSync(relayMain)) throw new Error(`${relayMain} is missing: run pnpm -s build first`);
  await dropAbandonedDatabases(config.serverUrl, 'bench_relay');

  ({ database, pool } = await createOutboxDatabase(config.serverUrl, 'bench_relay'));

  const names = {
    slots: config.tracing.map(() => uniqueName('bench_relay_slot')),
    ceilingSlot: uniqueName('bench_ceiling_slot'),
    publication: uniqueName('bench_relay_pub'),
  };
  await createPublicationAndSlots(pool, names.publication, [...names.slots, names.ceilingSlot]);
  const before = await currentLsn();

  log(`writing ${config.events} outbox rows (~${config.payloadBytes} B payloads)`);
  const backlog = await writeBacklog(pool, config);
  const target = await currentLsn();
  const check = await queryOne<{ rows: string; payload: string; row_bytes: string }>(
    `SELECT (SELECT count(*) FROM shop.outbox)::text AS rows,
            (SELECT avg(octet_length(payload::text))::int FROM
               (SELECT payload FROM shop.outbox LIMIT 10000) s)::text AS payload,
            (SELECT pg_total_relation_size('shop.outbox'))::text AS row_bytes`,
  );
  const events = Number(check.rows);
  if (events !== config.events) throw new Error(`expected ${config.events} rows, found ${events}`);
  const walMb = Number(target.value - before.value) / 1024 / 1024;
  log(
    `backlog: ${events} rows in ${backlog.transactions} transactions, ${backlog.seconds.toFixed(1)} s, ` +
      `${walMb.toFixed(0)} MB of WAL, target ${target.text}`,
  );

  log('ceiling: pg_recvlogical');
  const ceiling = await runCeiling(names.ceilingSlot, names.publication, target.text);
  log(`ceiling: ${ceiling.seconds.toFixed(2)} s, ${Math.round(events / ceiling.seconds)} events/s`);
  await dropSlot(pool, names.ceilingSlot);

  const runs = await runRelays(names, target.value, events);
  const first = runs.find((run) => run.mode === 'off') ?? runs[0];
  if (first === undefined) throw new Error('no relay run');
  const { relay, kafkaRecords } = first;

  const relayRate = events / relay.seconds;
  const ceilingRate = events / ceiling.seconds;
  const ratio = relayRate / ceilingRate;
  const peakRssMb = round(relay.peakRssMb, 1);
  const busyOther = (cpu: Record<string, number>) =>
    round((cpu.otherCores ?? 0) + (cpu.postgresOtherCores ?? 0) + (cpu.machineStealCores ?? 0));
  const others = Math.max(busyOther(relay.cpu), busyOther(ceiling.cpu));
  const machineQuiet = others <= OTHER_CPU_LIMIT;
  if (!machineQuiet)
    log(`warning: other processes (or hypervisor steal) took up to ${others} cores during a phase`);
  return {
    benchmark: 'relay-drain',
    events,
    payloadBytes: config.payloadBytes,
    relay: {
      tracing: first.mode,
      seconds: round(relay.seconds),
      eventsPerSecond: Math.round(relayRate),
      peakRssMb,
      rssAtSlotActiveMb: relay.rssAtSlotActiveMb,
      kafkaRecords,
      slotActiveAfterSeconds: relay.slotActiveAfterSeconds,
      firstAckAfterSeconds: relay.firstAckAfterSeconds,
      sendRetries: relay.sendRetries,
      exitCode: relay.exitCode,
      nodeArgs: config.relayNodeArgs,
      env: config.relayEnv,
      memoryLimitMb: config.memoryLimitMb || null,
      cpu: relay.cpu,
    },
    ceiling: {
      tool: 'pg_recvlogical',
      seconds: round(ceiling.seconds),
      eventsPerSecond: Math.round(ceilingRate),
      cpu: ceiling.cpu,
    },
    ratio: round(ratio, 3),
    tracing: tracingReport(runs, events),
    goals: { ...GOALS, tracing: TRACING_GOAL },
    meetsGoals: {
      eventsPerSecond: relayRate >= GOALS.eventsPerSecond,
      ratio: ratio >= GOALS.ratio,
      peakRssMb: peakRssMb <= GOALS.peakRssMb,
      tracing10: summarizeTracing(tracingRuns(runs, events)).meetsGoal,
    },
    ok: runs.every(
      (run) =>
        run.kafkaRecords >= events &&
        run.relay.exitCode === 0 &&
        (run.mode === 'off' || run.otlp.requests > 0),
    ),
    machineQuiet,
    backlog: {
      aggregates: Math.min(config.aggregates, events),
      transactions: backlog.transactions,
      writeSeconds: round(backlog.seconds),
      walMb: round(walMb, 1),
      avgPayloadBytes: Number(check.payload),
      outboxTableMb: round(Number(check.row_bytes) / 1024 / 1024, 1),
      targetLsn: target.text,
    },
    serviceRoot: serviceRoot(),
    node: process.version,
    cpus: os.availableParallelism(),
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
  };
}

clearTracingEnvironment();
try {
  const result = await main();
  await cleanup();
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  if (!result.ok) process.exitCode = 1;
} catch (error) {
  log(`failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  await cleanup();
  process.exitCode = 1;
}

// Benchmark: the same WAL backlog of outbox inserts drained into Kafka by the relay and by
// Debezium's embedded engine (PostgreSQL connector, pgoutput) with the Outbox Event Router.
//
//   cd /work/main && pnpm bench:relay-vs-debezium
//
// Needs Java 17+ and Maven: test/bench/debezium is built once (mvn -q -B package, into its
// target/) when its classes are missing. Prints one JSON object on stdout; progress goes to
// stderr. Environment (all optional):
//   DATABASE_URL             server to use (a fresh database is created on it and dropped after)
//   KAFKA_BROKERS            default 127.0.0.1:19092
//   BENCH_EVENTS             outbox rows in the backlog (default 200000)
//   BENCH_PAYLOAD_BYTES      approximate JSON payload size per row (default 300)
//   BENCH_AGGREGATES         carts the rows are spread over (default 1000)
//   BENCH_TX_ROWS            rows per backlog transaction, at most 10000 (default 10000)
//   BENCH_ROUNDS             rounds of relay then Debezium (default 2: A/B/A/B)
//   BENCH_TIMEOUT_SECONDS    give up on a drain after this long (default 600)
//   BENCH_STALL_SECONDS      ...or when its topic has not grown for this long (default 60)
//   BENCH_JVM_ARGS           the JVM's flags (default "-Xmx1g")
//   BENCH_RELAY_NODE_ARGS    the relay's node flags (default none: node's defaults), e.g.
//                            "--max-semi-space-size=4 --heap-growing-percent=50" (README: memory)
//   BENCH_KEEP_TOPIC=1       keep the Kafka topics (deleted by default)
//
// Order: publication, then one slot per run (all before the backlog, made with
// pg_create_logical_replication_slot, so neither side snapshots), then the backlog. Each run
// drains it from its own slot into topics of its own prefix. Both are measured from outside in
// the same way: wall time from spawn until the high watermarks of the run's topic add up to the
// backlog (kafkajs admin, polled), the process's CPU time (user + system from /proc/<pid>/stat,
// children excluded; startup included) and its peak RSS (VmHWM), read just before stopping it.
//
// Both acknowledge to PostgreSQL only what Kafka acknowledged: the relay by design; Debezium's
// side (test/bench/debezium) sends each batch the engine hands it with an idempotent acks=all
// producer, waits for every acknowledgement, then marks the batch processed (offsets, and so the
// slot's confirmed position, follow). Producer: one request in flight, as the relay's; no linger
// and batch.size 1 MiB, so each engine batch goes out in one request per partition leader, as
// the relay sends one batch per send; uncompressed, as the relay sends records this small.
// Topics: 6 partitions, unlimited retention, created by each side on first use.
import { topicFor } from '@sluice/contracts';
import { errorMessage } from '@sluice/errors';
import { testKafka, uniqueName, type TestDatabase } from '@sluice/testkit';
import type { Admin } from 'kafkajs';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type pg from 'pg';
import {
  cleanUpOnSignals,
  clearTracingEnvironment,
  createOutboxDatabase,
  createPublicationAndSlots,
  dropAbandonedDatabases,
  dropSlot,
  envArgs,
  envNumber,
  log,
  machineTicks,
  memoryMb,
  processTicks,
  repoRoot,
  round,
  serviceRoot,
  sleep,
  startChild,
  stopProcess,
  writeBacklog,
  type Child,
} from './support.js';
import { AGGREGATE_TYPE } from '../relay/harness.js';

// ---------------------------------------------------------------- configuration

const config = {
  serverUrl: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:54329/sluice',
  brokers: (process.env.KAFKA_BROKERS ?? '127.0.0.1:19092').split(','),
  events: Math.floor(envNumber('BENCH_EVENTS', 200_000)),
  payloadBytes: Math.floor(envNumber('BENCH_PAYLOAD_BYTES', 300)),
  aggregates: Math.floor(envNumber('BENCH_AGGREGATES', 1000)),
  txRows: Math.min(10_000, Math.floor(envNumber('BENCH_TX_ROWS', 10_000))),
  rounds: Math.floor(envNumber('BENCH_ROUNDS', 2)),
  timeoutMs: envNumber('BENCH_TIMEOUT_SECONDS', 600) * 1000,
  stallMs: envNumber('BENCH_STALL_SECONDS', 60) * 1000,
  jvmArgs: envArgs('BENCH_JVM_ARGS', '-Xmx1g'),
  relayNodeArgs: envArgs('BENCH_RELAY_NODE_ARGS'),
  keepTopic: process.env.BENCH_KEEP_TOPIC === '1',
};
/** The relay against Debezium in the same benchmark run (ratios of the sides' medians). */
const GOALS = {
  minThroughputRatio: 3,
  maxCpuPerEventRatio: 1 / 5,
  maxPeakRssRatio: 1 / 8,
  maxRelayPeakRssMb: 120,
} as const;
const PARTITIONS = 6;
const TICKS_PER_SECOND = 100; // USER_HZ on every mainstream Linux build
const POLL_MS = 50;

type Side = 'relay' | 'debezium';

const relayMain = join(serviceRoot(), 'services', 'relay', 'dist', 'main.js');
const debeziumDir = join(repoRoot(), 'test', 'bench', 'debezium');
const debeziumMain = join(debeziumDir, 'target', 'classes', 'dev', 'sluice', 'bench', 'Main.class');

let database: TestDatabase | undefined;
let pool: pg.Pool | undefined;
let workDir: string | undefined;
const children = new Set<ChildProcess>();
const topicsToDelete = new Set<string>();

// ---------------------------------------------------------------- cleanup

let cleaning: Promise<void> | undefined;
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    for (const child of [...children])
      await stopProcess(child).catch((error: unknown) => log(`stopping: ${errorMessage(error)}`));
    await pool?.end().catch(() => undefined);
    pool = undefined;
    // Terminates the slots' walsenders, drops the slots, then the database.
    await database
      ?.drop()
      .then(() => log(`dropped database ${database?.name ?? ''} and its slots`))
      .catch((error: unknown) => log(`dropping the database: ${errorMessage(error)}`));
    database = undefined;
    if (workDir !== undefined) rmSync(workDir, { recursive: true, force: true });
    await deleteTopics();
  })();
  return cleaning;
}

/** Deletes the runs' topics (unless BENCH_KEEP_TOPIC=1). */
async function deleteTopics(): Promise<void> {
  if (topicsToDelete.size === 0 || config.keepTopic) return;
  const topics = [...topicsToDelete];
  topicsToDelete.clear();
  const admin = testKafka(config.brokers).admin();
  await admin
    .connect()
    .then(() => admin.deleteTopics({ topics, timeout: 30_000 }))
    .then(() => log(`deleted topics ${topics.join(', ')}`))
    .catch((error: unknown) => log(`deleting topics: ${errorMessage(error)}`))
    .finally(() => admin.disconnect());
}

cleanUpOnSignals(cleanup);

// ---------------------------------------------------------------- the two sides

/** Builds test/bench/debezium once (its target/ is kept between runs). */
function buildDebezium(): void {
  if (existsSync(debeziumMain) && existsSync(join(debeziumDir, 'target', 'lib'))) return;
  log('building test/bench/debezium (mvn -q -B package; first run only)');
  const built = spawnSync('mvn', ['-q', '-B', 'package'], { cwd: debeziumDir, stdio: 'inherit' });
  if (built.error !== undefined || built.status !== 0)
    throw new Error(
      `mvn package failed in ${debeziumDir}: ${built.error?.message ?? built.status}`,
    );
}

function javaVersion(): string {
  const result = spawnSync('java', ['-version'], { encoding: 'utf8' });
  return /version "([^"]+)"/.exec(result.stderr)?.[1] ?? 'unknown';
}

interface RunNames {
  slot: string;
  publication: string;
  topicPrefix: string;
}

function startRelay(db: TestDatabase, names: RunNames): Child {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    DATABASE_URL: db.url,
    KAFKA_BROKERS: config.brokers.join(','),
    RELAY_SLOT: names.slot,
    RELAY_PUBLICATION: names.publication,
    RELAY_TOPIC_PREFIX: names.topicPrefix,
    RELAY_TOPIC_PARTITIONS: String(PARTITIONS),
    RELAY_METRICS_PORT: '0',
    LOG_LEVEL: 'warn',
  };
  return startChild(children, 'relay', process.execPath, [...config.relayNodeArgs, relayMain], env);
}

/** The engine's, connector's, router's and producer's settings for one Debezium run. */
function debeziumSettings(db: TestDatabase, names: RunNames, dir: string): Record<string, string> {
  const url = new URL(db.url);
  const router = 'engine.transforms.outbox.';
  return {
    'engine.name': names.slot,
    'engine.connector.class': 'io.debezium.connector.postgresql.PostgresConnector',
    'engine.offset.storage': 'org.apache.kafka.connect.storage.FileOffsetBackingStore',
    'engine.offset.storage.file.filename': join(dir, `${names.slot}.offsets`),
    'engine.offset.flush.interval.ms': '1000',
    'engine.database.hostname': url.hostname,
    'engine.database.port': url.port === '' ? '5432' : url.port,
    'engine.database.user': decodeURIComponent(url.username),
    'engine.database.password': decodeURIComponent(url.password),
    'engine.database.dbname': url.pathname.slice(1),
    'engine.topic.prefix': names.topicPrefix.replace(/\.$/, ''),
    'engine.plugin.name': 'pgoutput',
    'engine.slot.name': names.slot,
    'engine.publication.name': names.publication,
    'engine.publication.autocreate.mode': 'disabled',
    'engine.snapshot.mode': 'no_data',
    'engine.table.include.list': 'shop.outbox',
    'engine.tombstones.on.delete': 'false',
    'engine.transforms': 'outbox',
    [`${router}type`]: 'io.debezium.transforms.outbox.EventRouter',
    [`${router}table.field.event.id`]: 'id',
    [`${router}table.field.event.key`]: 'aggregate_id',
    [`${router}table.field.event.payload`]: 'payload',
    [`${router}route.by.field`]: 'aggregate_type',
    [`${router}route.topic.replacement`]: `${names.topicPrefix}outbox.event.\${routedByValue}`,
    [`${router}table.fields.additional.placement`]:
      'type:header:ce_type,aggregate_version:header:ce_sluiceaggregateversion',
    'producer.bootstrap.servers': config.brokers.join(','),
    'producer.acks': 'all',
    'producer.enable.idempotence': 'true',
    'producer.max.in.flight.requests.per.connection': '1',
    'producer.linger.ms': '0',
    'producer.batch.size': String(1024 * 1024),
    'producer.compression.type': 'none',
    'topic.partitions': String(PARTITIONS),
  };
}

function startDebezium(db: TestDatabase, names: RunNames, dir: string): Child {
  const file = join(dir, `${names.slot}.properties`);
  const settings = debeziumSettings(db, names, dir);
  // Properties files treat backslashes as escapes: the values here have none but `${…}`.
  writeFileSync(
    file,
    Object.entries(settings)
      .map(([k, v]) => `${k}=${v}\n`)
      .join(''),
  );
  const classpath = [
    join(debeziumDir, 'target', 'classes'),
    join(debeziumDir, 'target', 'lib', '*'),
  ];
  const args = [...config.jvmArgs, '-cp', classpath.join(':'), 'dev.sluice.bench.Main', file];
  return startChild(children, 'debezium', 'java', args, process.env);
}

// ---------------------------------------------------------------- measuring a drain

/** Records in `topic` (the sum of its partitions' high watermarks); 0 before it exists. */
async function topicRecords(admin: Admin, topic: string): Promise<number> {
  try {
    const offsets = await admin.fetchTopicOffsets(topic);
    return offsets.reduce((sum, partition) => sum + Number(partition.high), 0);
  } catch {
    return 0;
  }
}

/** Waits until `topic` holds `events` records, then reads the process's CPU and peak RSS. */
async function measure(side: Side, start: () => Child, topic: string, events: number) {
  const admin = testKafka(config.brokers).admin();
  await admin.connect();
  try {
    const machineStart = machineTicks();
    const started = performance.now();
    const child = start();
    let exited = false;
    void child.exited.then(() => (exited = true));
    const hasExited = () => exited;
    let records = 0;
    let lastGrowth = started;
    let firstRecordAfter: number | undefined;
    while (records < events) {
      if (hasExited()) throw new Error(`${side} exited before draining the backlog`);
      const now = performance.now();
      if (now - started > config.timeoutMs) throw new Error(`${side} did not drain in time`);
      if (now - lastGrowth > config.stallMs)
        throw new Error(`${side}: ${topic} has not grown for ${config.stallMs / 1000} s`);
      await sleep(POLL_MS);
      const seen = await topicRecords(admin, topic);
      if (seen > records) lastGrowth = performance.now();
      if (seen > 0) firstRecordAfter ??= performance.now() - started;
      records = seen;
    }
    const seconds = (performance.now() - started) / 1000;
    const cpuSeconds = (processTicks(child.pid)?.ticks ?? NaN) / TICKS_PER_SECOND;
    const peakRssMb = memoryMb(child.pid)?.hwm ?? NaN;
    const machine = machineTicks();
    log(`${side}: ${events} events in ${seconds.toFixed(2)} s; stopping it`);
    await stopProcess(child.process);
    const exit = await child.exited;
    const cores = (ticks: number) => round(ticks / TICKS_PER_SECOND / seconds);
    return {
      side,
      seconds: round(seconds),
      eventsPerSecond: Math.round(events / seconds),
      cpuSeconds: round(cpuSeconds),
      cpuMicrosPerEvent: round((cpuSeconds * 1e6) / events, 1),
      peakRssMb: round(peakRssMb, 1),
      firstRecordAfterSeconds:
        firstRecordAfter === undefined ? null : round(firstRecordAfter / 1000),
      kafkaRecords: records,
      exit: exit.code ?? exit.signal,
      machineBusyCores: cores(machine.busy - machineStart.busy),
      machineStealCores: cores(machine.steal - machineStart.steal),
    };
  } finally {
    await admin.disconnect();
  }
}

type Run = Awaited<ReturnType<typeof measure>>;

// ---------------------------------------------------------------- report

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[middle] ?? NaN)
    : ((sorted[middle - 1] ?? NaN) + (sorted[middle] ?? NaN)) / 2;
}

function sideMedians(runs: readonly Run[], side: Side) {
  const of = runs.filter((run) => run.side === side);
  return {
    runs: of.length,
    eventsPerSecond: Math.round(median(of.map((run) => run.eventsPerSecond))),
    cpuMicrosPerEvent: round(median(of.map((run) => run.cpuMicrosPerEvent)), 1),
    peakRssMb: round(median(of.map((run) => run.peakRssMb)), 1),
  };
}

function compare(runs: readonly Run[]) {
  const relay = sideMedians(runs, 'relay');
  const debezium = sideMedians(runs, 'debezium');
  const ratios = {
    throughput: round(relay.eventsPerSecond / debezium.eventsPerSecond, 3),
    cpuPerEvent: round(relay.cpuMicrosPerEvent / debezium.cpuMicrosPerEvent, 3),
    peakRss: round(relay.peakRssMb / debezium.peakRssMb, 3),
  };
  const met = (ok: boolean) => (ok ? 'met' : 'not met');
  return {
    medians: { relay, debezium },
    ratios,
    goals: GOALS,
    meetsGoals: {
      throughput: met(ratios.throughput >= GOALS.minThroughputRatio),
      cpuPerEvent: met(ratios.cpuPerEvent <= GOALS.maxCpuPerEventRatio),
      peakRss: met(ratios.peakRss <= GOALS.maxPeakRssRatio),
      relayPeakRss: met(relay.peakRssMb <= GOALS.maxRelayPeakRssMb),
    },
  };
}

// ---------------------------------------------------------------- main

async function prepare(slots: readonly string[], publication: string) {
  await dropAbandonedDatabases(config.serverUrl, 'bench_rvd');
  ({ database, pool } = await createOutboxDatabase(config.serverUrl, 'bench_rvd'));
  await createPublicationAndSlots(pool, publication, slots);
  log(`writing ${config.events} outbox rows (~${config.payloadBytes} B payloads)`);
  const backlog = await writeBacklog(pool, config);
  const { rows } = await pool.query<{ n: string }>('SELECT count(*)::text AS n FROM shop.outbox');
  const events = Number(rows[0]?.n);
  if (events !== config.events) throw new Error(`expected ${config.events} rows, found ${events}`);
  return { database, pool, backlog };
}

async function main() {
  if (!existsSync(relayMain)) throw new Error(`${relayMain} is missing: run pnpm -s build first`);
  buildDebezium();
  const order = Array.from({ length: config.rounds }, (): Side[] => ['relay', 'debezium']).flat();
  const slots = order.map((side) => uniqueName(`bench_rvd_${side}`));
  const publication = uniqueName('bench_rvd_pub');
  const loadBefore = os.loadavg();
  const { database: db, pool: client, backlog } = await prepare(slots, publication);
  workDir = mkdtempSync(join(os.tmpdir(), 'bench-rvd-'));
  const dir = workDir;
  const runs: Run[] = [];
  for (const [index, side] of order.entries()) {
    const slot = slots[index] ?? '';
    const names = { slot, publication, topicPrefix: `${slot}.` };
    const topic = `${names.topicPrefix}${topicFor(AGGREGATE_TYPE)}`;
    topicsToDelete.add(topic);
    log(`run ${index + 1}/${order.length}: ${side}`);
    const start =
      side === 'relay' ? () => startRelay(db, names) : () => startDebezium(db, names, dir);
    runs.push(await measure(side, start, topic, config.events));
    await dropSlot(client, slot);
  }
  return {
    benchmark: 'relay-vs-debezium',
    events: config.events,
    payloadBytes: config.payloadBytes,
    order,
    runs,
    ...compare(runs),
    ok: runs.every((run) => run.kafkaRecords >= config.events),
    backlog: { transactions: backlog.transactions, writeSeconds: round(backlog.seconds) },
    relay: { nodeArgs: config.relayNodeArgs },
    debezium: {
      version: '3.6.1.Final',
      jvmArgs: config.jvmArgs,
      java: javaVersion(),
      settings: {
        ...debeziumSettings(db, { slot: '<slot>', publication, topicPrefix: '<slot>.' }, '<dir>'),
        'engine.database.password': '<redacted>',
      },
    },
    machine: {
      cpus: os.availableParallelism(),
      cpuModel: os.cpus()[0]?.model ?? 'unknown',
      loadBefore: loadBefore.map((load) => round(load)),
      loadAfter: os.loadavg().map((load) => round(load)),
      node: process.version,
    },
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

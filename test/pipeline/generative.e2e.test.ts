// The pipeline's promises under workloads no one chose by hand: each run draws a shop history
// from a seed (aggregates of 1 to 500+ events, transactions of 1 to thousands, payloads from a
// few bytes to 3 MB), commits part of it before the relay's first start and the rest while the
// relay and the projectors run and are killed at random points, then checks that nothing was
// lost, reordered, applied twice, parked or stuck. A failure names its seed; replay it with
//   SLUICE_SEED=<seed> pnpm exec vitest run test/pipeline/generative.e2e.test.ts
// (SLUICE_SEED takes a comma-separated list; SLUICE_GENERATIVE_RUNS sets how many fresh seeds).
import { testKafka, testServers, waitFor } from '@sluice/testkit';
import type { Admin } from 'kafkajs';
import { afterAll, describe, expect, it } from 'vitest';
import {
  confirmedFlush,
  createRelayFixture,
  startRelay,
  type RelayFixture,
} from '../relay/harness.js';
import {
  appliedEvents,
  checkAppliedOnce,
  checkKafka,
  checkNothingParked,
  checkViews,
  shopProjections,
  type KafkaReport,
  type Violations,
} from '../support/pipeline-invariants.js';
import { startService, type ServiceProcess } from '../support/services.js';
import { createRandom, freshSeed, type Random } from '../support/seeded-random.js';
import {
  BLOB_AGGREGATE_TYPE,
  commitTransaction,
  describeWorkload,
  generateWorkload,
  type Workload,
  type WorkloadProfile,
  type WorkloadTransaction,
} from '../support/shop-workload.js';

/** Events per run (blobs aside): sized so the default runs fit a few minutes on two cores. */
const MAX_EVENTS: Record<WorkloadProfile, number> = { mixed: 10_000, 'large-aggregates': 14_000 };
const CONVERGE_TIMEOUT_MS = 120_000;
/** Kill points and the writer's pacing are given up this long after the relay's first start. */
const CHAOS_BUDGET_MS = 120_000;
/** Convergence is given up once nothing moved for this long. */
const STALL_MS = 20_000;
/** A kill point not reached after this long without progress is passed: the checks report why. */
const KILL_POINT_STALL_MS = 10_000;

interface ProjectorKill {
  /** Applied events (summed over projections) at which to kill. */
  at: number;
  /** Which of the running projectors dies (modulo how many run). */
  victim: number;
}

interface RunPlan {
  seed: number;
  profile: WorkloadProfile;
  workload: Workload;
  /** Transactions committed before the relay's first start (published from its snapshot). */
  beforeRelay: number;
  relayBatchEvents: number;
  /** How far (in events) the writer may run ahead of Kafka while the pipeline runs. */
  writerLead: number;
  projectors: number;
  /** Applied events at which another projector joins, if one does. */
  projectorJoinsAt: number | undefined;
  /** Records in Kafka at which the relay is killed. */
  relayKills: number[];
  projectorKills: ProjectorKill[];
  /** Events the projections apply in all, each once: the sum of their aggregates' versions. */
  expectedApplied: number;
}

function profileOf(random: Random): WorkloadProfile {
  return random.chance(0.35) ? 'large-aggregates' : 'mixed';
}

/** Everything a run does, drawn from its seed alone. */
function planRun(seed: number): RunPlan {
  const random = createRandom(seed);
  const profile = profileOf(random);
  const workload = generateWorkload(random, { profile, maxEvents: MAX_EVENTS[profile] });
  const readers = (type: string) =>
    shopProjections.filter((p) => p.aggregateTypes.includes(type)).length;
  const expectedApplied = workload.streams.reduce(
    (sum, s) => sum + (s.kind === 'blob' ? 0 : s.events.length * readers(s.type)),
    0,
  );
  const share = random.next();
  const beforeRelay = Math.round(
    workload.transactions.length * (share < 0.15 ? 0 : share < 0.3 ? 1 : random.next()),
  );
  const snapshotEvents = workload.transactions
    .slice(0, beforeRelay)
    .reduce((sum, t) => sum + t.events, 0);
  const relayKills = Array.from({ length: random.pick([0, 1, 1, 2, 3]) }, () =>
    random.int(1, workload.events),
  );
  // Often one kill lands inside the initial snapshot.
  if (snapshotEvents > 1 && random.chance(0.4)) relayKills.push(random.int(1, snapshotEvents - 1));
  const projectorKills = Array.from({ length: random.pick([0, 1, 1, 2]) }, () => ({
    at: random.int(1, expectedApplied),
    victim: random.int(0, 1),
  }));
  const projectors = random.chance(0.25) ? 2 : 1;
  return {
    seed,
    profile,
    workload,
    beforeRelay,
    relayBatchEvents: random.chance(0.5) ? 700 : random.logInt(20, 700),
    writerLead: random.pick([100, 1_000, Infinity]),
    projectors,
    projectorJoinsAt:
      projectors === 1 && random.chance(0.25) ? random.int(1, expectedApplied) : undefined,
    relayKills: relayKills.sort((a, b) => a - b),
    projectorKills: projectorKills.sort((a, b) => a.at - b.at),
    expectedApplied,
  };
}

/** SLUICE_SEED's seeds, or fresh ones: the first heavy on large aggregates, the others mixed. */
function runSeeds(): number[] {
  const given = process.env.SLUICE_SEED;
  if (given !== undefined && given !== '') {
    const seeds = given.split(',').map((s) => Number(s.trim()));
    if (seeds.some((s) => !Number.isSafeInteger(s)))
      throw new Error(`SLUICE_SEED must be integers, comma-separated: ${given}`);
    return seeds;
  }
  const runs = Number(process.env.SLUICE_GENERATIVE_RUNS ?? 3);
  if (!Number.isSafeInteger(runs) || runs < 1)
    throw new Error(`SLUICE_GENERATIVE_RUNS must be a positive integer: ${String(runs)}`);
  return Array.from({ length: runs }, (_, index) => {
    for (;;) {
      const seed = freshSeed();
      if ((profileOf(createRandom(seed)) === 'large-aggregates') === (index === 0)) return seed;
    }
  });
}

interface Tracked {
  label: string;
  kind: 'relay' | 'projector';
  service: ServiceProcess;
  killed: boolean;
  /** How it ended before it was killed, if it did. */
  endedUnasked?: string;
}

interface Run {
  plan: RunPlan;
  fixture: RelayFixture;
  brokers: string[];
  admin: Admin;
  processes: Tracked[];
  kills: Record<string, unknown>[];
  /** When kill points and pacing stop waiting. */
  chaosEndsAt: number;
}

/** Every process this file started: a run that outlived its test's timeout leaves none behind. */
const everyProcess: ServiceProcess[] = [];

function track(run: Run, kind: Tracked['kind'], service: ServiceProcess): Tracked {
  everyProcess.push(service);
  const tracked = {
    label: `${kind}#${run.processes.filter((p) => p.kind === kind).length + 1}`,
    kind,
    service,
    killed: false,
  };
  run.processes.push(tracked);
  return tracked;
}

const running = (run: Run, kind: Tracked['kind']) =>
  run.processes.filter((p) => p.kind === kind && !p.killed);

function startRelayProcess(run: Run): void {
  const env = {
    RELAY_HEARTBEAT_MS: '300',
    RELAY_MAX_BATCH_EVENTS: String(run.plan.relayBatchEvents),
  };
  track(run, 'relay', startRelay(run.fixture, run.brokers, env));
}

function startProjectorProcess(run: Run): void {
  const service = startService('projector', {
    DATABASE_URL: run.fixture.database.url,
    KAFKA_BROKERS: run.brokers.join(','),
    PROJECTOR_TOPIC_PREFIX: run.fixture.topicPrefix,
    PROJECTOR_GROUP_PREFIX: `${run.fixture.topicPrefix}g.`,
    PROJECTOR_METRICS_PORT: '0',
    PROJECTOR_SESSION_TIMEOUT_MS: '6000',
  });
  track(run, 'projector', service);
}

/** How `service` ended, if it did. */
function endOf(service: ServiceProcess): string | undefined {
  const { exitCode, signalCode } = service.child;
  if (exitCode !== null) return `exit code ${exitCode}`;
  return signalCode === null ? undefined : `signal ${signalCode}`;
}

async function kill(tracked: Tracked): Promise<void> {
  const ended = endOf(tracked.service);
  if (ended !== undefined) tracked.endedUnasked = ended;
  tracked.killed = true;
  tracked.service.kill('SIGKILL');
  await tracked.service.exited();
}

const outboxTopic = (run: Run, type: string) => `${run.fixture.topicPrefix}outbox.event.${type}`;

/** Records per outbox topic of the run (duplicates included). */
async function topicCounts(run: Run): Promise<Map<string, number>> {
  const prefix = outboxTopic(run, '');
  const topics = (await run.admin.listTopics()).filter((t) => t.startsWith(prefix));
  const counts = await Promise.all(
    topics.map(async (topic) => {
      const offsets = await run.admin.fetchTopicOffsets(topic);
      return [topic, offsets.reduce((sum, o) => sum + Number(o.high), 0)] as const;
    }),
  );
  return new Map(counts);
}

async function kafkaRecords(run: Run): Promise<number> {
  return [...(await topicCounts(run)).values()].reduce((sum, n) => sum + n, 0);
}

/**
 * Waits until `probe` reaches `target`; gives up (returns false) once it stood still for `stallMs`
 * or the run's chaos budget is spent. A stalled pipeline is for the final checks to report, not
 * for a kill point to hang on.
 */
async function reach(
  run: Run,
  probe: () => Promise<number>,
  target: number,
  stallMs: number,
): Promise<boolean> {
  let best = -1;
  let movedAt = Date.now();
  const outcome = await waitFor(
    async () => {
      const value = await probe().catch(() => best);
      if (value > best) [best, movedAt] = [value, Date.now()];
      if (value >= target) return 'reached';
      return Date.now() - movedAt > stallMs ? 'stalled' : false;
    },
    { timeoutMs: Math.max(0, run.chaosEndsAt - Date.now()), intervalMs: 50 },
  ).catch(() => 'timed out');
  return outcome === 'reached';
}

/** What the relay was doing, from its log: starting, publishing a new slot's snapshot, streaming. */
function relayPhase(output: string): string {
  if (!output.includes('replication prepared')) return 'start-up';
  const snapshotting =
    output.includes('"created":true') && !output.includes('initial snapshot published');
  return snapshotting ? 'snapshot' : 'streaming';
}

async function killRelays(run: Run): Promise<void> {
  for (const at of run.plan.relayKills) {
    const reached = await reach(run, () => kafkaRecords(run), at, KILL_POINT_STALL_MS);
    const [relay] = running(run, 'relay');
    if (relay === undefined) return;
    run.kills.push({
      process: relay.label,
      atKafkaRecords: at,
      reached,
      during: relayPhase(relay.service.output()),
    });
    await kill(relay);
    startRelayProcess(run);
  }
}

async function killProjectors(run: Run): Promise<void> {
  for (const { at, victim } of run.plan.projectorKills) {
    const applied = () => appliedEvents(run.fixture.pool);
    const reached = await reach(run, applied, at, KILL_POINT_STALL_MS);
    const candidates = running(run, 'projector');
    const projector = candidates[victim % candidates.length];
    if (projector === undefined) return;
    run.kills.push({ process: projector.label, atApplied: at, reached });
    await kill(projector);
    startProjectorProcess(run);
  }
}

async function joinProjector(run: Run): Promise<void> {
  if (run.plan.projectorJoinsAt === undefined) return;
  await reach(
    run,
    () => appliedEvents(run.fixture.pool),
    run.plan.projectorJoinsAt,
    KILL_POINT_STALL_MS,
  );
  startProjectorProcess(run);
}

/**
 * Commits `transactions` in order, at most `writerLead` events ahead of Kafka until Kafka stops
 * keeping up (then the rest goes at once: the checks report the stall).
 */
async function write(run: Run, transactions: readonly WorkloadTransaction[]): Promise<void> {
  let committed = 0;
  let published = 0;
  let pacing = Number.isFinite(run.plan.writerLead);
  const probe = async () => (published = await kafkaRecords(run));
  for (const transaction of transactions) {
    const behind = committed - run.plan.writerLead;
    if (pacing && behind > published) pacing = await reach(run, probe, behind, 5_000);
    await commitTransaction(run.fixture.db, transaction);
    committed += transaction.events;
  }
}

/**
 * Waits until the relay confirmed the WAL past the last write (it confirms only what Kafka
 * acknowledged), every topic holds at least its events, and the projections applied every event.
 */
async function converge(run: Run): Promise<string> {
  const { rows } = await run.fixture.pool.query<{ lsn: string }>(
    `SELECT (pg_current_wal_lsn() - '0/0')::text AS lsn`,
  );
  const written = BigInt(rows[0]?.lsn ?? '0');
  const expected = new Map<string, number>();
  for (const stream of run.plan.workload.streams) {
    const type = stream.kind === 'blob' ? BLOB_AGGREGATE_TYPE : stream.type;
    const events = stream.kind === 'blob' ? stream.payloads.length : stream.events.length;
    expected.set(outboxTopic(run, type), (expected.get(outboxTopic(run, type)) ?? 0) + events);
  }
  let progress = '';
  let movedAt = Date.now();
  return waitFor(
    async (): Promise<string | undefined> => {
      const counts = await topicCounts(run);
      const applied = await appliedEvents(run.fixture.pool);
      const flushed = await confirmedFlush(run.fixture.pool, run.fixture.slot);
      // Not the slot's position: heartbeats move it while nothing else does.
      const now = JSON.stringify([...counts, applied]);
      if (now !== progress) [progress, movedAt] = [now, Date.now()];
      const published = [...expected].every(([topic, n]) => (counts.get(topic) ?? 0) >= n);
      if (published && flushed >= written && applied === run.plan.expectedApplied)
        return 'converged';
      return Date.now() - movedAt > STALL_MS
        ? `stalled (applied ${applied} of ${run.plan.expectedApplied})`
        : undefined;
    },
    { timeoutMs: CONVERGE_TIMEOUT_MS, intervalMs: 250 },
  ).catch(() => 'timed out');
}

/** Every process ran until it was killed on purpose, or still runs. */
function checkAlive(run: Run): Violations {
  return {
    'no process died unasked': run.processes.flatMap((p) => {
      const ended = p.endedUnasked ?? (p.killed ? undefined : endOf(p.service));
      return ended === undefined ? [] : [`${p.label} ended on its own (${ended})`];
    }),
  };
}

/**
 * The warnings and errors a process logged, each distinct one once with how often, and any line
 * that is not JSON (a crash's stack trace): the cause of a stall is usually among them.
 */
function logDigest(output: string): string[] {
  const counts = new Map<string, number>();
  for (const line of output.split('\n')) {
    if (line.trim() === '') continue;
    let entry: { level?: string; msg?: string; message?: string; err?: { message?: string } };
    try {
      entry = JSON.parse(line) as typeof entry;
    } catch {
      counts.set(line.slice(0, 300), (counts.get(line.slice(0, 300)) ?? 0) + 1);
      continue;
    }
    const level = (entry.level ?? '').toLowerCase();
    if (!['warn', 'error', 'fatal'].includes(level)) continue;
    const cause = entry.err?.message === undefined ? '' : ` (${entry.err.message.slice(0, 200)})`;
    const key = `${level}: ${entry.msg ?? entry.message ?? ''}${cause}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return [...counts].slice(0, 8).map(([line, n]) => `    ${n}× ${line}`);
}

function failureReport(run: Run, violations: Violations, summary: object): string {
  const { seed } = run.plan;
  const lines = [
    `generative run failed for seed ${seed}; replay: SLUICE_SEED=${seed} pnpm exec vitest run test/pipeline/generative.e2e.test.ts`,
    `run: ${JSON.stringify(summary)}`,
  ];
  for (const [invariant, list] of Object.entries(violations)) {
    if (list.length === 0) continue;
    lines.push(`✗ ${invariant}: ${list.length} violation(s), first ones:`);
    lines.push(...list.slice(0, 6).map((v) => `    ${v.slice(0, 600)}`));
  }
  for (const p of run.processes) {
    lines.push(`--- ${p.label}${p.killed ? ' (killed on purpose)' : ''}: warnings and errors ---`);
    lines.push(...logDigest(p.service.output()));
    lines.push(`--- ${p.label}: end of its output ---`, p.service.output().slice(-1500));
  }
  return lines.join('\n');
}

async function deleteTopics(run: Run): Promise<void> {
  const topics = (await run.admin.listTopics()).filter((t) =>
    t.startsWith(run.fixture.topicPrefix),
  );
  if (topics.length > 0) await run.admin.deleteTopics({ topics });
}

/** Phase 1 before the relay's first start; phase 2 with writes, kills and restarts at once. */
async function drive(run: Run): Promise<void> {
  const { transactions } = run.plan.workload;
  const { beforeRelay, projectors } = run.plan;
  for (const transaction of transactions.slice(0, beforeRelay))
    await commitTransaction(run.fixture.db, transaction);
  run.chaosEndsAt = Date.now() + CHAOS_BUDGET_MS;
  startRelayProcess(run);
  for (let i = 0; i < projectors; i += 1) startProjectorProcess(run);
  await Promise.all([
    write(run, transactions.slice(beforeRelay)),
    killRelays(run),
    killProjectors(run),
    joinProjector(run),
  ]);
}

async function checkInvariants(run: Run): Promise<{ violations: Violations; kafka: KafkaReport }> {
  const { pool, topicPrefix } = run.fixture;
  const kafka = await checkKafka(pool, run.brokers, topicPrefix);
  const violations: Violations = {
    ...kafka.violations,
    ...(await checkViews(pool)),
    ...(await checkAppliedOnce(pool)),
    ...(await checkNothingParked(pool, run.brokers, topicPrefix)),
    ...checkAlive(run),
  };
  return { violations, kafka };
}

function summarize(run: Run, convergence: string, kafka: KafkaReport, startedAt: number) {
  const { plan } = run;
  return {
    generativeSeed: plan.seed,
    profile: plan.profile,
    events: plan.workload.events,
    eventsBeforeRelay: plan.workload.transactions
      .slice(0, plan.beforeRelay)
      .reduce((sum, t) => sum + t.events, 0),
    ...describeWorkload(plan.workload),
    relayBatchEvents: plan.relayBatchEvents,
    writerLead: String(plan.writerLead),
    projectors: plan.projectors,
    projectorJoinsAt: plan.projectorJoinsAt ?? null,
    kills: run.kills,
    convergence,
    records: kafka.records,
    duplicates: kafka.duplicates,
    claimChecked: kafka.claimChecked,
    seconds: Math.round((Date.now() - startedAt) / 1000),
  };
}

async function generativeRun(seed: number): Promise<void> {
  console.log(JSON.stringify({ generativeSeed: seed }));
  const startedAt = Date.now();
  const { databaseUrl, kafkaBrokers } = testServers();
  const fixture = await createRelayFixture(databaseUrl, 'generative');
  const admin = testKafka(kafkaBrokers).admin();
  await admin.connect();
  const run: Run = {
    plan: planRun(seed),
    fixture,
    brokers: kafkaBrokers,
    admin,
    processes: [],
    kills: [],
    chaosEndsAt: Infinity,
  };
  try {
    await drive(run);
    const convergence = await converge(run);
    const { violations, kafka } = await checkInvariants(run);
    const summary = summarize(run, convergence, kafka, startedAt);
    console.log(JSON.stringify({ generativeRun: summary }));
    const count = Object.values(violations).reduce((sum, list) => sum + list.length, 0);
    expect(count, count === 0 ? '' : failureReport(run, violations, summary)).toBe(0);
  } finally {
    await Promise.all(running(run, 'relay').concat(running(run, 'projector')).map(kill));
    await deleteTopics(run).catch(() => undefined);
    await admin.disconnect();
    await fixture.close();
  }
}

afterAll(async () => {
  const left = everyProcess.filter((service) => endOf(service) === undefined);
  for (const service of left) service.kill('SIGKILL');
  await Promise.all(left.map((service) => service.exited()));
});

describe('the pipeline under generated workloads and kills', () => {
  it.each(runSeeds())(
    'keeps every promise for seed %i',
    (seed) => generativeRun(seed),
    // Set-up, the chaos budget, convergence, the checks, and the clean-up.
    CHAOS_BUDGET_MS + CONVERGE_TIMEOUT_MS + 90_000,
  );
});

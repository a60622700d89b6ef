// Benchmark: what each screen of the operations console costs PostgreSQL on a large database —
// 1M outbox rows, 100k parked events — with the console's own statements (its functions are
// called directly), against the goal of 20 ms of PostgreSQL time per refresh.
//
//   cd /work/main && pnpm -s build && pnpm exec tsx test/bench/console-queries.ts
//
// Prints one JSON object on stdout; progress goes to stderr. Environment (all optional):
//   DATABASE_URL     server to use (a fresh database is created on it and dropped after)
//   BENCH_RUNS       measured refreshes of each screen, after two warm-up ones (default 7)
//
// The database: the outbox's and the projector's migrations and the relay's published-events
// table, seeded by a few INSERT … SELECT over generate_series: 1M outbox rows (100k aggregates
// of 8 types, 10 versions each, with correlation id, causation id, actor and traceparent; the
// newest 20k in the last 40 s, the rest over the 5.7 days before), the relay's record of their
// publishing (4 partitions per topic, sends of 10 events), 4 projections (one also rebuilding,
// one on its second generation) with checkpoints and applied batches of 50 records, 100k parked
// events (20k aggregates: a first failure of one of five error classes, then four behind it)
// and 10k audit rows; then VACUUM ANALYZE, as autovacuum would. `journeyCheck` tells whether
// the journey measured found every stage that was seeded (the exit status is 1 if not).
//
// Screens: the sample behind /api/overview, /api/relay, /api/projections and the stream;
// /api/parked unfiltered and by projection, aggregate and error class (3 %, 1 % and 80 % of the
// records); /api/journey by aggregate id, event id, correlation id and trace id; /api/audit.
// PostgreSQL time of a refresh: the sum over its statements of EXPLAIN (ANALYZE) planning and
// execution time (pg_stat_statements needs a server restart to load); each statement is then
// run again for the rows the next one needs. Wall time: the same refresh through a plain pool.
// `met`: every measured refresh under the goal.
import { migrate, createDatabase } from '@sluice/database';
import { errorMessage } from '@sluice/errors';
import { outboxMigrations } from '@sluice/outbox';
import { projectorMigrations } from '@sluice/projector';
import { createTestDatabase, type TestDatabase } from '@sluice/testkit';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { PUBLISHED_EVENTS_TABLE } from '../../packages/relay/src/published-events.js';
import { findJourneys } from '../../services/console/src/journey.js';
import {
  auditItems,
  readParkedPage,
  type ParkedFilter,
} from '../../services/console/src/parked.js';
import { collectPostgres } from '../../services/console/src/postgres-collector.js';
import { cleanUpOnSignals, envNumber, log } from './support.js';

const config = {
  serverUrl: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:54329/sluice',
  runs: Math.floor(envNumber('BENCH_RUNS', 7)),
};
const GOAL_MS = 20;
const WARM_UPS = 2;
const OUTBOX = { schema: 'shop', table: 'outbox' };

const EVENTS = 1_000_000;
const AGGREGATES = 100_000;
const RECENT_EVENTS = 20_000;
const PARKED = 100_000;
const AUDIT_ROWS = 10_000;
const PARTITIONS = 4;
const EVENTS_PER_SEND = 10;
const TYPES = ['cart', 'customer', 'product', 'order', 'payment', 'shipment', 'invoice', 'refund'];
/** Projection p consumes the aggregate types t with t % 4 = p. */
const PROJECTIONS = ['cart_summary', 'customer_orders', 'product_sales', 'order_revenue'];
/** First failures by error class, of one aggregate in 20 each; the rest are behind_parked. */
const FIRST_FAILURES = [
  ...Array<string>(12).fill('handler_failed'),
  ...Array<string>(3).fill('schema_invalid'),
  ...Array<string>(2).fill('decode_failed'),
  ...Array<string>(2).fill('version_gap'),
  'claim_check_missing',
];

const textArray = (values: readonly string[]) =>
  `ARRAY[${values.map((value) => `'${value}'`).join(', ')}]`;
const round = (value: number) => Math.round(value * 100) / 100;

// ---------------------------------------------------------------- seeding

/** Event i: aggregate a, version v; its offset in the aggregate's topic-partition; its time. */
const EVENT_SERIES = `
  generate_series(0, ${EVENTS - 1}) AS g(i)
  CROSS JOIN LATERAL (SELECT g.i % ${AGGREGATES} AS a, g.i / ${AGGREGATES} + 1 AS v) AS e
  CROSS JOIN LATERAL (SELECT
    (${textArray(TYPES)})[e.a % 8 + 1] AS aggregate_type,
    md5('aggregate' || e.a)::uuid AS aggregate_id,
    (e.a / 8) % ${PARTITIONS} AS partition,
    (e.v - 1) * ${AGGREGATES / 8 / PARTITIONS} + e.a / ${8 * PARTITIONS} AS record_offset,
    now() - make_interval(secs => CASE WHEN g.i >= ${EVENTS - RECENT_EVENTS}
      THEN (${EVENTS - 1} - g.i) * 0.002
      ELSE 40 + (${EVENTS - RECENT_EVENTS} - g.i) * 0.5 END) AS occurred_at) AS x`;

const SEED_OUTBOX = `
  INSERT INTO shop.outbox (id, aggregate_type, aggregate_id, aggregate_version, type, payload,
                           metadata, occurred_at)
  SELECT md5('event' || g.i)::uuid, x.aggregate_type, x.aggregate_id::text, e.v,
         x.aggregate_type || '.'
           || (ARRAY['opened', 'changed', 'confirmed', 'closed'])[e.v % 4 + 1] || '.v1',
         jsonb_build_object('id', x.aggregate_id, 'amountCents', g.i % 100000,
                            'sku', 'SKU-' || g.i % 5000, 'note', repeat('n', 120)),
         jsonb_build_object('correlation_id', md5('correlation' || g.i / 3)::uuid,
                            'causation_id', md5('event' || g.i - 1)::uuid,
                            'actor', 'user:' || e.a % 500,
                            'traceparent', '00-' || md5('trace' || g.i / 3) || '-'
                                           || left(md5('span' || g.i), 16) || '-01'),
         x.occurred_at
    FROM ${EVENT_SERIES}`;

const SEED_HEADS = `
  INSERT INTO shop.outbox_heads (aggregate_type, aggregate_id, version)
  SELECT (${textArray(TYPES)})[a % 8 + 1], md5('aggregate' || a)::uuid::text, ${EVENTS / AGGREGATES}
    FROM generate_series(0, ${AGGREGATES - 1}) AS a`;

/** One row per send and partition, of 10 consecutive offsets, each event its own transaction. */
const SEED_PUBLISHED = `
  INSERT INTO sluice.published_events
         (topic, partition, base_offset, event_ids, commit_lsns, committed_at, published_at)
  SELECT 'outbox.event.' || x.aggregate_type, x.partition, min(x.record_offset),
         string_agg(md5('event' || g.i)::uuid::text, ',' ORDER BY x.record_offset),
         string_agg('1:0/' || to_hex(1000000 + g.i * 256), ',' ORDER BY x.record_offset),
         string_agg((extract(epoch FROM x.occurred_at) * 1000)::bigint::text, ','
                    ORDER BY x.record_offset),
         max(x.occurred_at) + interval '25 milliseconds'
    FROM ${EVENT_SERIES}
   GROUP BY x.aggregate_type, x.partition, x.record_offset / ${EVENTS_PER_SEND}`;

/** Generation 1 of each projection; order_revenue on its second, cart_summary rebuilding. */
const SEED_GENERATIONS = `
  INSERT INTO sluice.projection_generations (projection, generation, instance, state, activated_at)
  VALUES ('cart_summary', 1, 'cart_summary', 'active', now() - interval '30 days'),
         ('cart_summary', 2, 'cart_summary.g2', 'building', NULL),
         ('customer_orders', 1, 'customer_orders', 'active', now() - interval '30 days'),
         ('product_sales', 1, 'product_sales', 'active', now() - interval '30 days'),
         ('order_revenue', 1, 'order_revenue', 'retired', now() - interval '30 days'),
         ('order_revenue', 2, 'order_revenue.g2', 'active', now() - interval '2 days')`;

const SEED_CHECKPOINTS = `
  INSERT INTO sluice.projection_checkpoints (projection, topic, partition, next_offset)
  SELECT g.instance, 'outbox.event.' || (${textArray(TYPES)})[t + 1], n,
         CASE WHEN g.state = 'building' THEN ${EVENTS / 8 / PARTITIONS / 2}
              ELSE ${EVENTS / 8 / PARTITIONS} - n END
    FROM sluice.projection_generations g, generate_series(0, 7) AS t,
         generate_series(0, ${PARTITIONS - 1}) AS n
   WHERE g.state IN ('active', 'building')
     AND t % 4 = array_position(${textArray(PROJECTIONS)}, g.projection) - 1`;

const SEED_APPLIED_BATCHES = `
  INSERT INTO sluice.projection_applied_batches
         (projection, generation, topic, partition, from_offset, to_offset, applied_at)
  SELECT c.projection, g.generation, c.topic, c.partition, b, least(b + 49, c.next_offset - 1),
         now() - make_interval(secs => (c.next_offset - b) * 16)
    FROM sluice.projection_checkpoints c
    JOIN sluice.projection_generations g ON g.instance = c.projection,
         generate_series(0, c.next_offset - 1, 50) AS b`;

/** Parked record j: aggregate 5·(j/5) from version 6 on, in the projection that consumes it. */
const SEED_PARKED = `
  INSERT INTO sluice.parked_events
         (projection, topic, partition, record_offset, aggregate_type, aggregate_id,
          aggregate_version, record_key, record_value, record_headers, reason, error, attempts,
          first_failed_at, last_failed_at)
  SELECT (ARRAY['cart_summary', 'customer_orders', 'product_sales', 'order_revenue.g2'])
           [p.a % 4 + 1],
         'outbox.event.' || p.aggregate_type, (p.a / 8) % ${PARTITIONS},
         (p.v - 1) * ${AGGREGATES / 8 / PARTITIONS} + p.a / ${8 * PARTITIONS},
         p.aggregate_type, md5('aggregate' || p.a)::uuid::text, p.v,
         convert_to(md5('aggregate' || p.a)::uuid::text, 'UTF8'),
         convert_to(json_build_object('id', md5('aggregate' || p.a)::uuid, 'amountCents', j,
                                      'note', repeat('n', 120))::text, 'UTF8'),
         convert_to('[["ce_type","' || p.aggregate_type || '.changed.v1"],["ce_id","'
                    || md5('event' || j)::uuid || '"]]', 'UTF8'),
         p.reason, CASE WHEN p.reason = 'behind_parked' THEN NULL
                        ELSE 'failed at version ' || p.v || ': ' || repeat('e', 60) END,
         1 + j % 3, now() - make_interval(secs => (${PARKED} - j) * 3),
         now() - make_interval(secs => (${PARKED} - j) * 2)
    FROM generate_series(0, ${PARKED - 1}) AS j
   CROSS JOIN LATERAL (SELECT j / 5 * 5 AS a, 6 + j % 5 AS v,
                              (${textArray(TYPES)})[(j / 5 * 5) % 8 + 1] AS aggregate_type,
                              CASE WHEN j % 5 > 0 THEN 'behind_parked'
                                   ELSE (${textArray(FIRST_FAILURES)})[j / 5 % 20 + 1]
                              END AS reason) AS p`;

const SEED_AUDIT = `
  INSERT INTO sluice.operator_audit (at, actor, action, projection, target, reason, outcome)
  SELECT now() - make_interval(secs => (${AUDIT_ROWS} - k) * 60), 'operator:' || k % 7,
         (ARRAY['redrive', 'skip', 'rebuild', 'cancel_rebuild'])[k % 4 + 1],
         (${textArray(PROJECTIONS)})[k % 4 + 1],
         jsonb_build_object('aggregateType', 'cart', 'aggregateId', md5('aggregate' || k)::uuid),
         'ticket ' || k, jsonb_build_object('applied', k % 5, 'parked', 0)
    FROM generate_series(1, ${AUDIT_ROWS}) AS k`;

const SEEDS: [string, string][] = [
  ['outbox', SEED_OUTBOX],
  ['outbox heads', SEED_HEADS],
  ['published events', SEED_PUBLISHED],
  ['generations', SEED_GENERATIONS],
  ['checkpoints', SEED_CHECKPOINTS],
  ['applied batches', SEED_APPLIED_BATCHES],
  ['parked events', SEED_PARKED],
  ['audit', SEED_AUDIT],
];

/** Migrates and seeds `url`; returns the rows of each table. */
async function seed(url: string, pool: pg.Pool): Promise<Record<string, number>> {
  const db = createDatabase<Record<string, never>>({ url, maxConnections: 1 });
  try {
    await migrate(db, 'outbox_migrations', outboxMigrations({ schema: OUTBOX.schema }));
    await migrate(db, 'projector_migrations', projectorMigrations);
  } finally {
    await db.destroy();
  }
  await pool.query(PUBLISHED_EVENTS_TABLE);
  for (const [name, statement] of SEEDS) {
    const started = performance.now();
    const { rowCount } = await pool.query(statement);
    log(`seeded ${name}: ${rowCount ?? 0} rows in ${Math.round(performance.now() - started)} ms`);
  }
  await pool.query('VACUUM (ANALYZE)');
  const { rows } = await pool.query<Record<string, string>>(
    `SELECT (SELECT count(*) FROM shop.outbox) AS "outboxRows",
            (SELECT count(*) FROM sluice.published_events) AS "publishedSendRows",
            (SELECT count(*) FROM sluice.parked_events) AS "parkedEvents",
            (SELECT count(*) FROM sluice.projection_checkpoints) AS "checkpoints",
            (SELECT count(*) FROM sluice.projection_applied_batches) AS "appliedBatches",
            (SELECT count(*) FROM sluice.operator_audit) AS "auditRows"`,
  );
  return Object.fromEntries(Object.entries(rows[0] ?? {}).map(([k, v]) => [k, Number(v)]));
}

// ---------------------------------------------------------------- measuring

/** One statement as PostgreSQL ran it. */
interface StatementTime {
  sql: string;
  pgMs: number;
}

type ExplainRow = { 'QUERY PLAN': [{ 'Planning Time': number; 'Execution Time': number }] };

/**
 * A pool whose `query` first runs the statement under EXPLAIN (ANALYZE) and records its
 * planning + execution time, then runs it for its rows. The console's reads use only
 * `pool.query(text, values)`.
 */
function explainingPool(pool: pg.Pool, times: StatementTime[]): pg.Pool {
  const query = async (text: string, values?: unknown[]) => {
    const explained = await pool.query<ExplainRow>(
      `EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) ${text}`,
      values,
    );
    const plan = explained.rows[0]?.['QUERY PLAN'][0];
    if (plan === undefined) throw new Error(`no plan for ${text}`);
    times.push({
      sql: text.replace(/\s+/g, ' ').trim(),
      pgMs: plan['Planning Time'] + plan['Execution Time'],
    });
    return pool.query(text, values);
  };
  return { query } as unknown as pg.Pool;
}

/** A screen's refresh: the console's reads for it; returns how many items it shows. */
type Refresh = (pool: pg.Pool) => Promise<number>;

function percentile(values: readonly number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? 0;
}

/** Warm-ups, then `runs` refreshes timed by PostgreSQL, then `runs` timed by the client. */
async function measure(pool: pg.Pool, refresh: Refresh) {
  let items = 0;
  for (let run = 0; run < WARM_UPS; run++) items = await refresh(pool);
  const pgMs: number[] = [];
  const byStatement = new Map<string, number[]>();
  let statements = 0;
  for (let run = 0; run < config.runs; run++) {
    const times: StatementTime[] = [];
    await refresh(explainingPool(pool, times));
    statements = times.length;
    pgMs.push(times.reduce((sum, time) => sum + time.pgMs, 0));
    for (const time of times)
      byStatement.set(time.sql, [...(byStatement.get(time.sql) ?? []), time.pgMs]);
  }
  const wallMs: number[] = [];
  for (let run = 0; run < config.runs; run++) {
    const started = performance.now();
    await refresh(pool);
    wallMs.push(performance.now() - started);
  }
  const [slowest, slowestMs] = [...byStatement]
    .map(([sql, ms]): [string, number] => [sql, percentile(ms, 0.5)])
    .reduce<[string, number]>((a, b) => (b[1] > a[1] ? b : a), ['', 0]);
  const max = Math.max(...pgMs);
  return {
    statements,
    items,
    pgMs: { p50: round(percentile(pgMs, 0.5)), max: round(max) },
    wallMs: { p50: round(percentile(wallMs, 0.5)) },
    goalMs: GOAL_MS,
    met: max < GOAL_MS,
    slowestStatement: { pgMsP50: round(slowestMs), sql: slowest.slice(0, 160) },
  };
}

// ---------------------------------------------------------------- the screens

/** Ids a journey can be asked for: of an event whose aggregate has parked events. */
async function journeyKeys(pool: pg.Pool) {
  const { rows } = await pool.query<
    Record<'event' | 'type' | 'aggregate' | 'correlation' | 'trace', string>
  >(
    `SELECT id::text AS event, aggregate_type AS type, aggregate_id AS aggregate,
            metadata->>'correlation_id' AS correlation,
            split_part(metadata->>'traceparent', '-', 2) AS trace
       FROM shop.outbox WHERE id = md5('event' || $1)::uuid`,
    [5 * AGGREGATES + 1005],
  );
  const keys = rows[0];
  if (keys === undefined) throw new Error('the journey event was not seeded');
  return keys;
}

/**
 * The aggregate's journey, summed up: its events, how many were found published, and their
 * stages by state. Versions 1–5 are applied and 6–10 parked in one projection, so a journey that
 * found less would measure less than a real one.
 */
async function journeyCheck(pool: pg.Pool, aggregateId: string) {
  const events = await findJourneys(
    { pool, topicPrefix: '', groupPrefix: '', outbox: OUTBOX },
    aggregateId,
  );
  const stages: Record<string, number> = {};
  for (const stage of events.flatMap((event) => event.projections))
    stages[stage.state] = (stages[stage.state] ?? 0) + 1;
  const published = events.filter((event) => event.published !== null).length;
  const ok = events.length === 10 && published === 10 && stages.applied === 5;
  return { events: events.length, published, stages, ok };
}

function screens(keys: Awaited<ReturnType<typeof journeyKeys>>) {
  const parked = (filter: ParkedFilter) => async (p: pg.Pool) => {
    const { groups, rows } = await readParkedPage(p, filter);
    return groups.length + rows.length;
  };
  const journey = (q: string) => async (p: pg.Pool) =>
    (await findJourneys({ pool: p, topicPrefix: '', groupPrefix: '', outbox: OUTBOX }, q)).length;
  const refreshes: Record<string, Refresh> = {
    // One sample serves /api/overview, /api/relay, /api/projections and the stream.
    sample: async (p) => {
      const reading = await collectPostgres({ pool: p, slot: 'sluice_relay', outbox: OUTBOX }, 30);
      if (reading.error !== undefined) throw new Error(`sample failed: ${reading.error}`);
      return (reading.outbox?.recentRows ?? 0) + reading.projections.length;
    },
    parked: parked({ limit: 100 }),
    parkedByProjection: parked({ projection: 'customer_orders', limit: 100 }),
    parkedByAggregate: parked({
      aggregateType: keys.type,
      aggregateId: keys.aggregate,
      limit: 100,
    }),
    parkedByErrorClass: parked({ errorClass: 'schema_invalid', limit: 100 }),
    parkedByRareErrorClass: parked({ errorClass: 'claim_check_missing', limit: 100 }),
    parkedByCommonErrorClass: parked({ errorClass: 'behind_parked', limit: 100 }),
    journeyByAggregateId: journey(keys.aggregate),
    journeyByEventId: journey(keys.event),
    journeyByCorrelationId: journey(keys.correlation),
    journeyByTraceId: journey(keys.trace),
    audit: async (p) => (await auditItems(p, 100)).length,
  };
  return refreshes;
}

// ---------------------------------------------------------------- main

let database: TestDatabase | undefined;
let pool: pg.Pool | undefined;

async function cleanup(): Promise<void> {
  await pool?.end().catch(() => undefined);
  pool = undefined;
  const dropping = database;
  database = undefined;
  await dropping
    ?.drop()
    .then(() => log(`dropped database ${dropping.name}`))
    .catch((error: unknown) => log(`dropping ${dropping.name}: ${errorMessage(error)}`));
}

cleanUpOnSignals(cleanup);

async function main() {
  database = await createTestDatabase(config.serverUrl, 'bench_console');
  log(`database ${database.name}`);
  pool = new pg.Pool({ connectionString: database.url, max: 10 });
  const seedStarted = performance.now();
  const rows = await seed(database.url, pool);
  const seedSeconds = round((performance.now() - seedStarted) / 1000);
  const keys = await journeyKeys(pool);
  const check = await journeyCheck(pool, keys.aggregate);
  if (!check.ok) log(`warning: the journey found less than was seeded: ${JSON.stringify(check)}`);
  const results: Record<string, Awaited<ReturnType<typeof measure>>> = {};
  for (const [name, refresh] of Object.entries(screens(keys))) {
    const result = await measure(pool, refresh);
    results[name] = result;
    log(`${name}: ${JSON.stringify(result.pgMs)} ms of PostgreSQL`);
  }
  const { rows: version } = await pool.query<{ server_version: string }>('SHOW server_version');
  return {
    benchmark: 'console-queries',
    goalMs: GOAL_MS,
    allMet: Object.values(results).every((result) => result.met),
    screens: results,
    journeyCheck: check,
    setup: { ...rows, seedSeconds, runs: config.runs, warmUps: WARM_UPS },
    postgres: version[0]?.server_version,
    timing: 'EXPLAIN (ANALYZE, TIMING OFF): planning + execution, summed per refresh',
  };
}

try {
  const result = await main();
  await cleanup();
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  if (!result.journeyCheck.ok) process.exitCode = 1;
} catch (error) {
  log(`failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  await cleanup();
  process.exitCode = 1;
}

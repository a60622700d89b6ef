// GET /api/journey: where each event is — committed in PostgreSQL, published to Kafka (from the
// relay's sluice.published_events), applied, parked or dead-lettered by each projection (from
// the projector's applied batches, checkpoints and parked events) — with each stage's latency.
import { Type } from '@sinclair/typebox';
import { topicFor } from '@sluice/contracts';
import type { FastifyInstance } from 'fastify';
import type pg from 'pg';
import {
  appliedTimes,
  checkpointRows,
  committedRows,
  parkedRows,
  publishedRows,
  type AppliedProbe,
  type CheckpointRow,
  type CommittedRow,
  type ParkedRow,
  type PublishedRow,
} from './journey-queries.js';
import type { JourneyEvent, JourneyProjection } from './bodies.js';

/** What the journey route reads: the database and the names the relay and projector use. */
export interface JourneyDeps {
  pool: pg.Pool;
  /** The relay's RELAY_TOPIC_PREFIX. */
  topicPrefix: string;
  /** The projector's PROJECTOR_GROUP_PREFIX. */
  groupPrefix: string;
  /** The outbox table. Default `shop.outbox`. */
  outbox?: { schema: string; table: string };
  /** Correlation and trace ids are searched among events of the last this many hours. Default 168. */
  searchHours?: number;
  /** `CONSOLE_TRACE_URL`: a trace's URL with `{traceId}` in it; empty or unset for none. */
  traceUrl?: string;
}

const TRACE_ID = /^[0-9a-f]{32}$/;

/** The URL of trace `traceId` by `template` (`CONSOLE_TRACE_URL`); null without either. */
export function traceUrlOf(template: string | undefined, traceId: string | null): string | null {
  if (template === undefined || template === '' || traceId === null || !TRACE_ID.test(traceId))
    return null;
  return template.replaceAll('{traceId}', traceId);
}

/** Parked reasons that only wait behind something else; every other reason was dead-lettered. */
const WAITING_REASONS = new Set(['version_gap', 'behind_parked', 'skipped']);

const JourneyQuery = Type.Object({ q: Type.String({ minLength: 1, maxLength: 200 }) });

/**
 * Registers `GET /api/journey?q=`: the events whose id, aggregate id, correlation id or trace id
 * is `q` (at most 200, in aggregate and version order), each with its stages.
 */
export function journeyRoutes(app: FastifyInstance, deps: JourneyDeps): void {
  app.get<{ Querystring: { q: string } }>(
    '/api/journey',
    { schema: { querystring: JourneyQuery } },
    async (request) => {
      const query = request.query.q.trim();
      return { query, events: await findJourneys(deps, query) };
    },
  );
}

/** The journeys of the events `q` names. */
export async function findJourneys(deps: JourneyDeps, q: string): Promise<JourneyEvent[]> {
  const outbox = deps.outbox ?? { schema: 'shop', table: 'outbox' };
  const committed = await committedRows(deps.pool, outbox, q, deps.searchHours ?? 168);
  if (committed.length === 0) return [];
  const topicOf = (row: CommittedRow) => topicFor(row.aggregate_type, deps.topicPrefix);
  const topics = [...new Set(committed.map(topicOf))];
  const [published, checkpoints] = await Promise.all([
    publishedRows(
      deps.pool,
      committed.map((row) => ({ id: row.id, topic: topicOf(row), occurredAt: row.occurred_at })),
    ),
    checkpointRows(deps.pool, topics),
  ]);
  const publishedById = new Map(published.map((row) => [row.event_id, row]));
  const events = committed.map((row) => ({
    row,
    topic: topicOf(row),
    at: publishedById.get(row.id),
  }));
  const stages = await projectionStages(deps.pool, events, checkpoints);
  return events.map((event, index) =>
    journeyOf(event.row, event.at, stages[index] ?? [], deps.traceUrl),
  );
}

function journeyOf(
  row: CommittedRow,
  published: PublishedRow | undefined,
  projections: JourneyProjection[],
  traceUrl: string | undefined,
): JourneyEvent {
  const committedAt = published?.committed_at ?? row.occurred_at;
  const traceId = row.traceparent?.split('-')[1] ?? null;
  return {
    eventId: row.id,
    type: row.type,
    aggregateType: row.aggregate_type,
    aggregateId: row.aggregate_id,
    version: Number(row.aggregate_version),
    correlationId: row.correlation_id,
    traceId,
    traceUrl: traceUrlOf(traceUrl, traceId),
    committed: { at: committedAt.toISOString(), lsn: published?.commit_lsn ?? null },
    published:
      published === undefined
        ? null
        : {
            topic: published.topic,
            partition: published.partition,
            offset: published.record_offset,
            at: published.published_at.toISOString(),
            latencyMs: latencyMs(committedAt, published.published_at),
          },
    projections,
  };
}

/** Clocks of different hosts disagree a little: a stage never took less than nothing. */
function latencyMs(from: Date, to: Date): number {
  return Math.max(0, to.getTime() - from.getTime());
}

/** An event found: its outbox row, its topic, and where it was published if it was. */
interface FoundEvent {
  row: CommittedRow;
  topic: string;
  at: PublishedRow | undefined;
}

/** Each event's stage in each active projection that consumes its topic, by event index. */
async function projectionStages(
  pool: pg.Pool,
  events: readonly FoundEvent[],
  checkpoints: readonly CheckpointRow[],
): Promise<JourneyProjection[][]> {
  const instances = [...new Set(checkpoints.map((row) => row.instance))];
  const located = events.flatMap(({ row, at }) => {
    if (at === undefined) return [];
    const { topic, partition, record_offset: offset } = at;
    return [{ type: row.aggregate_type, id: row.aggregate_id, topic, partition, offset }];
  });
  const parked =
    instances.length === 0 || located.length === 0
      ? []
      : await parkedRows(pool, instances, located);
  const plan = stagePlan(events, checkpoints, parked);
  const times = await appliedTimes(pool, plan.probes);
  return plan.stages.map((stages) =>
    stages.map((stage) => {
      const at = stage.probe === undefined ? undefined : times.get(stage.probe.index);
      if (stage.probe === undefined || at === undefined) return stage.result;
      return {
        projection: stage.result.projection,
        state: 'applied',
        at: at.toISOString(),
        latencyMs: latencyMs(stage.probe.publishedAt, at),
      };
    }),
  );
}

interface PlannedStage {
  result: JourneyProjection;
  /** The applied-batch lookup that tells when it was applied, and when it was published. */
  probe?: { index: number; publishedAt: Date };
}

/** An active generation consuming a topic, with its checkpoint per partition. */
interface Consumer {
  projection: string;
  generation: number;
  instance: string;
  next: Map<number, bigint>;
}

/**
 * Each event's stage per projection, as far as parked records and checkpoints tell, and the
 * applied-batch lookups still needed for the records a checkpoint has passed.
 */
function stagePlan(
  events: readonly FoundEvent[],
  checkpoints: readonly CheckpointRow[],
  parked: readonly ParkedRow[],
): { stages: PlannedStage[][]; probes: AppliedProbe[] } {
  const probes: AppliedProbe[] = [];
  const stages = events.map(({ row, topic, at }) => {
    return consumersOf(checkpoints, topic).map((generation): PlannedStage => {
      const pending: PlannedStage = {
        result: { projection: generation.projection, state: 'pending' },
      };
      if (at === undefined) return pending;
      const park = parked.find((p) => p.instance === generation.instance && holds(p, row, at));
      if (park !== undefined) return { result: parkedStage(generation.projection, park) };
      const next = generation.next.get(at.partition);
      if (next === undefined || next <= BigInt(at.record_offset)) return pending;
      const { projection } = generation;
      const { partition, record_offset: offset } = at;
      probes.push({ projection, generation: generation.generation, topic, partition, offset });
      // Past the checkpoint: applied; when, the batch rows tell (until the retention purges them).
      const probe = { index: probes.length - 1, publishedAt: at.published_at };
      return { result: { projection, state: 'applied' }, probe };
    });
  });
  return { stages, probes };
}

/** The active generations consuming `topic`, each with its checkpoint per partition. */
function consumersOf(checkpoints: readonly CheckpointRow[], topic: string): Consumer[] {
  const byInstance = new Map<string, Consumer>();
  for (const c of checkpoints) {
    if (c.topic !== topic) continue;
    const entry = byInstance.get(c.instance) ?? {
      projection: c.projection,
      generation: c.generation,
      instance: c.instance,
      next: new Map<number, bigint>(),
    };
    entry.next.set(c.partition, BigInt(c.next_offset));
    byInstance.set(c.instance, entry);
  }
  return [...byInstance.values()];
}

function holds(park: ParkedRow, row: CommittedRow, at: PublishedRow): boolean {
  if (park.aggregate_version !== null)
    return (
      park.aggregate_type === row.aggregate_type &&
      park.aggregate_id === row.aggregate_id &&
      park.aggregate_version === row.aggregate_version
    );
  return (
    park.topic === at.topic &&
    park.partition === at.partition &&
    park.record_offset === at.record_offset
  );
}

function parkedStage(projection: string, park: ParkedRow): JourneyProjection {
  const state = WAITING_REASONS.has(park.reason) ? 'parked' : 'dead_lettered';
  const reason = park.error === null ? park.reason : `${park.reason}: ${park.error}`;
  return { projection, state, reason };
}

// GET /api/projections: each projection's state, generations, parked and dead-lettered events,
// and its active generation's lag per partition (checkpoints against Kafka's end offsets).
import { deadLetterTopicFor } from '@sluice/contracts';
import type { History } from './history.js';
import type { ProjectionReading, ProjectorReading, Sample } from './sample.js';
import type { Thresholds } from './thresholds.js';
import type { PartitionLag, ProjectionState, ProjectionView } from './bodies.js';

/** Records behind at which a running projection counts as catching up. */
const CATCHING_UP_RECORDS = 100;

/** The topics a projection reads: its checkpoints' and those its projectors report lag for. */
export function topicsOf(
  reading: ProjectionReading | undefined,
  name: string,
  sample: Sample,
): string[] {
  const topics = new Set(reading?.checkpoints.map((c) => c.topic));
  for (const projector of sample.projectors) {
    for (const { labels } of projector.metrics?.samples('sluice_projector_consumer_lag', {
      projection: name,
    }) ?? []) {
      if (labels.topic !== undefined) topics.add(labels.topic);
    }
  }
  return [...topics].sort();
}

/** The active generation's partitions: checkpoint, end offset and lag. */
export function partitionsOf(
  reading: ProjectionReading | undefined,
  name: string,
  sample: Sample,
): PartitionLag[] {
  const active = reading?.generations.find((g) => g.state === 'active')?.instance ?? name;
  const partitions: PartitionLag[] = [];
  for (const topic of topicsOf(reading, name, sample)) {
    const ends = sample.kafka.endOffsets[topic] ?? [];
    ends.forEach((endOffset, partition) => {
      const checkpoint =
        reading?.checkpoints.find(
          (c) => c.instance === active && c.topic === topic && c.partition === partition,
        )?.nextOffset ?? null;
      partitions.push({
        topic,
        partition,
        checkpoint,
        endOffset,
        lag: Math.max(0, endOffset - (checkpoint ?? 0)),
      });
    });
  }
  return partitions;
}

function hostOf(name: string, projectors: readonly ProjectorReading[]) {
  return projectors.find((p) => p.reachable && p.hosted.some((h) => h.projection === name));
}

/** Whether the projection is behind and its checkpoints have not moved for the whole window. */
function progressStalled(name: string, history: History, windowMs: number): boolean {
  if (!history.covers(windowMs)) return false;
  const first = history.since(windowMs);
  const window = history.points().filter((point) => point.t >= (first?.t ?? 0));
  const progress = new Set(window.map((point) => point.projections[name]?.progress));
  return progress.size === 1 && window.every((point) => (point.projections[name]?.lag ?? 0) > 0);
}

/** The projection's state, and why when it is not simply running. */
export function projectionState(
  name: string,
  context: {
    sample: Sample;
    history: History;
    thresholds: Thresholds;
    lag: number;
    parked: number;
  },
): { state: ProjectionState; reason?: string } {
  const { sample, history, thresholds, lag, parked } = context;
  const host = hostOf(name, sample.projectors);
  if (host === undefined) {
    return { state: 'down', reason: 'no projector at CONSOLE_PROJECTOR_URLS answers for it' };
  }
  if (!host.ready) {
    return {
      state: 'stalled',
      reason: `projector ${host.url} is not ready: ${host.message ?? host.status ?? 'unknown'}`,
    };
  }
  if (progressStalled(name, history, thresholds.projectionStalledMs)) {
    return {
      state: 'stalled',
      reason: `${lag} records behind and no progress for ${thresholds.projectionStalledMs / 1000} s`,
    };
  }
  if (parked > 0) return { state: 'parked', reason: `${parked} aggregates parked` };
  const rebuild = host.hosted.find((h) => h.projection === name)?.rebuild;
  if (rebuild !== undefined) {
    return {
      state: 'rebuilding',
      reason: `generation ${rebuild.generation} is ${rebuild.behind} records behind`,
    };
  }
  if (lag >= CATCHING_UP_RECORDS) return { state: 'catching_up', reason: `${lag} records behind` };
  return { state: 'running' };
}

/** A projection's parked aggregates as its projectors count them (all of them, not a walk). */
function parkedAggregates(name: string, sample: Sample): number | undefined {
  const counts = sample.projectors.flatMap(
    (p) => p.metrics?.samples('sluice_projector_parked_aggregates', { projection: name }) ?? [],
  );
  return counts.length === 0 ? undefined : Math.max(...counts.map((s) => s.value));
}

/** Every projection the database or a projector knows, sorted by name. */
export function projectionNames(sample: Sample): string[] {
  const names = new Set(sample.database.projections.map((p) => p.projection));
  for (const projector of sample.projectors)
    for (const h of projector.hosted) names.add(h.projection);
  return [...names].sort();
}

/** The projections page's body. */
export function projectionsView(
  sample: Sample,
  history: History,
  thresholds: Thresholds,
  topicPrefix: string,
): { projections: ProjectionView[] } {
  const points = history.points();
  return {
    projections: projectionNames(sample).map((name) => {
      const reading = sample.database.projections.find((p) => p.projection === name);
      const partitions = partitionsOf(reading, name, sample);
      const lag = partitions.reduce((total, p) => total + p.lag, 0);
      const parked = parkedAggregates(name, sample) ?? reading?.parkedAggregates ?? 0;
      const rebuild = hostOf(name, sample.projectors)?.hosted.find(
        (h) => h.projection === name,
      )?.rebuild;
      return {
        name,
        ...projectionState(name, { sample, history, thresholds, lag, parked }),
        generations: (reading?.generations ?? []).map(({ generation, state }) => ({
          generation,
          state,
          ...(rebuild?.generation === generation ? { behind: rebuild.behind } : {}),
        })),
        parkedAggregates: parked,
        deadLetters: sample.kafka.sizes[deadLetterTopicFor(name, topicPrefix)] ?? 0,
        partitions,
        lagHistory: {
          t: points.map((point) => Math.round(point.t / 1000)),
          lag: points.map((point) => point.projections[name]?.lag ?? 0),
        },
      };
    }),
  };
}

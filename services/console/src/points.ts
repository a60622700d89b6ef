// The numbers of a sample the history keeps: slot positions, counters, histogram buckets and
// each projection's lag and progress.
import type { Point, ProjectionPoint } from './history.js';
import { partitionsOf, projectionNames } from './projections-view.js';
import type { Bucket } from './prometheus.js';
import { oldestUnpublishedSeconds } from './relay-view.js';
import type { Sample, ServiceReading } from './sample.js';

const sumOf = (values: readonly (number | undefined)[]) => {
  const known = values.filter((value) => value !== undefined);
  return known.length === 0 ? undefined : known.reduce((a, b) => a + b, 0);
};

function addBuckets(lists: readonly Bucket[][]): Bucket[] {
  const totals = new Map<number, number>();
  for (const list of lists)
    for (const { le, count } of list) totals.set(le, (totals.get(le) ?? 0) + count);
  return [...totals].map(([le, count]) => ({ le, count })).sort((a, b) => a.le - b.le);
}

const relayCounter = (relays: readonly ServiceReading[], name: string) =>
  sumOf(relays.map((relay) => relay.metrics?.sum(name)));

/** A projection's lag, progress and dead letters at `sample`. */
function projectionPointOf(sample: Sample, name: string): ProjectionPoint {
  const reading = sample.database.projections.find((p) => p.projection === name);
  const active = reading?.generations.find((g) => g.state === 'active')?.instance;
  const deadLettered = sumOf(
    sample.projectors.map((p) =>
      p.metrics?.sum('sluice_projector_events_total', {
        projection: name,
        outcome: 'dead_lettered',
      }),
    ),
  );
  return {
    lag: partitionsOf(reading, name, sample).reduce((total, p) => total + p.lag, 0),
    progress: (reading?.checkpoints ?? [])
      .filter((c) => c.instance === active)
      .reduce((total, c) => total + c.nextOffset, 0),
    ...(deadLettered === undefined ? {} : { deadLettered }),
  };
}

/** The numbers of `sample` the history keeps. */
export function pointOf(sample: Sample): Point {
  const slot = sample.database.slot;
  const outbox = sample.database.outbox;
  const projectors = sample.projectors;
  const applyLatency = (match: Record<string, string>) =>
    addBuckets(
      projectors.map(
        (p) => p.metrics?.buckets('sluice_projector_apply_latency_seconds', match) ?? [],
      ),
    );
  const names = projectionNames(sample);
  return {
    t: sample.at,
    lagBytes: slot?.lagBytes ?? null,
    lagSeconds: oldestUnpublishedSeconds(sample.relays) ?? null,
    confirmedLsn: slot?.confirmedLsn ?? null,
    currentLsn: slot?.currentLsn ?? null,
    ...definedOnly({
      published: relayCounter(sample.relays, 'sluice_relay_events_published_total'),
      sendRetries: relayCounter(sample.relays, 'sluice_relay_send_retries_total'),
      streamFailures: relayCounter(sample.relays, 'sluice_relay_stream_failures_total'),
      outboxPerSecond: outbox === undefined ? undefined : outbox.recentRows / outbox.windowSeconds,
    }),
    projections: Object.fromEntries(names.map((name) => [name, projectionPointOf(sample, name)])),
    relayLatency: Object.fromEntries(
      sample.relays.map((r) => [
        r.url,
        r.metrics?.buckets('sluice_relay_publish_latency_seconds') ?? [],
      ]),
    ),
    applyLatency: applyLatency({}),
    applyLatencyOf: Object.fromEntries(
      names.map((name) => [name, applyLatency({ projection: name })]),
    ),
  };
}

function definedOnly<T extends Record<string, number | undefined>>(values: T) {
  return Object.fromEntries(Object.entries(values).filter(([, v]) => v !== undefined)) as {
    [K in keyof T]?: number;
  };
}

// GET /api/relay: the slot, the relays' roles and latencies, the outbox's backlog, and trends.
import { History, type Point } from './history.js';
import { bucketsSince, quantile, type Bucket } from './prometheus.js';
import type { Sample, ServiceReading } from './sample.js';
import type { Thresholds } from './thresholds.js';
import type { RelayRole, RelayView } from './bodies.js';

/** Latency quantiles over this window, from histogram buckets' increase. */
export const LATENCY_WINDOW_MS = 5 * 60_000;

/** The `q` quantile in milliseconds of what a histogram observed over {@link LATENCY_WINDOW_MS}. */
export function windowQuantileMs(
  history: History,
  q: number,
  read: (point: Point) => Bucket[] | undefined,
): number | null {
  const latest = history.latest();
  if (latest === undefined) return null;
  const now = read(latest) ?? [];
  const earlier = history.since(LATENCY_WINDOW_MS);
  const before = earlier === undefined || earlier === latest ? [] : (read(earlier) ?? []);
  const seconds = quantile(q, bucketsSince(now, before));
  return seconds === null ? null : Math.round(seconds * 1000 * 10) / 10;
}

/** The relays' oldest unpublished transaction's age, in seconds (the largest any reports). */
export function oldestUnpublishedSeconds(relays: readonly ServiceReading[]): number | undefined {
  const ages = relays.flatMap(
    (r) => r.metrics?.sum('sluice_relay_oldest_unpublished_seconds') ?? [],
  );
  return ages.length === 0 ? undefined : Math.max(...ages);
}

/** Whether the slot's confirmed position stood still for the whole window while the WAL grew. */
export function confirmedStalled(history: History, windowMs: number): boolean {
  if (!history.covers(windowMs)) return false;
  const latest = history.latest();
  const first = history.since(windowMs);
  if (latest === undefined || first === undefined || latest.confirmedLsn === null) return false;
  const window = history.points().filter((point) => point.t >= first.t);
  return (
    window.every((point) => point.confirmedLsn === latest.confirmedLsn) &&
    (latest.lagBytes ?? 0) > 0 &&
    latest.currentLsn !== first.currentLsn
  );
}

function roleOf(relay: ServiceReading, history: History): RelayRole {
  const ackLatencyP99Ms = windowQuantileMs(history, 0.99, (point) => point.relayLatency[relay.url]);
  if (!relay.reachable) {
    return {
      url: relay.url,
      role: 'down',
      ackLatencyP99Ms,
      reason: relay.message ?? 'unreachable',
    };
  }
  if (relay.status === 'leading' || relay.status === 'standby') {
    return { url: relay.url, role: relay.status, ackLatencyP99Ms };
  }
  const reason = relay.message ?? `not ready (${relay.status ?? 'no status'})`;
  return {
    url: relay.url,
    role: relay.status === 'blocked' ? 'blocked' : 'down',
    ackLatencyP99Ms,
    reason,
  };
}

/** The relay page's body from the latest sample and the history. */
export function relayView(sample: Sample, history: History, thresholds: Thresholds): RelayView {
  const slot = sample.database.slot;
  const oldest = oldestUnpublishedSeconds(sample.relays) ?? null;
  const points = history.points();
  return {
    slot: {
      name: slot?.name ?? '',
      walStatus: slot?.walStatus ?? null,
      safeWalSizeBytes: slot?.safeWalSizeBytes ?? null,
      lagBytes: slot?.lagBytes ?? null,
      lagSeconds: oldest,
      confirmedLsn: slot?.confirmedLsn ?? null,
      currentLsn: slot?.currentLsn ?? '',
      confirmedStalled: confirmedStalled(history, thresholds.confirmedStalledMs),
    },
    heartbeatAgeSeconds: slot?.replyAgeSeconds ?? null,
    relays: sample.relays.map((relay) => roleOf(relay, history)),
    oldestUnpublishedAgeSeconds: oldest,
    unpublishedBacklog: sample.database.outbox?.unpublished ?? null,
    history: {
      t: points.map((point) => Math.round(point.t / 1000)),
      lagBytes: points.map((point) => point.lagBytes),
      lagSeconds: points.map((point) => point.lagSeconds),
    },
  };
}

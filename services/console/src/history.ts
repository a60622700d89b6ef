// What the trend charts and the windowed checks read: a few numbers per sample, for 30 minutes.
import type { Bucket } from './prometheus.js';

/** A projection's numbers at one sample. */
export interface ProjectionPoint {
  /** Records its active generation is behind the partitions' ends. */
  lag: number;
  /** The sum of its active generation's checkpoints: moves whenever it applies anything. */
  progress: number;
  /** `sluice_projector_events_total{outcome="dead_lettered"}` over its projectors. */
  deadLettered?: number;
}

/** The numbers of one sample the console keeps. */
export interface Point {
  /** Unix milliseconds. */
  t: number;
  lagBytes: number | null;
  lagSeconds: number | null;
  confirmedLsn: string | null;
  currentLsn: string | null;
  /** Counters summed over the relays; absent when no relay answered. */
  published?: number;
  sendRetries?: number;
  streamFailures?: number;
  /** Rows that occurred in the outbox's last window, per second. */
  outboxPerSecond?: number;
  projections: Record<string, ProjectionPoint>;
  /** `sluice_relay_publish_latency_seconds` per relay URL. */
  relayLatency: Record<string, Bucket[]>;
  /** `sluice_projector_apply_latency_seconds` over every projector and projection. */
  applyLatency: Bucket[];
  /** The same, per projection. */
  applyLatencyOf: Record<string, Bucket[]>;
}

/** The points of the last `windowMs`, oldest first. */
export class History {
  private readonly kept: Point[] = [];

  constructor(private readonly windowMs: number) {}

  add(point: Point): void {
    this.kept.push(point);
    while ((this.kept[0]?.t ?? point.t) < point.t - this.windowMs) this.kept.shift();
  }

  points(): readonly Point[] {
    return this.kept;
  }

  latest(): Point | undefined {
    return this.kept.at(-1);
  }

  /** The oldest point no older than `ms` before the latest one (the latest when alone). */
  since(ms: number): Point | undefined {
    const latest = this.latest();
    if (latest === undefined) return undefined;
    return this.kept.find((point) => point.t >= latest.t - ms);
  }

  /** Whether the points reach back `ms` before the latest one. */
  covers(ms: number): boolean {
    const first = this.kept[0];
    const latest = this.latest();
    return first !== undefined && latest !== undefined && latest.t - first.t >= ms;
  }
}

/**
 * The per-second rate of a counter between the point `ms` before the latest and the latest;
 * undefined with fewer than two readings. A counter that went down (a restart) counts from 0.
 */
export function rate(
  history: History,
  ms: number,
  read: (point: Point) => number | undefined,
): number | undefined {
  const latest = history.latest();
  const earlier = history.since(ms);
  if (latest === undefined || earlier === undefined || earlier === latest) return undefined;
  const now = read(latest);
  const before = read(earlier);
  if (now === undefined || before === undefined) return undefined;
  const increase = now >= before ? now - before : now;
  return increase / ((latest.t - earlier.t) / 1000);
}

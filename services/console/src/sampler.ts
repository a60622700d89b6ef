// Every CONSOLE_SAMPLE_MS: reads the services, PostgreSQL and Kafka, keeps 30 minutes of trends,
// and computes the bodies of /api/overview, /api/relay and /api/projections once for every reader.
import { deadLetterTopicFor } from '@sluice/contracts';
import { errorMessage } from '@sluice/errors';
import type { Logger } from 'pino';
import type pg from 'pg';
import { AlertEvaluator, alertRules } from './alerts.js';
import type { ActiveAlert, AlertRule, Overview, Projections, RelayView } from './bodies.js';
import { History } from './history.js';
import type { KafkaCollector } from './kafka-collector.js';
import { latencyOf, stagesOf } from './overview.js';
import { pointOf } from './points.js';
import { collectPostgres } from './postgres-collector.js';
import { projectionNames, projectionsView, topicsOf } from './projections-view.js';
import { oldestUnpublishedSeconds, relayView } from './relay-view.js';
import type { Sample } from './sample.js';
import { collectProjector, collectService } from './service-collector.js';
import type { Thresholds } from './thresholds.js';

/** Trends and windows reach back this far. */
export const HISTORY_MS = 30 * 60_000;

/** What the sampler reads and how often. */
export interface SamplerOptions {
  pool: pg.Pool;
  kafka: KafkaCollector;
  logger: Logger;
  sampleMs: number;
  slot: string;
  outbox: { schema: string; table: string };
  relayUrls: readonly string[];
  projectorUrls: readonly string[];
  apiUrls: readonly string[];
  topicPrefix: string;
  /** Names stages show for the Kafka cluster. */
  kafkaName: string;
  thresholds: Thresholds;
  /** Headers for the projectors' operations API (a service token), fresh for each sample. */
  projectorHeaders(): Promise<Record<string, string>>;
}

/** The bodies computed from one sample. */
export interface Snapshot {
  overview: Overview;
  relay: RelayView;
  projections: Projections;
  alerts: ActiveAlert[];
}

/** Samples on a timer; see {@link SamplerOptions}. */
export class Sampler {
  private readonly history = new History(HISTORY_MS);
  private readonly alerts = new AlertEvaluator();
  private readonly listeners = new Set<(snapshot: Snapshot) => void>();
  private current: Snapshot | undefined;
  private lastSample: Sample | undefined;
  private first: Promise<Snapshot> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private round: Promise<unknown> = Promise.resolve();
  private stopped = false;

  constructor(private readonly options: SamplerOptions) {}

  /** Samples now, then every `sampleMs` until {@link stop}. */
  start(): void {
    this.first = this.sampleAndSchedule();
  }

  /** The latest bodies; waits for the first sample. */
  async snapshot(): Promise<Snapshot> {
    if (this.current !== undefined) return this.current;
    this.first ??= this.sampleAndSchedule();
    return this.first;
  }

  /** The rules of GET /api/alerts: every alert, whether the console evaluates it or not. */
  rules(): AlertRule[] {
    return alertRules();
  }

  /** The base URL of a projector that answered for `projection` at the latest sample. */
  async projectorFor(projection: string): Promise<string | undefined> {
    await this.snapshot().catch(() => undefined);
    return this.lastSample?.projectors.find(
      (p) => p.reachable && p.hosted.some((h) => h.projection === projection),
    )?.url;
  }

  /** Calls `listener` with every new snapshot; returns the unsubscribe function. */
  subscribe(listener: (snapshot: Snapshot) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Stops sampling, once the round in progress (if any) has finished. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.round.catch(() => undefined);
  }

  private async sampleAndSchedule(): Promise<Snapshot> {
    const round = this.sample();
    this.round = round;
    try {
      return await round;
    } finally {
      if (!this.stopped)
        this.timer = setTimeout(
          () => void this.sampleAndSchedule().catch(() => undefined),
          this.options.sampleMs,
        );
    }
  }

  private async sample(): Promise<Snapshot> {
    try {
      const sample = await this.collect();
      this.lastSample = sample;
      this.history.add(pointOf(sample));
      const snapshot = this.snapshotOf(sample);
      this.current = snapshot;
      for (const listener of this.listeners) listener(snapshot);
      return snapshot;
    } catch (error) {
      this.options.logger.error({ err: error }, `sampling failed: ${errorMessage(error)}`);
      throw error;
    }
  }

  private async collect(): Promise<Sample> {
    const o = this.options;
    const at = Date.now();
    const headers = await o.projectorHeaders();
    const [relays, projectors, apis] = await Promise.all([
      Promise.all(o.relayUrls.map((url) => collectService(url))),
      Promise.all(o.projectorUrls.map((url) => collectProjector(url, headers))),
      Promise.all(o.apiUrls.map((url) => collectService(url))),
    ]);
    const database = await collectPostgres(
      { pool: o.pool, slot: o.slot, outbox: o.outbox },
      oldestUnpublishedSeconds(relays),
    );
    const partial: Sample = {
      at,
      database,
      kafka: { endOffsets: {}, sizes: {} },
      relays,
      projectors,
      apis,
    };
    const names = projectionNames(partial);
    const readings = (name: string) => database.projections.find((p) => p.projection === name);
    const topics = new Set(names.flatMap((name) => topicsOf(readings(name), name, partial)));
    const kafka = await o.kafka.collect(
      [...topics],
      names.map((name) => deadLetterTopicFor(name, o.topicPrefix)),
    );
    return { ...partial, kafka };
  }

  private snapshotOf(sample: Sample): Snapshot {
    const { history } = this;
    const { thresholds } = this.options;
    const projections = projectionsView(sample, history, thresholds, this.options.topicPrefix);
    const alerts = this.alerts.evaluate(
      { sample, history, projections: projections.projections },
      sample.at,
    );
    const stages = stagesOf({
      sample,
      history,
      thresholds,
      names: {
        outbox: `${this.options.outbox.schema}.${this.options.outbox.table}`,
        slot: this.options.slot,
        kafka: this.options.kafkaName,
      },
      projections: projections.projections,
    });
    return {
      overview: {
        at: new Date(sample.at).toISOString(),
        stages,
        latency: latencyOf(history),
        alerts,
      },
      relay: relayView(sample, history, thresholds),
      projections,
      alerts,
    };
  }
}

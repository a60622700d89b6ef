import type { createKafka } from '@sluice/kafka';
import type { createLogger, Tracing } from '@sluice/service-kit';
import type { PublishedEventsRecorder } from '@sluice/relay';
import type pg from 'pg';
import type { RelayConfig } from './config.js';
import type { RelayMetrics } from './metrics.js';

/** What the relay's parts share, made once by `main.ts`. */
export interface RelayContext {
  config: RelayConfig;
  logger: ReturnType<typeof createLogger>;
  metrics: RelayMetrics;
  /** Heartbeats, slot checks and claim checks. */
  pool: pg.Pool;
  kafka: ReturnType<typeof createKafka>;
  /** Where each acknowledged event went, for the event journey. */
  journey: PublishedEventsRecorder;
  /** Traces each event's create and send; undefined when tracing is off. */
  tracer: Tracing['tracer'];
}

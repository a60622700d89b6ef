import { createPublishedEventsRecorder, type PublishedEventsRecorder } from '@sluice/relay';
import type { RelayContext } from './context.js';

/** At most one warning per kind of journey failure in this period. */
const WARN_EVERY_MS = 60_000;

/**
 * Records in `sluice.published_events` where each acknowledged event went, for
 * `RELAY_JOURNEY_RETENTION_HOURS`. A failed write is counted and logged (once a minute at most),
 * never retried, and never holds back publishing.
 */
export function createRelayJourney({
  config,
  logger,
  metrics,
  pool,
}: Omit<RelayContext, 'journey' | 'kafka' | 'tracer'>): PublishedEventsRecorder {
  const lastWarned = new Map<string, number>();
  const warn = (kind: string, fields: object, message: string) => {
    const now = Date.now();
    if (now - (lastWarned.get(kind) ?? -Infinity) < WARN_EVERY_MS) return;
    lastWarned.set(kind, now);
    logger.warn(fields, message);
  };
  return createPublishedEventsRecorder({
    pool,
    retentionHours: config.RELAY_JOURNEY_RETENTION_HOURS,
    onWriteFailed(error, records) {
      metrics.journeyRecordsLost('write_failed', records);
      warn(
        'write',
        { err: error, records },
        'recording published events for the journey failed; publishing goes on',
      );
    },
    onDropped(records) {
      metrics.journeyRecordsLost('dropped', records);
      warn(
        'dropped',
        { records },
        'journey writes fall behind publishing; some published events are not recorded',
      );
    },
    onPurgeFailed: (error) =>
      warn(
        'purge',
        { err: error },
        'deleting old published events failed; retrying at the next sweep',
      ),
  });
}

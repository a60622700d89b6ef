// What the projector reports as it works, turned into metrics and log lines for an operator.
import { isSluiceError } from '@sluice/errors';
import type { BatchReport, BatchResult, ProjectorHooks } from '@sluice/projector';
import type { Logger } from 'pino';
import type { ProjectorMetrics } from './metrics.js';

/** What a batch tells an operator: gaps, dead letters, events found below a checkpoint. */
function logBatch(logger: Logger, { projection, partitions, result }: BatchReport): void {
  const where = partitions.map((p) => `${p.topic}:${p.partition}`);
  if (result.gaps > 0)
    logger.error(
      { projection, partitions: where, gaps: result.gaps },
      'version gap: aggregate parked',
    );
  if (result.deadLettered > 0)
    logger.warn(
      { projection, partitions: where, deadLettered: result.deadLettered },
      'events dead-lettered',
    );
  logTracedRecords(logger, projection, result);
  if (result.belowCheckpoint > 0)
    logger.error(
      { projection, belowCheckpoint: result.belowCheckpoint },
      'events never applied were found below a checkpoint (the topic was recreated or rewritten); applied them',
    );
}

/** A line per traced record set aside, joined to its `process` span by `trace_id` and `span_id`. */
function logTracedRecords(logger: Logger, projection: string, result: BatchResult): void {
  for (const { record, outcome, span } of result.outcomes ?? []) {
    if (span === undefined || outcome === 'applied' || outcome === 'duplicate') continue;
    if (outcome === 'skipped') continue;
    const { topic, partition, offset } = record;
    logger.warn(
      {
        projection,
        outcome,
        event: { id: record.headers.ce_id, topic, partition, offset: String(offset) },
        trace_id: span.traceId,
        span_id: span.spanId,
      },
      `event ${outcome.replace('_', '-')}`,
    );
  }
}

/**
 * The projector's hooks: metrics, log lines, and `crashed` for a consumer kafkajs will not
 * restart (the process should exit, so that a new one starts it).
 */
export function projectorHooks(
  logger: Logger,
  metrics: ProjectorMetrics,
  crashed: () => void,
): ProjectorHooks {
  return {
    batch(report) {
      metrics.batch(report);
      // A rebuild replays history: what it meets was reported when it was live.
      if (!report.building) logBatch(logger, report);
    },
    offsets(projection, generation, notice) {
      metrics.offsetNotice(projection, notice);
      logger.error(
        {
          projection,
          generation,
          topic: notice.topic,
          partition: notice.partition,
          from: notice.from.toString(),
          to: notice.to.toString(),
        },
        notice.kind === 'gap'
          ? 'Kafka no longer holds records this generation had not applied: offset gap recorded (GET /offset-gaps; accept it or rebuild)'
          : 'the partition ends below its checkpoint (a recreated topic): the checkpoint went back; applied events are kept out by their versions',
      );
    },
    crashed(projection, generation, error) {
      logger.fatal({ projection, generation, err: error }, 'consumer stopped for good; exiting');
      crashed();
    },
    generation(projection, generation, change) {
      if (change === 'stopped') metrics.generationStopped();
      logger.info({ projection, generation, change }, `generation ${change}`);
    },
    topicDurability: (topic, problem) =>
      logger.warn(
        { topic, problem },
        `topic ${topic} cannot keep every acknowledged event: ${problem}`,
      ),
    journeyPurgeFailed: (error) =>
      logger.warn(
        { err: error },
        'deleting old applied batches failed; retrying at the next sweep',
      ),
    failed: (projection, error) =>
      isSluiceError(error, 'consumer_group_delete_failed')
        ? logger.warn({ projection, err: error }, 'retired consumer groups kept; will try again')
        : logger.error({ projection, err: error }, 'batch failed; it will be retried'),
  };
}

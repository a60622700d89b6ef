import {
  createKafkaSink,
  createPgClaimCheckStore,
  isUnderReplicated,
  type KafkaSink,
  type PublishBlock,
} from '@sluice/relay';
import type { RelayContext } from './context.js';

/** What an operator reads in the log and in /readyz: which event, why, what happens now. */
export function describeBlock(block: PublishBlock): string {
  const { id, type, aggregateType, aggregateId, aggregateVersion } = block.event;
  const event = `event ${id} (${type}, ${aggregateType} ${aggregateId} v${aggregateVersion}) to ${block.topic}`;
  switch (block.reason) {
    case 'programming_error':
      return `Sending ${event} fails with a programming error; retrying, nothing after it is published until it goes out`;
    case 'rejected':
      return `Kafka refuses ${event}; retrying until the topic or the relay's configuration is fixed, nothing after it is published until then`;
    case 'stalled':
      return `Sending ${event} has not succeeded since ${block.since.toISOString()}; retrying`;
  }
}

/** A Kafka sink configured from the relay's settings, logging and counting what goes wrong. */
export function createRelaySink(context: RelayContext): KafkaSink {
  const { config, logger, metrics, pool, kafka, journey, tracer } = context;
  return createKafkaSink({
    kafka,
    source: config.RELAY_EVENT_SOURCE,
    topicPrefix: config.RELAY_TOPIC_PREFIX,
    partitions: config.RELAY_TOPIC_PARTITIONS,
    replicationFactor: config.RELAY_TOPIC_REPLICATION_FACTOR,
    minInsyncReplicas: config.RELAY_TOPIC_MIN_INSYNC_REPLICAS,
    onDurabilityProblem(topic, problem) {
      metrics.topicDurabilityProblem(topic);
      logger.warn(
        { topic, problem },
        `topic ${topic} cannot keep every acknowledged event: ${problem}`,
      );
    },
    compressAboveBytes: config.RELAY_COMPRESS_ABOVE_BYTES,
    compression: config.RELAY_COMPRESSION,
    maxRecordBytes: config.RELAY_MAX_RECORD_BYTES,
    claimChecks: createPgClaimCheckStore(pool),
    blockedRetryMaxMs: config.RELAY_BLOCKED_RETRY_MAX_MS,
    stalledAfterMs: config.RELAY_STALLED_AFTER_MS,
    tracer,
    ...(config.RELAY_JOURNEY_RETENTION_HOURS > 0
      ? { onAcknowledged: (records, at) => journey.record(records, at) }
      : {}),
    onSendFailed(failure, block) {
      metrics.sendFailed(failure.reason, isUnderReplicated(failure.error));
      const { error, reason, event, topic, attempt, retryInMs, since, span } = failure;
      const fields = {
        err: error,
        reason,
        event,
        topic,
        attempt,
        retryInMs,
        since,
        ...(span === undefined ? {} : { trace_id: span.traceId, span_id: span.spanId }),
      };
      const message = 'Kafka send failed; retrying with a fresh producer';
      if (block === undefined) logger.warn(fields, message);
      else
        logger.error({ ...fields, reason: block.reason, blocked: describeBlock(block) }, message);
    },
    onStalled: (block) => logger.error(block, describeBlock(block)),
    onRecovered(since, failedAttempts) {
      metrics.sendsRecovered();
      const stuckForMs = Date.now() - since.getTime();
      logger.info({ failedAttempts, stuckForMs }, 'Kafka sends succeed again');
    },
    onClaimCheckFallback(event, topic, error) {
      logger.warn(
        { err: error, event, topic },
        'Kafka refused a record as too large for its topic; sending it as a claim check',
      );
    },
  });
}

import {
  SpanAttribute,
  SpanKind,
  contextOf,
  kafkaAttributes,
  spanContextOf,
  type Attributes,
  type ProcessOutcome,
  type SpanContext,
  type Tracer,
} from '@sluice/tracing';
import type { Classified } from './classify.js';
import type { IncomingRecord } from './records.js';

/** What a batch did with one of its records. */
export interface RecordOutcome {
  record: IncomingRecord;
  outcome: ProcessOutcome;
  /** Its `process` span, once drawn and recorded: log lines about the record name it. */
  span?: SpanContext;
}

/** Each record's outcome: dead-lettered, parked (a gap named so), applied, skipped, or a duplicate. */
export function outcomesOf(
  records: readonly IncomingRecord[],
  sorted: Classified,
  applied: ReadonlySet<IncomingRecord>,
): RecordOutcome[] {
  const lettered = new Set(sorted.letters.map((letter) => letter.record));
  const parked = new Map(sorted.parks.map((park) => [park.record, park.reason]));
  return records.map((record) => {
    const reason = parked.get(record);
    const outcome: ProcessOutcome = lettered.has(record)
      ? 'dead_lettered'
      : reason === 'version_gap'
        ? 'gap'
        : reason !== undefined
          ? 'parked'
          : applied.has(record)
            ? record.skipped === undefined
              ? 'applied'
              : 'skipped'
            : 'duplicate';
    return { record, outcome };
  });
}

const COMMIT = { [SpanAttribute.dbSystem]: 'postgresql', [SpanAttribute.dbOperation]: 'COMMIT' };

/** How the process spans of one committed transaction are drawn. */
export interface ProcessTiming {
  /** When the transaction began. */
  startedAt: number;
  /** When its work was done and COMMIT was sent; without it no commit span is drawn. */
  committingAt?: number;
  consumerGroup?: string | undefined;
  /** Records applied again by an operator: new traces, linked to the records' own. */
  redrive?: boolean;
}

function attributesOf(record: IncomingRecord, projection: string, timing: ProcessTiming) {
  const { headers } = record;
  const attributes: Attributes = kafkaAttributes('process', record.topic, {
    [SpanAttribute.messagingPartition]: String(record.partition),
    [SpanAttribute.kafkaOffset]: Number(record.offset),
    [SpanAttribute.projection]: projection,
  });
  if (timing.consumerGroup !== undefined)
    attributes[SpanAttribute.messagingConsumerGroup] = timing.consumerGroup;
  if (headers.ce_id !== undefined) attributes[SpanAttribute.messagingMessageId] = headers.ce_id;
  if (headers.ce_type !== undefined) attributes[SpanAttribute.cloudEventType] = headers.ce_type;
  if (record.key !== null) attributes[SpanAttribute.aggregateId] = record.key;
  const version = Number(headers.ce_aggregateversion);
  if (Number.isSafeInteger(version)) attributes[SpanAttribute.aggregateVersion] = version;
  if (timing.redrive === true) attributes[SpanAttribute.redrive] = true;
  return attributes;
}

/**
 * A `process <topic>` span per record of a committed transaction (OpenTelemetry's messaging
 * conventions, with the projection and the outcome): a child of the record's `traceparent` (the
 * relay's create span; `ce_traceparent` without one), from the transaction's start to the end of
 * its commit, with a `commit` event where the commit began. A redrive's spans start new traces
 * that link to the records' own.
 */
export function processSpans(
  tracer: Tracer,
  projection: string,
  outcomes: readonly RecordOutcome[],
  timing: ProcessTiming,
): void {
  const committedAt = Date.now();
  for (const item of outcomes) {
    const { record, outcome } = item;
    const origin = record.headers.traceparent ?? record.headers.ce_traceparent;
    const linked = timing.redrive === true ? spanContextOf(origin) : undefined;
    const span = tracer.startSpan(
      `process ${record.topic}`,
      {
        kind: SpanKind.CONSUMER,
        startTime: timing.startedAt,
        links: linked === undefined ? [] : [{ context: linked }],
      },
      timing.redrive === true ? contextOf(undefined) : contextOf(origin),
    );
    // Attributes and the commit span only for spans kept: most are not, when sampling.
    if (!span.isRecording()) continue;
    span.setAttributes(attributesOf(record, projection, timing));
    span.setAttribute(SpanAttribute.outcome, outcome);
    item.span = span.spanContext();
    // The view's commit: an event, not a span of its own, which would double what is exported.
    if (timing.committingAt !== undefined) span.addEvent('commit', COMMIT, timing.committingAt);
    span.end(committedAt);
  }
}

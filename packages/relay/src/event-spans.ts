import type { SerializedEvent } from '@sluice/contracts';
import {
  SpanAttribute,
  SpanKind,
  contextOf,
  kafkaAttributes,
  trace,
  type Attributes,
  type SpanContext,
  type Tracer,
} from '@sluice/tracing';
import type { PublishedRecord } from './event-sink.js';

/** An event's record on its way out, as its spans need it. */
interface TracedRecord {
  topic: string;
  event: SerializedEvent;
  /** Its `create` span, when that is recorded. */
  span?: SpanContext | undefined;
}

/**
 * Opens and ends an event's `create <topic>` span: a child of the context stored with the event,
 * starting at its transaction's commit time (now, for a snapshot's rows), ending as its record is
 * made. Returns the span's context, for the record's `traceparent` header and the send's links.
 */
export function createSpan(
  tracer: Tracer,
  record: { topic: string; event: SerializedEvent; commitLsn: string; commitTime?: Date },
  source: string,
): { context: SpanContext; recording: boolean } {
  const { topic, event } = record;
  const span = tracer.startSpan(
    `create ${topic}`,
    { kind: SpanKind.PRODUCER, startTime: record.commitTime ?? new Date() },
    contextOf(event.metadata.traceparent),
  );
  // Attributes only for spans kept: most are not, when sampling.
  if (span.isRecording()) {
    span.setAttributes(
      kafkaAttributes('create', topic, {
        [SpanAttribute.messagingMessageId]: event.id,
        [SpanAttribute.kafkaMessageKey]: event.aggregateId,
        [SpanAttribute.cloudEventId]: event.id,
        [SpanAttribute.cloudEventType]: event.type,
        [SpanAttribute.cloudEventSource]: source,
        [SpanAttribute.aggregateType]: event.aggregateType,
        [SpanAttribute.aggregateId]: event.aggregateId,
        [SpanAttribute.aggregateVersion]: event.aggregateVersion,
        [SpanAttribute.commitLsn]: record.commitLsn,
      }),
    );
  }
  const recording = span.isRecording();
  span.end();
  return { context: span.spanContext(), recording };
}

/**
 * The `send <topic>` spans of an acknowledged send: one per trace and partition among its
 * recorded events, a child of the first of their `create` spans and linking all of them, from
 * the send's first attempt to its acknowledgement. `located` gives partitions and offsets.
 */
export function sendSpans(
  tracer: Tracer,
  sent: readonly TracedRecord[],
  located: readonly PublishedRecord[] | undefined,
  startedAt: number,
): void {
  const groups = new Map<string, { first: number; items: number[] }>();
  sent.forEach((item, index) => {
    if (item.span === undefined) return;
    const key = `${item.topic}/${located?.[index]?.partition ?? ''}/${item.span.traceId}`;
    const group = groups.get(key);
    if (group === undefined) groups.set(key, { first: index, items: [index] });
    else group.items.push(index);
  });
  const endedAt = new Date();
  for (const { first, items } of groups.values()) {
    const head = sent[first];
    if (head?.span === undefined) continue;
    const at = located?.[first];
    const attributes: Attributes = kafkaAttributes('send', head.topic, {
      [SpanAttribute.messagingBatchCount]: items.length,
      'sluice.send.records': sent.length,
      ...(at === undefined
        ? {}
        : {
            [SpanAttribute.messagingPartition]: String(at.partition),
            [SpanAttribute.kafkaOffset]: Number(at.offset),
          }),
    });
    const links = items.flatMap((index) => {
      const span = sent[index]?.span;
      return span === undefined ? [] : [{ context: span }];
    });
    tracer
      .startSpan(
        `send ${head.topic}`,
        { kind: SpanKind.PRODUCER, startTime: startedAt, attributes, links },
        trace.setSpanContext(contextOf(undefined), head.span),
      )
      .end(endedAt);
  }
}

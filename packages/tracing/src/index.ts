import {
  ROOT_CONTEXT,
  SpanStatusCode,
  TraceFlags,
  trace,
  type Attributes,
  type Context,
  type Span,
  type SpanContext,
  type SpanOptions,
  type Tracer,
} from '@opentelemetry/api';

export {
  SpanKind,
  SpanStatusCode,
  context,
  trace,
  type Attributes,
  type Context,
  type Link,
  type Span,
  type SpanContext,
  type SpanOptions,
  type Tracer,
} from '@opentelemetry/api';

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const ZEROS = /^0+$/;

/**
 * The span context a W3C `traceparent` names; undefined unless it is a valid version-00 one
 * (all-zero ids are invalid).
 *
 * @example spanContextOf('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01')
 */
export function spanContextOf(traceparent: string | undefined): SpanContext | undefined {
  const match = traceparent === undefined ? null : TRACEPARENT.exec(traceparent);
  const [, traceId, spanId, flags] = match ?? [];
  if (traceId === undefined || spanId === undefined || flags === undefined) return undefined;
  if (ZEROS.test(traceId) || ZEROS.test(spanId)) return undefined;
  return { traceId, spanId, traceFlags: parseInt(flags, 16) & TraceFlags.SAMPLED, isRemote: true };
}

/** A context whose parent span is the one `traceparent` names; the root context otherwise. */
export function contextOf(traceparent: string | undefined): Context {
  const parent = spanContextOf(traceparent);
  return parent === undefined ? ROOT_CONTEXT : trace.setSpanContext(ROOT_CONTEXT, parent);
}

/** The W3C `traceparent` of a span. */
export function traceparentOf(span: SpanContext): string {
  const flags = (span.traceFlags & TraceFlags.SAMPLED).toString(16).padStart(2, '0');
  return `00-${span.traceId}-${span.spanId}-${flags}`;
}

/**
 * Fields that join a log line to the span active where it is written (the names OpenTelemetry's
 * log correlation uses); none outside a span. For a logger's `mixin`.
 */
export function activeSpanLogFields(): { trace_id?: string; span_id?: string } {
  const span = trace.getActiveSpan();
  if (span === undefined) return {};
  const { traceId, spanId } = span.spanContext();
  return { trace_id: traceId, span_id: spanId };
}

/** Attribute names of OpenTelemetry's messaging, database, HTTP and CloudEvents conventions. */
export const SpanAttribute = {
  messagingSystem: 'messaging.system',
  messagingOperationName: 'messaging.operation.name',
  messagingOperationType: 'messaging.operation.type',
  messagingDestination: 'messaging.destination.name',
  messagingPartition: 'messaging.destination.partition.id',
  messagingConsumerGroup: 'messaging.consumer.group.name',
  messagingMessageId: 'messaging.message.id',
  messagingBatchCount: 'messaging.batch.message_count',
  kafkaOffset: 'messaging.kafka.offset',
  kafkaMessageKey: 'messaging.kafka.message.key',
  cloudEventId: 'cloudevents.event_id',
  cloudEventType: 'cloudevents.event_type',
  cloudEventSource: 'cloudevents.event_source',
  cloudEventSubject: 'cloudevents.event_subject',
  dbSystem: 'db.system.name',
  dbOperation: 'db.operation.name',
  httpMethod: 'http.request.method',
  httpRoute: 'http.route',
  httpStatus: 'http.response.status_code',
  urlPath: 'url.path',
  urlScheme: 'url.scheme',
  aggregateType: 'sluice.aggregate.type',
  aggregateId: 'sluice.aggregate.id',
  aggregateVersion: 'sluice.aggregate.version',
  commitLsn: 'sluice.commit_lsn',
  projection: 'sluice.projection',
  outcome: 'sluice.outcome',
  redrive: 'sluice.redrive',
} as const;

/** What a projector did with a record, as its `process` span's `sluice.outcome` says. */
export type ProcessOutcome =
  'applied' | 'duplicate' | 'gap' | 'parked' | 'dead_lettered' | 'skipped';

/** The attributes every Kafka span of an event's journey carries. */
export function kafkaAttributes(
  operation: 'create' | 'send' | 'process',
  topic: string,
  more: Attributes = {},
): Attributes {
  return {
    [SpanAttribute.messagingSystem]: 'kafka',
    [SpanAttribute.messagingOperationName]: operation,
    [SpanAttribute.messagingOperationType]: operation,
    [SpanAttribute.messagingDestination]: topic,
    ...more,
  };
}

/**
 * Runs `work` in a new span, active while it runs (a child of the active one), and ends it: an
 * error it throws marks the span failed and is thrown on. Without a tracer, just runs `work`.
 */
export async function inSpan<T>(
  tracer: Tracer | undefined,
  name: string,
  options: SpanOptions,
  work: (span: Span | undefined) => Promise<T>,
): Promise<T> {
  if (tracer === undefined) return work(undefined);
  return tracer.startActiveSpan(name, options, async (span) => {
    try {
      return await work(span);
    } catch (error) {
      span.recordException(error instanceof Error ? error : String(error));
      span.setStatus({ code: SpanStatusCode.ERROR, message: errorText(error) });
      throw error;
    } finally {
      span.end();
    }
  });
}

const errorText = (error: unknown): string =>
  (error instanceof Error ? error.message : String(error)).slice(0, 200);

/**
 * An exemplar's labels naming the trace of `traceparent`, when it was sampled (a tracing
 * backend holds it); undefined otherwise.
 */
export function traceExemplar(traceparent: string | undefined): { trace_id: string } | undefined {
  const span = spanContextOf(traceparent);
  return span !== undefined && (span.traceFlags & TraceFlags.SAMPLED) !== 0
    ? { trace_id: span.traceId }
    : undefined;
}

import type { SerializedEvent } from '@sluice/contracts';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  TraceIdRatioBasedSampler,
  ParentBasedSampler,
  AlwaysOnSampler,
  type Sampler,
} from '@opentelemetry/sdk-trace-base';
import { describe, expect, it } from 'vitest';
import type { PublishedRecord } from './event-sink.js';
import { sendSpans } from './event-spans.js';
import { Lsn } from './lsn.js';
import { RecordEncoder } from './outgoing-records.js';

function tracing(sampler: Sampler = new ParentBasedSampler({ root: new AlwaysOnSampler() })) {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({
    sampler,
    spanProcessors: [new SimpleSpanProcessor(exporter)],
  });
  return { exporter, tracer: provider.getTracer('test') };
}

const ORIGIN_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';

function event(version: number, traceparent?: string): SerializedEvent {
  return {
    id: `0190f0a0-0000-7000-8000-00000000000${version}`,
    type: 'cart.item_added.v1',
    aggregateType: 'cart',
    aggregateId: 'c1',
    aggregateVersion: version,
    occurredAt: '2026-11-30T12:00:00.000Z',
    payloadJson: '{}',
    metadata: traceparent === undefined ? {} : { traceparent },
  };
}

describe('create spans', () => {
  it('start at the commit time, as children of the stored context; the record carries them', () => {
    const { exporter, tracer } = tracing();
    const encoder = new RecordEncoder({ kafka: {} as never, source: '/shop-api', tracer });
    const commitTime = new Date('2026-11-30T12:00:01.000Z');
    const origin = `00-${ORIGIN_TRACE}-00f067aa0ba902b7-01`;
    const [record] = encoder.encode([
      { event: event(1, origin), commitLsn: Lsn.parse('16/B374D848'), commitTime },
    ]);
    const [span] = exporter.getFinishedSpans();
    expect(span?.name).toBe('create outbox.event.cart');
    expect(span?.parentSpanContext?.spanId).toBe('00f067aa0ba902b7');
    expect(span?.spanContext().traceId).toBe(ORIGIN_TRACE);
    expect(span?.startTime).toEqual([Math.floor(commitTime.getTime() / 1000), 0]);
    expect(span?.attributes).toMatchObject({
      'messaging.system': 'kafka',
      'messaging.operation.type': 'create',
      'messaging.message.id': event(1).id,
      'sluice.aggregate.version': 1,
      'sluice.commit_lsn': '16/B374D848',
    });
    const headers = record?.message.headers as Record<string, string>;
    expect(headers.traceparent).toBe(`00-${ORIGIN_TRACE}-${span?.spanContext().spanId}-01`);
    expect(headers.ce_traceparent).toBe(origin);
    expect(record?.span).toEqual(span?.spanContext());
  });

  it('follow an unsampled origin: nothing recorded, the record keeps only the origin', () => {
    const { exporter, tracer } = tracing();
    const encoder = new RecordEncoder({ kafka: {} as never, source: '/s', tracer });
    const [record] = encoder.encode([
      { event: event(1, `00-${ORIGIN_TRACE}-00f067aa0ba902b7-00`), commitLsn: Lsn.parse('0/1') },
    ]);
    expect(exporter.getFinishedSpans()).toEqual([]);
    const headers = record?.message.headers as Record<string, string>;
    expect(headers.traceparent).toBeUndefined();
    expect(headers.ce_traceparent).toMatch(/-00$/);
    expect(record?.span).toBeUndefined();
  });

  it('start a trace of their own for an event without a context, sampled by ratio', () => {
    const { exporter, tracer } = tracing(new TraceIdRatioBasedSampler(0.5));
    const encoder = new RecordEncoder({ kafka: {} as never, source: '/s', tracer });
    const events = Array.from({ length: 400 }, (_, i) => ({
      event: event(i + 1),
      commitLsn: Lsn.parse('0/1'),
    }));
    const records = encoder.encode(events);
    const recorded = exporter.getFinishedSpans();
    expect(recorded.length).toBeGreaterThan(140);
    expect(recorded.length).toBeLessThan(260);
    expect(recorded.every((span) => span.parentSpanContext === undefined)).toBe(true);
    expect(records.filter((r) => r.span !== undefined)).toHaveLength(recorded.length);
  });

  it('cost nothing without a tracer: no header, no span', () => {
    const encoder = new RecordEncoder({ kafka: {} as never, source: '/s' });
    const [record] = encoder.encode([
      { event: event(1, `00-${ORIGIN_TRACE}-00f067aa0ba902b7-01`), commitLsn: Lsn.parse('0/1') },
    ]);
    expect(Object.keys(record?.message.headers ?? {})).not.toContain('traceparent');
    expect(record?.span).toBeUndefined();
  });
});

describe('send spans', () => {
  it('one per trace and partition, a child of the first create span, linking all', () => {
    const { exporter, tracer } = tracing();
    const encoder = new RecordEncoder({ kafka: {} as never, source: '/s', tracer });
    const other = '0af7651916cd43dd8448eb211c80319c';
    const sent = encoder.encode(
      [
        `00-${ORIGIN_TRACE}-00f067aa0ba902b7-01`,
        `00-${ORIGIN_TRACE}-00f067aa0ba902b7-01`,
        `00-${other}-b7ad6b7169203331-01`,
        `00-${other}-b7ad6b7169203331-00`,
      ].map((tp, i) => ({ event: event(i + 1, tp), commitLsn: Lsn.parse('0/1') })),
    );
    exporter.reset();
    const located: PublishedRecord[] = sent.map((item, i) => ({
      eventId: item.event.id,
      topic: item.topic,
      partition: i < 3 ? 2 : 4,
      offset: String(10 + i),
      commitLsn: '0/1',
      commitTime: undefined,
    }));
    sendSpans(tracer, sent, located, Date.now() - 5);
    const spans = exporter.getFinishedSpans();
    expect(
      spans.map((s) => [s.spanContext().traceId, s.attributes['messaging.batch.message_count']]),
    ).toEqual([
      [ORIGIN_TRACE, 2],
      [other, 1],
    ]);
    const [first] = spans;
    expect(first?.parentSpanContext?.spanId).toBe(sent[0]?.span?.spanId);
    expect(first?.links.map((l) => l.context.spanId)).toEqual([
      sent[0]?.span?.spanId,
      sent[1]?.span?.spanId,
    ]);
    expect(first?.attributes).toMatchObject({
      'messaging.operation.type': 'send',
      'messaging.destination.partition.id': '2',
      'messaging.kafka.offset': 10,
      'sluice.send.records': 4,
    });
  });

  it("without the records' partitions, still one per trace", () => {
    const { exporter, tracer } = tracing();
    const encoder = new RecordEncoder({ kafka: {} as never, source: '/s', tracer });
    const sent = encoder.encode([{ event: event(1), commitLsn: Lsn.parse('0/1') }]);
    exporter.reset();
    sendSpans(tracer, sent, undefined, Date.now());
    expect(exporter.getFinishedSpans()).toHaveLength(1);
    const [span] = exporter.getFinishedSpans();
    expect(span?.attributes['messaging.destination.partition.id']).toBeUndefined();
    expect(span?.parentSpanContext?.spanId).toBe(sent[0]?.span?.spanId);
  });
});

import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  trace,
  type HrTime,
} from '@opentelemetry/api';
import { OTLPTraceExporter as JsonExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as ProtoExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from './otlp-receiver.js';

const START: HrTime = [1_700_000_000, 123_456_789];
const END: HrTime = [1_700_000_001, 987_654_321];
const EVENT_TIME: HrTime = [1_700_000_000, 500_000_000];
const LINKED = {
  traceId: '0af7651916cd43dd8448eb211c80319c',
  spanId: 'b7ad6b7169203331',
  traceFlags: TraceFlags.SAMPLED,
};
const ATTRIBUTES = {
  text: 'héllo',
  flag: true,
  count: 42,
  negative: -7,
  ratio: 0.25,
  tags: ['a', 'b'],
  numbers: [1, 2.5],
  big: 2 ** 60,
};
/** `ATTRIBUTES` as received: an int64 beyond 2^53 arrives as a bigint. */
const DECODED_ATTRIBUTES = { ...ATTRIBUTES, big: 2n ** 60n };
const SAMPLED_LOCAL_PARENT = 0x101;
/** Spans named after their kind, children of the root. */
const PLAIN_KINDS = {
  producer: SpanKind.PRODUCER,
  consumer: SpanKind.CONSUMER,
  internal: SpanKind.INTERNAL,
} as const;

let receiver: OtlpReceiver;
beforeEach(async () => {
  receiver = await startOtlpReceiver();
});
afterEach(async () => {
  vi.unstubAllEnvs();
  await receiver.close();
});

/** Spans of every kind, with every attribute type, a link, an event and statuses, all exported. */
async function exportTrace(exporter: ProtoExporter | JsonExporter, service: string) {
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': service, 'deployment.environment': 'test' }),
    spanProcessors: [new SimpleSpanProcessor(exporter)],
  });
  const tracer = provider.getTracer('otlp-receiver-test', '1.2.3');
  const root = tracer.startSpan('root', {
    kind: SpanKind.SERVER,
    startTime: START,
    attributes: ATTRIBUTES,
  });
  const inRoot = trace.setSpan(ROOT_CONTEXT, root);
  const child = tracer.startSpan(
    'child',
    {
      kind: SpanKind.CLIENT,
      startTime: START,
      links: [{ context: LINKED, attributes: { 'link.reason': 'retry', 'link.n': 3 } }],
    },
    inRoot,
  );
  child.addEvent('attempt', { 'attempt.number': 2, final: false }, EVENT_TIME);
  child.setStatus({ code: SpanStatusCode.ERROR, message: 'upstream refused' });
  child.end(END);
  const plain = Object.entries(PLAIN_KINDS).map(([name, kind]) => {
    const span = tracer.startSpan(name, { kind, startTime: START }, inRoot);
    span.end(END);
    return [name, span.spanContext().spanId] as const;
  });
  root.setStatus({ code: SpanStatusCode.OK });
  root.end(END);
  await provider.forceFlush();
  await provider.shutdown();
  return { root: root.spanContext(), child: child.spanContext(), plain: new Map(plain) };
}

function common(service: string, protocol: ReceivedSpan['protocol']) {
  return {
    traceState: undefined,
    flags: SAMPLED_LOCAL_PARENT,
    startTimeUnixNano: 1_700_000_000_123_456_789n,
    endTimeUnixNano: 1_700_000_001_987_654_321n,
    service,
    resource: { 'service.name': service, 'deployment.environment': 'test' },
    scope: 'otlp-receiver-test',
    protocol,
  };
}

const exporters = [
  { protocol: 'protobuf', gzip: false },
  { protocol: 'protobuf', gzip: true },
  { protocol: 'json', gzip: false },
  { protocol: 'json', gzip: true },
] as const;

describe.each(exporters)('the $protocol exporter (gzip: $gzip)', ({ protocol, gzip }) => {
  it('delivers every field exactly', async () => {
    const service = `svc-${protocol}-${gzip}`;
    // Configured the way services are: through the environment.
    vi.stubEnv('OTEL_EXPORTER_OTLP_ENDPOINT', receiver.endpoint);
    vi.stubEnv('OTEL_EXPORTER_OTLP_COMPRESSION', gzip ? 'gzip' : 'none');
    const exporter = protocol === 'json' ? new JsonExporter() : new ProtoExporter();
    const sent = await exportTrace(exporter, service);

    const spans = await receiver.waitForSpans((all) => all.length === 5, {
      timeoutMs: 10_000,
      message: 'five spans',
    });
    const byName = new Map(spans.map((span) => [span.name, span]));
    expect(byName.get('root')).toEqual({
      ...common(service, protocol),
      traceId: sent.root.traceId,
      spanId: sent.root.spanId,
      parentSpanId: undefined,
      name: 'root',
      kind: 'server',
      attributes: DECODED_ATTRIBUTES,
      links: [],
      events: [],
      status: { code: 'ok' },
    });
    expect(byName.get('child')).toEqual({
      ...common(service, protocol),
      traceId: sent.root.traceId,
      spanId: sent.child.spanId,
      parentSpanId: sent.root.spanId,
      name: 'child',
      kind: 'client',
      attributes: {},
      links: [
        {
          traceId: LINKED.traceId,
          spanId: LINKED.spanId,
          attributes: { 'link.reason': 'retry', 'link.n': 3 },
        },
      ],
      events: [
        {
          name: 'attempt',
          timeUnixNano: 1_700_000_000_500_000_000n,
          attributes: { 'attempt.number': 2, final: false },
        },
      ],
      status: { code: 'error', message: 'upstream refused' },
    });
    for (const kind of Object.keys(PLAIN_KINDS) as (keyof typeof PLAIN_KINDS)[]) {
      expect(byName.get(kind)).toEqual({
        ...common(service, protocol),
        traceId: sent.root.traceId,
        spanId: sent.plain.get(kind),
        parentSpanId: sent.root.spanId,
        name: kind,
        kind,
        attributes: {},
        links: [],
        events: [],
        status: { code: 'unset' },
      });
    }
    expect(receiver.rejected()).toBe(0);
  });
});

async function post(path: string, headers: Record<string, string>, body: Uint8Array | string) {
  const response = await fetch(`${receiver.endpoint}${path}`, { method: 'POST', headers, body });
  const type = response.headers.get('content-type');
  return { status: response.status, type, body: await response.text() };
}

const JSON_TYPE = { 'content-type': 'application/json' };
const PROTOBUF_TYPE = { 'content-type': 'application/x-protobuf' };
const GZIP = { 'content-encoding': 'gzip' };

/** OTLP/JSON as other senders write it: int64 as strings, times as numbers, upper-case hex. */
const HAND_WRITTEN = {
  resourceSpans: [
    {
      resource: { attributes: [{ key: 'service.name', value: { stringValue: 'by-hand' } }] },
      scopeSpans: [
        {
          scope: { name: 'manual' },
          spans: [
            {
              traceId: '0AF7651916CD43DD8448EB211C80319C',
              spanId: 'B7AD6B7169203331',
              parentSpanId: '',
              name: 'handmade',
              kind: 4,
              startTimeUnixNano: 1_000,
              endTimeUnixNano: '9007199254740993',
              attributes: [
                { key: 'huge', value: { intValue: '-9223372036854775808' } },
                { key: 'small', value: { intValue: '12' } },
                { key: 'blob', value: { bytesValue: 'AAEC' } },
                {
                  key: 'map',
                  value: { kvlistValue: { values: [{ key: 'k', value: { boolValue: true } }] } },
                },
                { key: 'empty', value: {} },
              ],
              status: { code: 2 },
            },
          ],
        },
      ],
    },
  ],
};

describe('requests', () => {
  it('decodes hand-written gzipped OTLP/JSON and answers {}', async () => {
    const body = gzipSync(JSON.stringify(HAND_WRITTEN));
    const headers = { 'content-type': 'application/json; charset=utf-8', ...GZIP };
    expect(await post('/v1/traces', headers, body)).toEqual({
      status: 200,
      type: 'application/json',
      body: '{}',
    });
    expect(receiver.spans()).toEqual([
      {
        traceId: '0af7651916cd43dd8448eb211c80319c',
        spanId: 'b7ad6b7169203331',
        parentSpanId: undefined,
        traceState: undefined,
        flags: 0,
        name: 'handmade',
        kind: 'producer',
        startTimeUnixNano: 1000n,
        endTimeUnixNano: 9007199254740993n,
        attributes: {
          huge: -(2n ** 63n),
          small: 12,
          blob: new Uint8Array([0, 1, 2]),
          map: { k: true },
          empty: undefined,
        },
        links: [],
        events: [],
        status: { code: 'error' },
        service: 'by-hand',
        resource: { 'service.name': 'by-hand' },
        scope: 'manual',
        protocol: 'json',
      },
    ]);
  });

  it('answers an empty protobuf request with an empty protobuf response', async () => {
    expect(await post('/v1/traces', PROTOBUF_TYPE, new Uint8Array())).toEqual({
      status: 200,
      type: 'application/x-protobuf',
      body: '',
    });
    expect(receiver.spans()).toEqual([]);
  });

  it('refuses malformed requests and keeps working', async () => {
    const refusals = [
      await post('/v1/traces', PROTOBUF_TYPE, new Uint8Array([0x0a, 0x05, 0x0a])), // truncated
      await post('/v1/traces', PROTOBUF_TYPE, new Uint8Array([0x0b])), // group wire type
      await post('/v1/traces', PROTOBUF_TYPE, new Uint8Array([0x0a, 0x80])), // truncated varint
      await post('/v1/traces', { ...PROTOBUF_TYPE, ...GZIP }, 'not gzip'),
      await post('/v1/traces', JSON_TYPE, '{"resourceSpans": 5}'),
      await post('/v1/traces', JSON_TYPE, '{"resourceSpans": [{"scopeSpans": [{"spans": [{}]}]}]}'),
      await post('/v1/traces', JSON_TYPE, 'not json'),
      await post('/v1/traces', { 'content-type': 'text/plain' }, 'hello'),
      await post('/v1/metrics', JSON_TYPE, '{}'),
    ].map((response) => response.status);
    expect(refusals).toEqual([400, 400, 400, 400, 400, 400, 400, 415, 404]);
    expect((await fetch(`${receiver.endpoint}/v1/traces`)).status).toBe(405);
    expect({ requests: receiver.requests(), rejected: receiver.rejected() }).toEqual({
      requests: 10,
      rejected: 10,
    });

    await post('/v1/traces', JSON_TYPE, JSON.stringify(HAND_WRITTEN));
    const spans = await receiver.waitForSpans((all) => all.length === 1, {
      timeoutMs: 5000,
      message: 'one span',
    });
    expect(spans.map((span) => span.name)).toEqual(['handmade']);
  });

  it('names what arrived when a wait times out', async () => {
    await post('/v1/traces', JSON_TYPE, JSON.stringify(HAND_WRITTEN));
    await expect(
      receiver.waitForSpans((all) => all.length > 1, { timeoutMs: 50, message: 'a second span' }),
    ).rejects.toThrow(
      'waiting for a second span; received 1 spans in 1 requests (0 rejected): by-hand/handmade x1',
    );
  });
});

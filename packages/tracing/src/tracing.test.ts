import { ROOT_CONTEXT, context, trace } from '@opentelemetry/api';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  activeSpanLogFields,
  contextOf,
  inSpan,
  spanContextOf,
  traceExemplar,
  traceparentOf,
} from './index.js';

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const SPAN = '00f067aa0ba902b7';

describe('traceparent', () => {
  it('reads a valid version-00 traceparent, and only the sampled flag', () => {
    expect(spanContextOf(`00-${TRACE}-${SPAN}-01`)).toEqual({
      traceId: TRACE,
      spanId: SPAN,
      traceFlags: 1,
      isRemote: true,
    });
    expect(spanContextOf(`00-${TRACE}-${SPAN}-00`)?.traceFlags).toBe(0);
    expect(spanContextOf(`00-${TRACE}-${SPAN}-03`)?.traceFlags).toBe(1);
    expect(spanContextOf(`00-${TRACE}-${SPAN}-02`)?.traceFlags).toBe(0);
  });

  it.each([
    ['missing', undefined],
    ['empty', ''],
    ['another version', `01-${TRACE}-${SPAN}-01`],
    ['upper case', `00-${TRACE.toUpperCase()}-${SPAN}-01`],
    ['an all-zero trace id', `00-${'0'.repeat(32)}-${SPAN}-01`],
    ['an all-zero span id', `00-${TRACE}-${'0'.repeat(16)}-01`],
    ['a short trace id', `00-${TRACE.slice(1)}-${SPAN}-01`],
    ['trailing text', `00-${TRACE}-${SPAN}-01-extra`],
    ['a NUL byte', `00-${TRACE}-${SPAN}-01\u0000`],
  ])('refuses %s', (_what, value) => {
    expect(spanContextOf(value)).toBeUndefined();
    expect(contextOf(value)).toBe(ROOT_CONTEXT);
    expect(traceExemplar(value)).toBeUndefined();
  });

  it('writes what it reads', () => {
    const value = `00-${TRACE}-${SPAN}-01`;
    const parsed = spanContextOf(value);
    expect(parsed === undefined ? undefined : traceparentOf(parsed)).toBe(value);
    expect(trace.getSpanContext(contextOf(value))?.spanId).toBe(SPAN);
  });

  it('names sampled traces in exemplars, never unsampled ones', () => {
    expect(traceExemplar(`00-${TRACE}-${SPAN}-01`)).toEqual({ trace_id: TRACE });
    expect(traceExemplar(`00-${TRACE}-${SPAN}-00`)).toBeUndefined();
  });
});

describe('spans', () => {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  const tracer = provider.getTracer('test');
  const manager = new AsyncLocalStorageContextManager();
  beforeAll(() => context.setGlobalContextManager(manager.enable()));
  afterAll(() => context.disable());

  it('inSpan runs work in an active span, and a failure marks it and is thrown on', async () => {
    const fields = await inSpan(tracer, 'work', {}, async () => {
      await new Promise((resolve) => setImmediate(resolve));
      return activeSpanLogFields();
    });
    const [done] = exporter.getFinishedSpans();
    expect(fields).toEqual({
      trace_id: done?.spanContext().traceId,
      span_id: done?.spanContext().spanId,
    });
    await expect(
      inSpan(tracer, 'fails', {}, () => Promise.reject(new Error('boom'))),
    ).rejects.toThrow('boom');
    const failed = exporter.getFinishedSpans()[1];
    expect(failed?.status).toEqual({ code: 2, message: 'boom' });
    expect(failed?.events[0]?.name).toBe('exception');
  });

  it('without a tracer, inSpan just runs work; outside a span, no log fields', async () => {
    expect(await inSpan(undefined, 'x', {}, (span) => Promise.resolve(span))).toBeUndefined();
    expect(activeSpanLogFields()).toEqual({});
  });
});

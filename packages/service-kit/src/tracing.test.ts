import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { startTracing, tracingEnabled, tracingProblems } from './tracing.js';

describe('tracingEnabled', () => {
  it.each([
    [{}, false],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }, true],
    [{ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://collector:4318/v1/traces' }, true],
    [{ OTEL_TRACES_EXPORTER: 'otlp' }, true],
    [{ OTEL_TRACES_EXPORTER: ' OTLP ' }, true],
    [{ OTEL_TRACES_EXPORTER: 'none', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }, false],
    [{ OTEL_SDK_DISABLED: 'true', OTEL_TRACES_EXPORTER: 'otlp' }, false],
    [{ OTEL_SDK_DISABLED: 'false', OTEL_TRACES_EXPORTER: 'otlp' }, true],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: ' ' }, false],
  ])('%j → %s', (env, enabled) => {
    expect(tracingEnabled(env)).toBe(enabled);
  });
});

describe('tracingProblems', () => {
  it('accepts the standard values', () => {
    expect(
      tracingProblems({
        OTEL_TRACES_EXPORTER: 'otlp',
        OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
        OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
        OTEL_TRACES_SAMPLER_ARG: '0.1',
        OTEL_EXPORTER_OTLP_ENDPOINT: 'https://collector:4318',
      }),
    ).toEqual([]);
  });

  it('names each wrong one; the traces protocol wins over the general one', () => {
    expect(
      tracingProblems({
        OTEL_TRACES_EXPORTER: 'otlp,zipkin',
        OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'grpc',
        OTEL_TRACES_SAMPLER: 'sometimes',
        OTEL_TRACES_SAMPLER_ARG: 'half',
        OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318 ',
      }),
    ).toEqual([
      'OTEL_TRACES_EXPORTER must be otlp or none (is zipkin)',
      'the OTLP protocol must be one of http/protobuf, http/json (is grpc)',
      expect.stringContaining('OTEL_TRACES_SAMPLER must be one of always_on'),
      'OTEL_TRACES_SAMPLER_ARG must be a number 0..1 (is "half")',
      'OTEL_EXPORTER_OTLP_ENDPOINT must be an http(s) URL (is "collector:4318 ")',
    ]);
  });
});

describe('startTracing', () => {
  it('off, gives no tracer and loads no SDK', async () => {
    const tracing = await startTracing({ service: 'x', logger: pino({ enabled: false }), env: {} });
    expect(tracing.tracer).toBeUndefined();
    await tracing.shutdown();
  });
});

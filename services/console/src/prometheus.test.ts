import { Histogram, Registry, type RegistryContentType } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { Metrics, bucketsSince, quantile } from './prometheus.js';

const TEXT = `# HELP sluice_relay_events_published_total Outbox events Kafka acknowledged.
# TYPE sluice_relay_events_published_total counter
sluice_relay_events_published_total{aggregate_type="cart"} 12
sluice_relay_events_published_total{aggregate_type="order"} 3
# HELP sluice_relay_slot_wal_status wal_status
# TYPE sluice_relay_slot_wal_status gauge
sluice_relay_slot_wal_status{status="reserved"} 1
# HELP sluice_projector_apply_latency_seconds From occurrence to commit.
# TYPE sluice_projector_apply_latency_seconds histogram
sluice_projector_apply_latency_seconds_bucket{le="0.1",projection="a"} 2
sluice_projector_apply_latency_seconds_bucket{le="1",projection="a"} 4
sluice_projector_apply_latency_seconds_bucket{le="+Inf",projection="a"} 4
sluice_projector_apply_latency_seconds_sum{projection="a"} 1.2
sluice_projector_apply_latency_seconds_count{projection="a"} 4
sluice_projector_apply_latency_seconds_bucket{le="0.1",projection="b"} 0
sluice_projector_apply_latency_seconds_bucket{le="1",projection="b"} 4
sluice_projector_apply_latency_seconds_bucket{le="+Inf",projection="b"} 4
sluice_projector_apply_latency_seconds_sum{projection="b"} 2
sluice_projector_apply_latency_seconds_count{projection="b"} 4
`;

describe('Metrics', () => {
  const metrics = Metrics.parse(TEXT);

  it('sums the samples that carry the labels asked for', () => {
    expect(metrics.sum('sluice_relay_events_published_total')).toBe(15);
    expect(metrics.sum('sluice_relay_events_published_total', { aggregate_type: 'order' })).toBe(3);
    expect(
      metrics.sum('sluice_relay_events_published_total', { aggregate_type: 'x' }),
    ).toBeUndefined();
    expect(metrics.sum('no_such_metric')).toBeUndefined();
  });

  it('lists label sets, e.g. the status of a one-hot gauge', () => {
    expect(metrics.samples('sluice_relay_slot_wal_status')).toEqual([
      { labels: { status: 'reserved' }, value: 1 },
    ]);
  });

  it('adds up histogram buckets across label sets, or for one', () => {
    expect(metrics.buckets('sluice_projector_apply_latency_seconds')).toEqual([
      { le: 0.1, count: 2 },
      { le: 1, count: 8 },
      { le: Infinity, count: 8 },
    ]);
    expect(metrics.buckets('sluice_projector_apply_latency_seconds', { projection: 'a' })).toEqual([
      { le: 0.1, count: 2 },
      { le: 1, count: 4 },
      { le: Infinity, count: 4 },
    ]);
  });

  it('reads escaped label values, timestamps and special values', () => {
    const parsed = Metrics.parse(
      'm{a="x\\"y\\\\z",b="line\\n"} +Inf 1700000000000\nm{a="w"} NaN\n',
    );
    expect(parsed.samples('m', { a: 'x"y\\z' })).toEqual([
      { labels: { a: 'x"y\\z', b: 'line\n' }, value: Infinity },
    ]);
    expect(parsed.sum('m', { a: 'w' })).toBeNaN();
  });

  it('rejects text that is not the exposition format', () => {
    expect(() => Metrics.parse('sluice_x{le="1" 2\n')).toThrow();
  });
});

describe('quantile', () => {
  it('interpolates inside the bucket that holds the rank, as histogram_quantile does', () => {
    const buckets = [
      { le: 0.1, count: 2 },
      { le: 1, count: 8 },
      { le: Infinity, count: 8 },
    ];
    expect(quantile(0.25, buckets)).toBeCloseTo(0.1);
    expect(quantile(0.5, buckets)).toBeCloseTo(0.1 + 0.9 * (2 / 6));
    expect(quantile(0.99, buckets)).toBeCloseTo(0.1 + 0.9 * (5.92 / 6));
  });

  it('is null without observations and the last finite bound past it', () => {
    expect(quantile(0.5, [])).toBeNull();
    expect(
      quantile(0.5, [
        { le: 1, count: 0 },
        { le: Infinity, count: 0 },
      ]),
    ).toBeNull();
    expect(
      quantile(0.99, [
        { le: 1, count: 0 },
        { le: Infinity, count: 3 },
      ]),
    ).toBe(1);
  });
});

describe('bucketsSince', () => {
  it('is the observations between two scrapes, or the later one after a restart', () => {
    const earlier = [
      { le: 1, count: 2 },
      { le: Infinity, count: 3 },
    ];
    const later = [
      { le: 1, count: 5 },
      { le: Infinity, count: 9 },
    ];
    expect(bucketsSince(later, earlier)).toEqual([
      { le: 1, count: 3 },
      { le: Infinity, count: 6 },
    ]);
    const restarted = [
      { le: 1, count: 1 },
      { le: Infinity, count: 1 },
    ];
    expect(bucketsSince(restarted, earlier)).toEqual(restarted);
  });
});

describe('OpenMetrics with exemplars (a traced service)', () => {
  it("reads the samples of prom-client's output, exemplars and timestamps aside", async () => {
    const registry = new Registry<RegistryContentType>();
    registry.setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
    const latency = new Histogram({
      name: 'sluice_projector_apply_latency_seconds',
      help: 'From occurrence to commit.',
      labelNames: ['projection'],
      buckets: [0.1, 1],
      registers: [registry],
      enableExemplars: true,
    });
    // prom-client types exemplar labels as the metric's own labels.
    const exemplarLabels: Record<string, string> = { trace_id: '4bf92f3577b34da6a3ce929d0e0e4736' };
    latency.observe({ labels: { projection: 'a' }, value: 0.05, exemplarLabels });
    latency.observe({ labels: { projection: 'a' }, value: 0.5, exemplarLabels: {} });
    const text = await registry.metrics();
    expect(text).toContain('# {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"} 0.05');

    const parsed = Metrics.parse(text);
    expect(parsed.buckets('sluice_projector_apply_latency_seconds', { projection: 'a' })).toEqual([
      { le: 0.1, count: 1 },
      { le: 1, count: 2 },
      { le: Infinity, count: 2 },
    ]);
    expect(parsed.sum('sluice_projector_apply_latency_seconds_count')).toBe(2);
  });
});

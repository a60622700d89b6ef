import { alertNamed, type AlertDefinition } from '@sluice/alerts';
import { describe, expect, it } from 'vitest';
import { AlertEvaluator, durationMs } from './alerts.js';
import { History, type Point } from './history.js';
import { stagesOf, slotStatus } from './overview.js';
import { projectionState, projectionsView } from './projections-view.js';
import { Metrics } from './prometheus.js';
import { confirmedStalled } from './relay-view.js';
import type { ProjectorReading, Sample, ServiceReading, SlotReading } from './sample.js';
import { pointOf } from './points.js';
import { alertThresholds } from './thresholds.js';

const thresholds = alertThresholds();
const GiB = 1024 ** 3;

const slot = (over: Partial<SlotReading> = {}): SlotReading => ({
  name: 'sluice_relay',
  exists: true,
  walStatus: 'reserved',
  safeWalSizeBytes: null,
  confirmedLsn: '0/100',
  currentLsn: '0/100',
  lagBytes: 0,
  replyAgeSeconds: 1,
  ...over,
});

const relay = (status: string, metrics = ''): ServiceReading => ({
  url: 'http://relay',
  reachable: true,
  ready: status !== 'blocked',
  status,
  ...(status === 'blocked' ? { message: 'Kafka rejects the record' } : {}),
  metrics: Metrics.parse(metrics),
});

const projector = (over: Partial<ProjectorReading> = {}): ProjectorReading => ({
  url: 'http://projector',
  reachable: true,
  ready: true,
  status: 'ok',
  metrics: Metrics.parse(''),
  hosted: [{ projection: 'cart_summary' }],
  ...over,
});

/** A sample of a healthy pipeline: cart_summary 5 records behind on one partition of two. */
function sample(over: Partial<Sample> = {}): Sample {
  return {
    at: 1_000_000,
    database: {
      slot: slot(),
      outbox: { newestAt: 0, recentRows: 20, windowSeconds: 10, unpublished: 0 },
      projections: [
        {
          projection: 'cart_summary',
          generations: [{ generation: 1, instance: 'cart_summary', state: 'active' }],
          checkpoints: [
            { instance: 'cart_summary', topic: 'outbox.event.cart', partition: 0, nextOffset: 10 },
          ],
          parkedAggregates: 0,
        },
      ],
    },
    kafka: {
      endOffsets: { 'outbox.event.cart': [15, 0] },
      sizes: { 'sluice.dlq.cart_summary': 2 },
    },
    relays: [
      relay('leading', 'sluice_relay_oldest_unpublished_seconds 0.5\nsluice_relay_leader 1\n'),
    ],
    projectors: [projector()],
    apis: [],
    ...over,
  };
}

const names = { outbox: 'shop.outbox', slot: 'sluice_relay', kafka: '127.0.0.1:19092' };

function stages(current: Sample, history = new History(60_000)) {
  history.add(pointOf(current));
  const projections = projectionsView(current, history, thresholds, '').projections;
  return stagesOf({ sample: current, history, thresholds, names, projections });
}

describe('stages', () => {
  it('are all ok for a healthy pipeline, in the order events flow, one per projection', () => {
    const all = stages(sample());
    expect(all.map((s) => [s.stage, s.name, s.status])).toEqual([
      ['api', 'api', 'unknown'],
      ['outbox', 'shop.outbox', 'ok'],
      ['slot', 'sluice_relay', 'ok'],
      ['relay', 'relay', 'ok'],
      ['kafka', '127.0.0.1:19092', 'ok'],
      ['projection', 'cart_summary', 'ok'],
    ]);
    expect(all.find((s) => s.stage === 'outbox')?.throughputPerSecond).toBe(2);
    expect(all.filter((s) => s.status !== 'ok').every((s) => s.reason !== undefined)).toBe(true);
  });

  it('give the relay and projections a throughput from their counters over the last seconds', () => {
    const history = new History(60_000);
    const published = (n: number) => [
      relay('leading', `sluice_relay_events_published_total{aggregate_type="cart"} ${n}\n`),
    ];
    history.add(pointOf(sample({ at: 0, relays: published(10) })));
    const later = sample({ at: 4000, relays: published(30) });
    const all = stages(later, history);
    expect(all.find((s) => s.stage === 'relay')?.throughputPerSecond).toBe(5);
    expect(all.find((s) => s.stage === 'projection')?.throughputPerSecond).toBe(0);
  });

  it('say why a relay is critical: blocked, none leading, none answering', () => {
    const reasonOf = (relays: ServiceReading[]) =>
      stages(sample({ relays })).find((s) => s.stage === 'relay');
    expect(reasonOf([relay('blocked')])).toMatchObject({
      status: 'critical',
      reason: expect.stringContaining('blocked'),
    });
    expect(reasonOf([relay('standby')])).toMatchObject({
      status: 'critical',
      reason: 'no relay leads',
    });
    const down = { url: 'http://relay', reachable: false, ready: false, status: null };
    expect(reasonOf([down])).toMatchObject({
      status: 'critical',
      reason: expect.stringContaining('no relay answers'),
    });
  });

  it('turn the outbox warning, then critical, at the alerts’ age thresholds', () => {
    const outboxAt = (age: number) =>
      stages(
        sample({ relays: [relay('leading', `sluice_relay_oldest_unpublished_seconds ${age}\n`)] }),
      ).find((s) => s.stage === 'outbox')?.status;
    expect(outboxAt(thresholds.outboxAgeWarningSeconds)).toBe('ok');
    expect(outboxAt(thresholds.outboxAgeWarningSeconds + 1)).toBe('warning');
    expect(outboxAt(thresholds.outboxAgeCriticalSeconds + 1)).toBe('critical');
  });

  it('make Kafka critical with the error that reading it gave', () => {
    const kafka = { endOffsets: {}, sizes: {}, error: 'Connection timeout' };
    expect(stages(sample({ kafka })).find((s) => s.stage === 'kafka')).toMatchObject({
      status: 'critical',
      reason: 'Connection timeout',
    });
  });
});

describe('slotStatus', () => {
  it('takes the most severe rule that matches', () => {
    expect(slotStatus(slot({ exists: false }), false, thresholds).status).toBe('critical');
    expect(slotStatus(slot({ walStatus: 'lost' }), false, thresholds)).toEqual({
      status: 'critical',
      reason: 'wal_status is lost',
    });
    expect(slotStatus(slot({ safeWalSizeBytes: 0.5 * GiB }), false, thresholds).status).toBe(
      'critical',
    );
    expect(slotStatus(slot({ safeWalSizeBytes: -1 }), false, thresholds).status).toBe('ok');
    expect(slotStatus(slot({ lagBytes: 2 * GiB }), false, thresholds)).toEqual({
      status: 'warning',
      reason: 'retains 2.00 GiB of WAL',
    });
    expect(slotStatus(slot({ lagBytes: 9 * GiB }), false, thresholds).status).toBe('critical');
    expect(slotStatus(slot({ walStatus: 'extended' }), false, thresholds).status).toBe('warning');
    expect(slotStatus(slot(), true, thresholds).status).toBe('critical');
  });
});

describe('confirmedStalled', () => {
  const point = (t: number, confirmedLsn: string, currentLsn: string, lagBytes: number): Point => ({
    ...pointOf(sample()),
    t,
    confirmedLsn,
    currentLsn,
    lagBytes,
  });

  it('holds once the confirmed LSN stood still for the whole window while the WAL grew', () => {
    const history = new History(600_000);
    history.add(point(0, '0/100', '0/100', 0));
    history.add(point(30_000, '0/100', '0/200', 256));
    expect(confirmedStalled(history, 60_000)).toBe(false); // the window is not covered yet
    history.add(point(60_000, '0/100', '0/300', 512));
    expect(confirmedStalled(history, 60_000)).toBe(true);
    history.add(point(90_000, '0/300', '0/300', 0));
    expect(confirmedStalled(history, 60_000)).toBe(false);
  });

  it('does not hold for an idle database: nothing to confirm', () => {
    const history = new History(600_000);
    for (const t of [0, 30_000, 60_000]) history.add(point(t, '0/100', '0/100', 0));
    expect(confirmedStalled(history, 60_000)).toBe(false);
  });
});

describe('projectionState', () => {
  const stateOf = (current: Sample, extra: { lag?: number; parked?: number } = {}) =>
    projectionState('cart_summary', {
      sample: current,
      history: new History(60_000),
      thresholds,
      lag: extra.lag ?? 0,
      parked: extra.parked ?? 0,
    });

  it('is down without a projector hosting it, stalled while its projector is not ready', () => {
    expect(stateOf(sample({ projectors: [] })).state).toBe('down');
    expect(
      stateOf(sample({ projectors: [projector({ ready: false, message: 'consumer stopped' })] })),
    ).toEqual({
      state: 'stalled',
      reason: 'projector http://projector is not ready: consumer stopped',
    });
  });

  it('is parked, rebuilding, catching up or running, in that order', () => {
    expect(stateOf(sample(), { parked: 2, lag: 500 }).state).toBe('parked');
    const rebuilding = projector({
      hosted: [{ projection: 'cart_summary', rebuild: { generation: 2, behind: 40 } }],
    });
    expect(stateOf(sample({ projectors: [rebuilding] }), { lag: 500 }).state).toBe('rebuilding');
    expect(stateOf(sample(), { lag: 500 }).state).toBe('catching_up');
    expect(stateOf(sample(), { lag: 5 })).toEqual({ state: 'running' });
  });

  it('is stalled when it stays behind and its checkpoints do not move for the window', () => {
    const history = new History(3_600_000);
    for (let t = 0; t <= thresholds.projectionStalledMs; t += 30_000) {
      history.add({ ...pointOf(sample()), t });
    }
    const state = projectionState('cart_summary', {
      sample: sample(),
      history,
      thresholds,
      lag: 5,
      parked: 0,
    });
    expect(state.state).toBe('stalled');
  });
});

describe('projectionsView', () => {
  it('gives each partition its checkpoint, end offset and lag; dead letters from the DLQ topic', () => {
    const history = new History(60_000);
    history.add(pointOf(sample()));
    const [view] = projectionsView(sample(), history, thresholds, '').projections;
    expect(view).toMatchObject({
      name: 'cart_summary',
      state: 'running',
      generations: [{ generation: 1, state: 'active' }],
      deadLetters: 2,
      partitions: [
        { topic: 'outbox.event.cart', partition: 0, checkpoint: 10, endOffset: 15, lag: 5 },
        { topic: 'outbox.event.cart', partition: 1, checkpoint: null, endOffset: 0, lag: 0 },
      ],
      lagHistory: { t: [1000], lag: [5] },
    });
  });
});

describe('AlertEvaluator', () => {
  const rule: AlertDefinition = {
    name: 'SluiceProjectionLagHigh',
    severity: 'warning',
    stage: 'projection',
    summary: 'Projection {{ $labels.projection }} is more than 3 events behind',
    description: '',
    expr: '',
    for: '1m',
    thresholds: { records: 3 },
  };
  const context = (lagged: boolean) => {
    const current = lagged
      ? sample()
      : sample({ kafka: { endOffsets: { 'outbox.event.cart': [10] }, sizes: {} } });
    const history = new History(60_000);
    history.add(pointOf(current));
    return {
      sample: current,
      history,
      projections: projectionsView(current, history, thresholds, '').projections,
    };
  };

  it('fires once the condition has held for the rule’s `for`, and forgets it when it stops', () => {
    const evaluator = new AlertEvaluator([rule]);
    expect(evaluator.evaluate(context(true), 0)).toEqual([]);
    expect(evaluator.evaluate(context(true), 59_999)).toEqual([]);
    expect(evaluator.evaluate(context(true), 60_000)).toEqual([
      {
        name: 'SluiceProjectionLagHigh',
        severity: 'warning',
        stage: 'projection',
        summary: 'Projection cart_summary is more than 3 events behind',
        since: new Date(0).toISOString(),
        value: 5,
      },
    ]);
    expect(evaluator.evaluate(context(false), 61_000)).toEqual([]);
    expect(evaluator.evaluate(context(true), 62_000)).toEqual([]);
  });

  it('fire when no relay or no projector answers, as their Prometheus rules do', () => {
    const now = (name: string) => ({ ...alertNamed(name), for: '0s' });
    const evaluator = new AlertEvaluator([now('SluiceRelayNoLeader'), now('SluiceProjectorDown')]);
    const firing = (over: Partial<Sample>) => {
      const current = sample(over);
      const history = new History(60_000);
      history.add(pointOf(current));
      const projections = projectionsView(current, history, thresholds, '').projections;
      return evaluator.evaluate({ sample: current, history, projections }, 0).map((a) => a.name);
    };
    const down = { url: 'http://down', reachable: false, ready: false, status: null };
    expect(firing({})).toEqual([]);
    expect(firing({ relays: [down] })).toEqual(['SluiceRelayNoLeader']);
    expect(firing({ projectors: [{ ...projector(), ...down, hosted: [] }] })).toEqual([
      'SluiceProjectorDown',
    ]);
    expect(firing({ projectors: [{ ...projector(), ...down, hosted: [] }, projector()] })).toEqual(
      [],
    );
  });

  it('reads Prometheus durations', () => {
    expect([durationMs('0s'), durationMs('5m'), durationMs('1h')]).toEqual([0, 300_000, 3_600_000]);
    expect(() => durationMs('5 minutes')).toThrow();
  });
});

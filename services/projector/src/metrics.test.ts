import type { ParkedEvent, Projector } from '@sluice/projector';
import { describe, expect, it } from 'vitest';
import { createProjectorMetrics } from './metrics.js';

function parked(projection: string, aggregateId: string | null, offset: string): ParkedEvent {
  const at = new Date();
  return {
    projection,
    topic: 'outbox.event.order',
    partition: 0,
    offset,
    aggregateType: 'order',
    aggregateId,
    aggregateVersion: 1,
    reason: 'behind_parked',
    error: null,
    attempts: 1,
    firstFailedAt: at,
    lastFailedAt: at,
  };
}

const projector = {
  generations: () => Promise.resolve({ generations: [], rebuild: undefined }),
  offsetGaps: () => Promise.resolve([]),
  health: () =>
    Promise.resolve({
      ready: false,
      problems: [
        { code: 'stalled' as const, projection: 'orders', detail: 'batches failing' },
        { code: 'joining' as const, projection: '*', detail: 'joining' },
      ],
    }),
  parked: () =>
    Promise.resolve([
      parked('orders', 'a', '1'),
      parked('orders', 'a', '2'),
      parked('orders', 'b', '3'),
      parked('orders', null, '4'),
      parked('orders', null, '5'),
    ]),
} as unknown as Projector;

async function valuesOf(name: string) {
  const metrics = createProjectorMetrics(['orders', 'carts']);
  metrics.watch(projector);
  const metric = (await metrics.registry.getMetricsAsJSON()).find((m) => m.name === name);
  return Object.fromEntries(
    (metric?.values ?? []).map(({ labels, value }) => [Object.values(labels).join('/'), value]),
  );
}

describe('projector metrics read at scrape', () => {
  it('count the health problems per projection and code, zero where none', async () => {
    const values = await valuesOf('sluice_projector_health_problems');
    expect(values).toMatchObject({ 'orders/stalled': 1, 'carts/stalled': 0, '*/joining': 1 });
    expect(values['orders/consumer_stopped']).toBe(0);
  });

  it('count parked aggregates, each record without an aggregate on its own', async () => {
    expect(await valuesOf('sluice_projector_parked_aggregates')).toEqual({ orders: 4, carts: 0 });
  });
});

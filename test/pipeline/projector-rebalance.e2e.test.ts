// Views stay equal to the fold of the write model while the projector group grows from one
// process to two and shrinks back during a workload: partitions move, nothing applies twice.
import { waitFor } from '@sluice/testkit';
import { shoppingWorkload, startPipeline, type Pipeline } from '../support/pipeline.js';
import { listeningAddress, metricValue, type ServiceProcess } from '../support/services.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

let pipeline: Pipeline;

beforeAll(async () => {
  pipeline = await startPipeline('prebal');
});

afterAll(() => pipeline.close());

/** Cart events a projector process applied, from its own metrics. */
async function appliedBy(projector: ServiceProcess): Promise<number> {
  const base = listeningAddress(projector);
  if (base === undefined) return 0;
  return metricValue(base, 'sluice_projector_events_applied_total{projection="cart_summary"}');
}

describe('projector rebalance', () => {
  it('views equal the fold while a second projector joins and leaves mid-workload', async () => {
    const first = pipeline.startProjector();
    await first.waitForOutput('"msg":"consuming"', {
      timeoutMs: 60_000,
      message: 'the first projector to consume',
    });
    const workload = shoppingWorkload(pipeline, {
      carts: 60,
      rounds: 40,
      tag: 'REBAL',
    });
    await waitFor(async () => (await pipeline.cartEventsApplied()) > 200, {
      timeoutMs: 60_000,
      message: 'the first projector to apply events',
    });

    // Grow: the group rebalances and the second process takes over some partitions.
    const second = pipeline.startProjector();
    await second.waitForOutput('"msg":"consuming"', {
      timeoutMs: 60_000,
      message: 'the second projector to join',
    });
    await waitFor(async () => (await appliedBy(second)) > 0, {
      timeoutMs: 60_000,
      message: 'the second projector to apply events of its partitions',
    });
    const appliedBySecond = await appliedBy(second);

    // Shrink: it leaves gracefully; the first takes every partition back.
    second.kill('SIGTERM');
    expect(await second.exited()).toBe(0);
    await workload;
    await pipeline.expectCartSummariesConverge();
    expect(await pipeline.offsetGaps()).toBe(0);

    const { rows } = await pipeline.pool.query<{ n: string }>(
      `SELECT count(*)::text AS n FROM shop.outbox WHERE aggregate_type = 'cart'`,
    );
    const cartEvents = Number(rows[0]?.n ?? 0);
    // Each event applied exactly once across both processes.
    expect(await pipeline.cartEventsApplied()).toBe(cartEvents);
    const appliedByFirst = await appliedBy(first);
    expect(appliedByFirst).toBeGreaterThan(0);
    expect(first.child.exitCode).toBeNull();
    console.log(JSON.stringify({ rebalance: { cartEvents, appliedByFirst, appliedBySecond } }));
  });
});

// Blue/green rebuilds while writes continue: the new generations replay every event into new
// tables (surviving a kill -9 of the projector on the way), readers keep getting answers from
// the old ones and never see a view step back, and after the swap the views equal the fold.
import { waitFor } from '@sluice/testkit';
import { operatorHeaders, shopAdminHeaders } from '../support/access.js';
import { shoppingWorkload, startPipeline, type Pipeline } from '../support/pipeline.js';
import { listeningAddress, type ServiceProcess } from '../support/services.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

let pipeline: Pipeline;

beforeAll(async () => {
  pipeline = await startPipeline('prebuild');
});

afterAll(() => pipeline.close());

interface Generations {
  items: {
    projection: string;
    generations: { generation: number; state: string }[];
    rebuild?: { behind: number };
  }[];
}

async function operations(
  projector: ServiceProcess,
  method: 'GET' | 'POST',
  path: string,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const base = listeningAddress(projector);
  if (base === undefined) throw new Error('the projector has not logged its address yet');
  const response = await fetch(`${base}${path}`, { method, headers: await operatorHeaders() });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

/** Generation states per projection, e.g. `{ cart_summary: '1:retired 2:active' }`. */
async function generationStates(projector: ServiceProcess): Promise<Record<string, string>> {
  const { body } = await operations(projector, 'GET', '/projections');
  return Object.fromEntries(
    (body as unknown as Generations).items.map((item) => [
      item.projection,
      item.generations.map((g) => `${g.generation}:${g.state}`).join(' '),
    ]),
  );
}

/**
 * Reads through shop-api until stopped: every cart the view had at the start must answer 200
 * with a version never lower than the one seen before, and the report must answer 200.
 */
function readContinuously(carts: readonly string[]): {
  stop(): Promise<{ reads: number; failures: string[] }>;
} {
  const state = { running: true };
  let reads = 0;
  const failures: string[] = [];
  const seen = new Map<string, number>();
  const loop = (async () => {
    while (state.running) {
      const cart = carts[reads % carts.length] ?? '';
      try {
        const headers = shopAdminHeaders();
        const response = await fetch(`${pipeline.base}/views/carts/${cart}`, { headers });
        const body = (await response.json()) as { version?: number };
        const version = body.version ?? -1;
        if (response.status !== 200) failures.push(`cart ${cart}: ${response.status}`);
        else if (version < (seen.get(cart) ?? 0))
          failures.push(`cart ${cart}: version ${version} after ${seen.get(cart)}`);
        seen.set(cart, Math.max(version, seen.get(cart) ?? 0));
        const report = await fetch(`${pipeline.base}/views/reports/removed-then-bought`, {
          headers,
        });
        if (report.status !== 200) failures.push(`report: ${report.status}`);
        await report.arrayBuffer();
      } catch (error) {
        failures.push(`cart ${cart}: ${String(error)}`);
      }
      reads += 1;
    }
  })();
  return {
    async stop() {
      state.running = false;
      await loop;
      return { reads, failures };
    },
  };
}

describe('projector rebuild', () => {
  it('rebuilds blue/green while writes continue: reads never fail, the result equals the fold', async () => {
    // This process never checks generations by itself: the rebuild cannot finish before the kill.
    let projector = pipeline.startProjector({ PROJECTOR_GENERATION_POLL_MS: '3600000' });
    await projector.waitForOutput('"msg":"consuming"', {
      timeoutMs: 60_000,
      message: 'the projector to consume',
    });
    await shoppingWorkload(pipeline, { carts: 30, rounds: 10, tag: 'RB0' });
    await pipeline.expectCartSummariesConverge();
    const { rows } = await pipeline.pool.query<{ cart_id: string }>(
      'SELECT cart_id FROM views.cart_summaries ORDER BY cart_id',
    );
    const readers = readContinuously(rows.map((row) => row.cart_id));

    // Writes continue, batch after batch, until both rebuilds have swapped (and one batch more).
    const rebuilds = { swapped: false };
    const writes = (async () => {
      for (let round = 1; ; round += 1) {
        await shoppingWorkload(pipeline, { carts: 20, rounds: 8, tag: `RB${round}` });
        if (rebuilds.swapped) return round;
      }
    })();
    writes.catch(() => undefined);

    expect((await operations(projector, 'POST', '/projections/no_such/rebuild')).status).toBe(404);
    const started = await Promise.all(
      ['cart_summary', 'cart_summary', 'product_sales'].map((name) =>
        operations(projector, 'POST', `/projections/${name}/rebuild`),
      ),
    );
    expect(started.map((answer) => answer.status).sort()).toEqual([202, 202, 409]);
    expect(started.find((answer) => answer.status === 409)?.body.code).toBe('rebuild_in_progress');
    expect(started.filter((answer) => answer.status === 202).map((a) => a.body)).toEqual([
      expect.objectContaining({ generation: 2, state: 'building' }),
      expect.objectContaining({ generation: 2, state: 'building' }),
    ]);

    // kill -9 while the new generation replays; a new process resumes it where it stopped.
    await waitFor(
      async () => {
        const { rows: progress } = await pipeline.pool.query<{ n: string }>(
          `SELECT count(*)::text AS n FROM sluice.projection_checkpoints WHERE projection = 'cart_summary.g2'`,
        );
        return Number(progress[0]?.n ?? 0) > 0;
      },
      { timeoutMs: 60_000, intervalMs: 20, message: 'the rebuild to apply a batch' },
    );
    const states = await generationStates(projector);
    projector.kill('SIGKILL');
    await projector.exited();
    projector = pipeline.startProjector();
    await projector.waitForOutput('"msg":"consuming"', {
      timeoutMs: 60_000,
      message: 'the restarted projector to consume',
    });
    const current = projector;
    await waitFor(
      async () => {
        const now = await generationStates(current);
        return (
          now.cart_summary === '1:retired 2:active' && now.product_sales === '1:retired 2:active'
        );
      },
      { timeoutMs: 120_000, intervalMs: 100, message: 'both rebuilds to swap' },
    );
    rebuilds.swapped = true;
    const rounds = await writes;
    const { reads, failures } = await readers.stop();

    await pipeline.expectCartSummariesConverge();
    await pipeline.expectProductSalesConverge();
    const { rows: events } = await pipeline.pool.query<{ n: string }>(
      `SELECT count(*)::text AS n FROM shop.outbox WHERE aggregate_type = 'cart'`,
    );
    // Each cart event applied once in the new generation.
    expect(await pipeline.cartEventsApplied()).toBe(Number(events[0]?.n ?? 0));
    const { rows: views } = await pipeline.pool.query<{ definition: string }>(
      `SELECT pg_get_viewdef('views.cart_summaries'::regclass) AS definition`,
    );
    expect(views[0]?.definition).toContain('cart_summaries_g2');
    expect(failures).toEqual([]);
    expect(reads).toBeGreaterThan(50);
    expect(states.cart_summary).toBe('1:active 2:building');
    // Writes went on before and after the swap.
    expect(rounds).toBeGreaterThan(1);
    const untouched = await generationStates(projector);
    expect(untouched.audit_log).toBe('1:active');
    console.log(JSON.stringify({ rebuild: { reads, rounds, cartEvents: Number(events[0]?.n) } }));
  });
});

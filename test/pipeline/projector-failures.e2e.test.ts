// Views stay equal to the fold of the write model while the projector is killed mid-batch, and
// when Kafka delivers everything again (duplicates at new offsets, a group reset to earliest).
import { testKafka, waitFor } from '@sluice/testkit';
import { readTopic } from '../relay/harness.js';
import { shoppingWorkload, startPipeline, type Pipeline } from '../support/pipeline.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

let pipeline: Pipeline;

beforeAll(async () => {
  pipeline = await startPipeline('pfail');
});

afterAll(() => pipeline.close());

describe('projector failures', () => {
  it('views equal the fold after 10 kill -9s mid-batch, and after every event is delivered again', async () => {
    let writing = true;
    const workload = shoppingWorkload(pipeline, {
      carts: 40,
      rounds: 25,
      tag: 'PF',
    }).then(() => {
      writing = false;
    });

    for (let kill = 0; kill < 10; kill += 1) {
      const projector = pipeline.startProjector();
      await projector.waitForOutput('"msg":"metrics listening"', {
        timeoutMs: 60_000,
        message: 'the projector to start',
      });
      const before = await pipeline.cartEventsApplied();
      await waitFor(async () => (await pipeline.cartEventsApplied()) > before || !writing, {
        timeoutMs: 60_000,
        intervalMs: 20 + Math.floor(Math.random() * 100),
        message: 'the projector to apply a batch',
      });
      projector.kill('SIGKILL');
      await projector.exited();
    }
    await workload;
    let projector = pipeline.startProjector();
    await pipeline.expectCartSummariesConverge();
    expect(await pipeline.offsetGaps()).toBe(0);
    const applied = await pipeline.cartEventsApplied();

    // Everything again: re-produce 10 % of the events at new offsets, and reset the group.
    projector.kill('SIGTERM');
    await projector.exited();
    const kafka = testKafka(pipeline.kafkaBrokers);
    const topic = `${pipeline.topicPrefix}outbox.event.cart`;
    const records = await readTopic(pipeline.kafkaBrokers, topic);
    const total = records.length;
    const sample = records
      .filter(() => Math.random() < 0.1)
      .map(({ key, value, headers }) => ({ key, value, headers }));
    const admin = kafka.admin();
    await admin.connect();
    const producer = kafka.producer();
    await producer.connect();
    await producer.send({ topic, messages: sample });
    await producer.disconnect();
    // The group cart_summary reads through (shared with the other projections by default).
    const { groups } = await admin.listGroups();
    const groupId = groups
      .map((g) => g.groupId)
      .find((id) => id.startsWith(pipeline.groupPrefix) && id.includes('cart_summary'));
    expect(groupId).toBeDefined();
    // The group empties once the members killed earlier time out.
    await waitFor(
      async () => {
        await admin.resetOffsets({
          groupId: groupId ?? '',
          topic,
          earliest: true,
        });
        return true;
      },
      { timeoutMs: 60_000, intervalMs: 500, message: 'the consumer group to be empty' },
    );
    await admin.disconnect();

    projector = pipeline.startProjector();
    await waitFor(
      async () => {
        const { rows } = await pipeline.pool.query<{ n: string }>(
          `SELECT COALESCE(sum(next_offset), 0)::text AS n FROM sluice.projection_checkpoints WHERE projection = 'cart_summary'`,
        );
        return Number(rows[0]?.n ?? 0) >= total + sample.length;
      },
      { timeoutMs: 120_000, message: 'the duplicates to be consumed' },
    );
    await pipeline.expectCartSummariesConverge(10_000);
    expect(await pipeline.offsetGaps()).toBe(0);
    expect(await pipeline.cartEventsApplied()).toBe(applied);
    console.log(
      JSON.stringify({
        projectorFailures: { events: total, duplicatesProduced: sample.length, kills: 10 },
      }),
    );
    projector.kill('SIGTERM');
    await projector.exited();
  });

  it("views equal the fold when the projector's database connections are cut mid-batch", async () => {
    const projector = pipeline.startProjector();
    await projector.waitForOutput('"msg":"consuming"', {
      timeoutMs: 60_000,
      message: 'the projector to consume',
    });
    let writing = true;
    const workload = shoppingWorkload(pipeline, { carts: 30, rounds: 20, tag: 'PCUT' }).then(() => {
      writing = false;
    });
    /** Terminates the projector's connections (those in a batch's transaction only); how many. */
    const terminate = async (inTransaction: boolean) => {
      const { rows } = await pipeline.pool.query<{ n: string }>(
        `SELECT count(pg_terminate_backend(pid))::text AS n FROM pg_stat_activity
          WHERE datname = current_database() AND application_name = 'sluice-projector'
            AND (NOT $1 OR backend_xid IS NOT NULL)`,
        [inTransaction],
      );
      return Number(rows[0]?.n ?? 0);
    };
    let cut = 0;
    let midBatch = 0;
    for (let round = 0; round < 5; round += 1) {
      const before = await pipeline.cartEventsApplied();
      await waitFor(async () => (await pipeline.cartEventsApplied()) > before || !writing, {
        timeoutMs: 60_000,
        intervalMs: 10,
        message: 'the projector to apply a batch',
      });
      // A transaction under way first (a batch dies half-way), then every connection.
      await waitFor(
        async () => {
          midBatch += await terminate(true);
          return midBatch > round || !writing;
        },
        { timeoutMs: 60_000, intervalMs: 2, message: 'a projector transaction to cut' },
      );
      cut += await terminate(false);
    }
    await workload;
    await pipeline.expectCartSummariesConverge();
    expect(await pipeline.offsetGaps()).toBe(0);
    const { rows } = await pipeline.pool.query<{ n: string }>(
      `SELECT count(*)::text AS n FROM shop.outbox WHERE aggregate_type = 'cart'`,
    );
    // Each event applied once, although batches died half-way and came again.
    expect(await pipeline.cartEventsApplied()).toBe(Number(rows[0]?.n ?? 0));
    expect(cut).toBeGreaterThan(0);
    // Batches did die half-way (and were applied again: the views equal the fold).
    expect(midBatch).toBeGreaterThan(0);
    expect(projector.child.exitCode).toBeNull();
    console.log(JSON.stringify({ projectorConnectionsCut: cut, midBatch }));
    projector.kill('SIGTERM');
    expect(await projector.exited()).toBe(0);
  });
});

// The pipeline on a cluster of three brokers (replication 3, min.insync.replicas 2). Projectors
// start reliably on fresh topics that others create at the same moment. While writes flow at a
// steady rate, the leader of a partition is killed, then a second broker, then both come
// back; later the leading relay is killed -9 and its standby takes over, with two projector
// processes sharing the work. Nothing acknowledged is lost, each aggregate stays in order, each
// event is applied once, the views equal the fold, and the relay reports the under-replicated
// period and resumes by itself.
import { createTopicEnsurer } from '@sluice/kafka';
import { createKafkaCluster, type KafkaCluster } from '@sluice/stack';
import { testKafka, uniqueName, waitFor } from '@sluice/testkit';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasLocalServers } from '../relay/harness.js';
import { shopAdminHeaders } from '../support/access.js';
import { startPipeline, type Pipeline } from '../support/pipeline.js';
import { settledViolations, shopTopics } from '../support/pipeline-invariants.js';
import { listeningAddress, metricValue, type ServiceProcess } from '../support/services.js';

const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CARTS = 24;

/** Adds items to the carts at a steady rate until stopped; counts the writes shop-api acknowledged. */
function steadyWriter(pipeline: Pipeline, carts: readonly string[], productId: string) {
  const state = { stopped: false };
  let acknowledged = 0;
  const failures: string[] = [];
  const done = (async () => {
    for (let i = 0; !state.stopped; i += 1) {
      const started = Date.now();
      const response = await fetch(`${pipeline.base}/carts/${carts[i % carts.length]}/items`, {
        method: 'POST',
        headers: { ...shopAdminHeaders(), 'content-type': 'application/json' },
        body: JSON.stringify({ productId, quantity: 1 + (i % 3) }),
      });
      if (response.ok) acknowledged += 1;
      else failures.push(`${response.status} ${await response.text()}`);
      // About 40 writes a second, whatever each one took.
      await new Promise((next) => setTimeout(next, Math.max(0, 25 - (Date.now() - started))));
    }
  })();
  return {
    acknowledged: () => acknowledged,
    failures,
    async stop() {
      state.stopped = true;
      await done;
    },
  };
}

describe.skipIf(!hasLocalServers())('the pipeline on a three-broker cluster', () => {
  let dataDir: string | undefined;
  let running: { cluster: KafkaCluster; pipeline?: Pipeline } | undefined;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'sluice-cluster-'));
    const cluster = createKafkaCluster({
      kafkaHome: join(rootDir, 'infra', 'kafka'),
      dataDir,
      nodes: 3,
      // The quorum on a node of its own, as production runs it: it outlives two brokers.
      controllers: 1,
      heap: '512m',
    });
    running = { cluster };
    await cluster.start();
    const brokers = cluster.brokers.join(',');
    running.pipeline = await startPipeline(
      'cluster',
      {
        relay: { KAFKA_BROKERS: brokers, RELAY_STALLED_AFTER_MS: '3000' },
        projector: { KAFKA_BROKERS: brokers },
      },
      { kafkaBrokers: cluster.brokers },
    );
  });

  afterAll(async () => {
    await running?.pipeline?.close();
    await running?.cluster.stop({ kill: true });
    if (dataDir !== undefined) await rm(dataDir, { recursive: true, force: true });
  });

  it('starts projectors reliably while others create the same topics on the fresh cluster', async () => {
    const { cluster, pipeline } = running ?? {};
    if (cluster === undefined || pipeline === undefined) throw new Error('not started');
    for (let round = 1; round <= 3; round += 1) {
      const prefix = `${uniqueName(`fresh${round}`)}.`;
      const settings = { PROJECTOR_TOPIC_PREFIX: prefix, PROJECTOR_GROUP_PREFIX: `${prefix}g.` };
      const projectors = [pipeline.startProjector(settings), pipeline.startProjector(settings)];
      // A third creator of the same topics, as the relay is.
      await createTopicEnsurer(testKafka(cluster.brokers))(shopTopics(prefix));
      for (const projector of projectors) {
        await projector.waitForOutput('"msg":"consuming"', {
          timeoutMs: 60_000,
          message: `projector to consume from fresh topics (round ${round})`,
        });
        expect(projector.output()).not.toMatch(
          /UNKNOWN_TOPIC_OR_PARTITION|"level":"(error|fatal)"/,
        );
        projector.kill('SIGKILL');
        await projector.exited();
      }
    }
  });

  it('loses nothing while brokers and the leading relay die, and converges to the fold', async () => {
    const { cluster, pipeline } = running ?? {};
    if (cluster === undefined || pipeline === undefined) throw new Error('not started');
    const tag = uniqueName('cl');
    const customer = await pipeline.post('/customers', { email: `${tag}@example.com`, name: 'C' });
    const product = await pipeline.post('/products', {
      sku: tag,
      name: 'P',
      priceCents: 250,
      stock: 10_000_000,
    });
    const carts = await Promise.all(
      Array.from({ length: CARTS }, () => pipeline.post('/carts', { customerId: customer.id })),
    );
    const projectors = [pipeline.startProjector(), pipeline.startProjector()];
    await Promise.all(
      projectors.map((projector) =>
        projector.waitForOutput('"msg":"consuming"', {
          timeoutMs: 90_000,
          message: 'both projectors to consume from the cluster',
        }),
      ),
    );
    const writer = steadyWriter(
      pipeline,
      carts.map((cart) => String(cart.id)),
      String(product.id),
    );
    const [relay] = pipeline.relays;
    if (relay === undefined) throw new Error('no relay');
    const standby = pipeline.startRelay();
    const cartTopic = `${pipeline.topicPrefix}outbox.event.cart`;
    try {
      await untilApplied(pipeline, 200, 'the first events applied on the cluster');

      // The leader of partition 0, then a second broker: one replica in sync, below min.insync.
      const leader = await leaderOf(cluster, cartTopic);
      const second = cluster.nodes.find((node) => node.nodeId !== leader.nodeId);
      if (second === undefined) throw new Error('no second broker');
      await leader.stop({ kill: true });
      const progressed = await appliedNow(pipeline);
      await untilApplied(pipeline, progressed + 100, 'events applied with one broker down');
      await second.stop({ kill: true });
      const metrics = metricsOf(relay);
      await waitFor(
        async () => (await metricValue(await metrics, 'sluice_relay_under_min_insync')) === 1,
        {
          timeoutMs: 60_000,
          message: 'the relay to report sends below min.insync.replicas',
        },
      );
      await Promise.all([leader.start(), second.start()]);
      await waitFor(
        async () => (await metricValue(await metrics, 'sluice_relay_under_min_insync')) === 0,
        {
          timeoutMs: 90_000,
          message: 'the relay to resume by itself once the brokers are back',
        },
      );
      const resumed = await appliedNow(pipeline);
      await untilApplied(pipeline, resumed + 200, 'events applied after the brokers returned');

      // The leading relay dies mid-stream; its standby takes over.
      relay.kill('SIGKILL');
      await relay.exited();
      await waitFor(
        async () => (await metricValue(await metricsOf(standby), 'sluice_relay_leader')) === 1,
        {
          timeoutMs: 60_000,
          message: 'the standby relay to take the lead',
        },
      );
      const takenOver = await appliedNow(pipeline);
      await untilApplied(pipeline, takenOver + 200, 'events applied through the standby');
    } finally {
      await writer.stop();
    }
    expect(writer.failures).toEqual([]);
    expect(writer.acknowledged()).toBeGreaterThan(600);

    expect(
      await settledViolations(pipeline.pool, cluster.brokers, pipeline.topicPrefix, 120_000),
    ).toEqual([]);
    for (const projector of projectors) expect(projector.child.exitCode).toBeNull();
  }, 300_000);
});

/** Every topic the shop's projectors read or dead-letter to under `prefix`. */
/** Events applied so far by the cart-summary projection. */
const appliedNow = (pipeline: Pipeline) => pipeline.cartEventsApplied();

async function untilApplied(pipeline: Pipeline, count: number, message: string): Promise<void> {
  await waitFor(async () => (await appliedNow(pipeline)) >= count, { timeoutMs: 90_000, message });
}

/** The node leading partition 0 of `topic`. */
async function leaderOf(cluster: KafkaCluster, topic: string) {
  const admin = testKafka(cluster.brokers).admin();
  await admin.connect();
  try {
    const { topics } = await admin.fetchTopicMetadata({ topics: [topic] });
    const leaderId = topics[0]?.partitions.find((p) => p.partitionId === 0)?.leader;
    const node = cluster.nodes.find((candidate) => candidate.nodeId === leaderId);
    if (node === undefined) throw new Error(`no live leader for ${topic}[0]: ${String(leaderId)}`);
    return node;
  } finally {
    await admin.disconnect();
  }
}

/** The metrics address a service logged once it listens. */
function metricsOf(service: ServiceProcess): Promise<string> {
  return waitFor(() => listeningAddress(service), {
    timeoutMs: 30_000,
    message: `${service.name} to listen for metrics`,
  });
}

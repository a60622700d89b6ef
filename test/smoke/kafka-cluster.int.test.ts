// The embedded Kafka as a three-node KRaft cluster (replication 3, min.insync.replicas 2): it
// keeps taking acks=all writes with one node down, refuses them with two down, and heals when
// both come back; and the oldest line Sluice promises, 3.9, still starts as a single node.
import { createKafkaCluster, createKafkaServer, type KafkaCluster } from '@sluice/stack';
import { createTopicsWith, freePort, testKafka, uniqueName, waitFor } from '@sluice/testkit';
import type { Admin, Producer } from 'kafkajs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const kafkaHome = join(rootDir, 'infra', 'kafka');

/** Distinct free ports. */
async function freePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await freePort());
  return [...ports];
}

describe('a three-node Kafka cluster', () => {
  let cluster: KafkaCluster;
  let admin: Admin;
  let producer: Producer;
  const topic = uniqueName('cluster');
  const cleanups: (() => Promise<unknown>)[] = [];

  beforeAll(async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'sluice-kafka-cluster-'));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    const ports = await freePorts(6);
    cluster = createKafkaCluster({
      kafkaHome,
      dataDir,
      nodes: 3,
      heap: '512m',
      ports: [0, 1, 2].map((i) => ({
        port: ports[2 * i] ?? 0,
        controllerPort: ports[2 * i + 1] ?? 0,
      })),
    });
    cleanups.push(() => cluster.stop({ kill: true }));
    await cluster.start();
    const kafka = testKafka(cluster.brokers);
    admin = kafka.admin();
    producer = kafka.producer({ allowAutoTopicCreation: false, retry: { retries: 0 } });
    await admin.connect();
    cleanups.push(() => admin.disconnect());
    await producer.connect();
    cleanups.push(() => producer.disconnect());
  });

  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  const send = (value: string) =>
    producer.send({ topic, acks: -1, timeout: 3000, messages: [{ value }] });

  async function partition0() {
    const { topics } = await admin.fetchTopicMetadata({ topics: [topic] });
    const partition = topics[0]?.partitions.find((p) => p.partitionId === 0);
    if (partition === undefined) throw new Error(`no partition 0 of ${topic}`);
    return partition;
  }

  it('numbers its nodes and lists every broker', async () => {
    expect(cluster.nodes.map((node) => node.nodeId)).toEqual([1, 2, 3]);
    expect(cluster.brokers).toHaveLength(3);
    const { brokers } = await admin.describeCluster();
    expect(brokers.map((broker) => broker.nodeId).sort()).toEqual([1, 2, 3]);
  });

  it('takes acks=all writes with one node down, refuses them with two, heals when both return', async () => {
    await createTopicsWith(admin, [{ topic, numPartitions: 1, replicationFactor: 3 }]);
    await send('all three');
    const leaderId = (await partition0()).leader;
    const leader = cluster.nodes.find((node) => node.nodeId === leaderId);
    const second = cluster.nodes.find((node) => node.nodeId !== leaderId);
    if (leader === undefined || second === undefined) throw new Error(`no leader ${leaderId}`);

    await leader.stop({ kill: true });
    await waitFor(
      async () => {
        const partition = await partition0().catch(() => undefined);
        return partition !== undefined && partition.leader !== leaderId;
      },
      { timeoutMs: 30_000, message: 'a new leader of partition 0' },
    );
    await waitFor(
      () =>
        send('two of three').then(
          () => true,
          () => false,
        ),
      {
        timeoutMs: 30_000,
        message: 'an acks=all write with two in-sync replicas',
      },
    );

    await second.stop({ kill: true });
    await waitFor(
      () =>
        send('one of three').then(
          () => false,
          () => true,
        ),
      {
        timeoutMs: 30_000,
        message: 'acks=all writes refused with one replica in sync',
      },
    );
    await expect(send('still one of three')).rejects.toThrow(
      /NOT_ENOUGH_REPLICAS|replicas|timed out|timeout|leader|connect/i,
    );

    await Promise.all([leader.start(), second.start()]);
    await waitFor(
      () =>
        send('all back').then(
          () => true,
          () => false,
        ),
      {
        timeoutMs: 60_000,
        message: 'acks=all writes once both nodes are back',
      },
    );
    await waitFor(async () => (await partition0()).isr.length === 3, {
      timeoutMs: 60_000,
      message: 'all three replicas back in sync',
    });
  });
});

describe('Apache Kafka 3.9', () => {
  it('still starts as a single node, and its data is refused to Kafka 4', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'sluice-kafka39-'));
    const [port = 0, controllerPort = 0] = await freePorts(2);
    const options = { kafkaHome, dataDir, port, controllerPort, heap: '512m' };
    const kafka = createKafkaServer({ ...options, version: '3.9.2' });
    try {
      // Ready means it took a produce acknowledged by all replicas.
      await kafka.start();
      expect(kafka.version).toBe('3.9.2');
      await kafka.stop();
      await expect(createKafkaServer(options).start()).rejects.toMatchObject({
        code: 'kafka_version_mismatch',
      });
    } finally {
      await kafka.stop({ kill: true });
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

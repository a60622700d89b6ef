// kafkajs' send (src/producer/sendMessages.js), patched (patches/kafkajs@2.2.4.patch) and
// original (the `kafkajs-original` dev dependency), over a scripted cluster: which messages each
// attempt produces to which broker, and what the send resolves with. The original retried only
// brokers without a response, so partitions that moved from a failed broker to one that had
// answered were never sent, and the send succeeded: events acknowledged to PostgreSQL and lost.
import fc from 'fast-check';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';

const require = createRequire(import.meta.url);

interface Message {
  key: string;
  value: string;
  partition: number;
}
interface Produced {
  attempt: number;
  node: number;
  partition: number;
  keys: string[];
}
interface Send {
  (args: {
    acks: number;
    timeout: number;
    topicMessages: { topic: string; messages: Message[] }[];
  }): Promise<{ topicName: string; partition: number; baseOffset: string }[]>;
}
type SendMessages = (options: Record<string, unknown>) => Send;
type CreateRetry = (options: Record<string, number>) => unknown;

const originalRoot = dirname(require.resolve('kafkajs-original/package.json'));
const copies = {
  patched: require('kafkajs/src/producer/sendMessages') as SendMessages,
  original: require(join(originalRoot, 'src/producer/sendMessages')) as SendMessages,
};
const createRetry = require('kafkajs/src/retry') as CreateRetry;

const TOPIC = 't';
const silent = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
};

/**
 * A cluster whose partition leaders follow `leaders[attempt]` (the last one holds after), where
 * the nodes in `failing[attempt]` refuse produce requests with a connection error; metadata is
 * refreshed, and the attempt advances, on every retriable failure, as kafkajs does.
 */
function scriptedCluster(script: { leaders: number[][]; failing: number[][] }) {
  let attempt = 0;
  let offset = 0;
  const produced: Produced[] = [];
  const leadersNow = () => script.leaders[Math.min(attempt, script.leaders.length - 1)] ?? [];
  const brokers = new Map<number, object>();
  const broker = (nodeId: number) => {
    const existing = brokers.get(nodeId);
    if (existing !== undefined) return existing;
    const made = {
      nodeId,
      produce: ({
        topicData,
      }: {
        topicData: { partitions: { partition: number; messages: Message[] }[] }[];
      }) => {
        if ((script.failing[attempt] ?? []).includes(nodeId)) {
          return Promise.reject(
            Object.assign(new Error(`node ${nodeId} is down`), {
              name: 'KafkaJSConnectionError',
              retriable: true,
            }),
          );
        }
        const partitions = topicData.flatMap((topic) => topic.partitions);
        for (const { partition, messages } of partitions)
          produced.push({ attempt, node: nodeId, partition, keys: messages.map((m) => m.key) });
        const answered = partitions.map(({ partition, messages }) => {
          offset += messages.length;
          return { partition, errorCode: 0, baseOffset: String(offset - messages.length) };
        });
        return Promise.resolve({ topics: [{ topicName: TOPIC, partitions: answered }] });
      },
    };
    brokers.set(nodeId, made);
    return made;
  };
  const cluster = {
    targetTopics: new Set([TOPIC]),
    addMultipleTargetTopics: () => Promise.resolve(),
    refreshMetadataIfNecessary: () => Promise.resolve(),
    refreshMetadata: () => {
      attempt += 1;
      return Promise.resolve();
    },
    isConnected: () => true,
    removeBroker: () => undefined,
    findTopicPartitionMetadata: () =>
      leadersNow().map((leader, partitionId) => ({ partitionId, leader })),
    findLeaderForPartitions: (_topic: string, partitions: string[]) => {
      const result: Record<number, number[]> = {};
      for (const id of partitions.map(Number)) {
        const leader = leadersNow()[id] ?? -1;
        (result[leader] ??= []).push(id);
      }
      return result;
    },
    findBroker: ({ nodeId }: { nodeId: string }) => Promise.resolve(broker(Number(nodeId))),
  };
  return { cluster, produced };
}

/** A send of `messages` by `copy` over `script`: what it produced, and what it resolved with. */
async function send(
  copy: SendMessages,
  script: { leaders: number[][]; failing: number[][] },
  messages: Message[],
) {
  const { cluster, produced } = scriptedCluster(script);
  const sequences = new Map<number, number>();
  const eosManager = {
    isTransactional: () => false,
    acquireBrokerLock: () => Promise.resolve(),
    releaseBrokerLock: () => Promise.resolve(),
    getSequence: (_topic: string, partition: number) => sequences.get(partition) ?? 0,
    updateSequence: (_topic: string, partition: number, by: number) =>
      sequences.set(partition, (sequences.get(partition) ?? 0) + by),
    getProducerId: () => 1,
    getProducerEpoch: () => 0,
  };
  const retrier = createRetry({ retries: 10, initialRetryTime: 1, maxRetryTime: 2 });
  const run = copy({
    logger: silent,
    cluster,
    partitioner: ({ message }: { message: Message }) => message.partition,
    eosManager,
    retrier,
  });
  const resolved = await run({
    acks: -1,
    timeout: 1000,
    topicMessages: [{ topic: TOPIC, messages }],
  });
  return { produced, resolved, sequences };
}

const messagesTo = (partitions: number[]): Message[] =>
  partitions.map((partition, i) => ({ key: `m${i}`, value: `v${i}`, partition }));
const delivered = (produced: Produced[]) => produced.flatMap((p) => p.keys).sort();

describe('kafkajs send retries', () => {
  it('send the partitions that moved from a failed broker to one that had answered', async () => {
    // Partition 0 on node 1 answers; partition 1's leader, node 2, is down and partition 1
    // moves to node 1 before the retry.
    const script = {
      leaders: [
        [1, 2],
        [1, 1],
      ],
      failing: [[2]],
    };
    const messages = messagesTo([0, 1, 1]);
    const fixed = await send(copies.patched, script, messages);
    expect(delivered(fixed.produced)).toEqual(['m0', 'm1', 'm2']);
    expect(fixed.produced).toEqual([
      { attempt: 0, node: 1, partition: 0, keys: ['m0'] },
      { attempt: 1, node: 1, partition: 1, keys: ['m1', 'm2'] },
    ]);
    expect(fixed.resolved.map((r) => r.partition).sort()).toEqual([0, 1]);
    expect([...fixed.sequences]).toEqual([
      [0, 1],
      [1, 2],
    ]);
    // The original resolves as if all went out, and never sent partition 1.
    const original = await send(copies.original, script, messages);
    expect(delivered(original.produced)).toEqual(['m0']);
    expect(original.resolved.map((r) => r.partition)).toEqual([0]);
  });

  it('produce as the original when no partition moves to a broker that answered', async () => {
    const scripts = [
      { leaders: [[1, 2, 3]], failing: [] },
      { leaders: [[1, 2, 3]], failing: [[2], [2, 3]] },
      // Moved from the failed node to one that had nothing to answer for.
      {
        leaders: [
          [1, 2, 2],
          [1, 3, 3],
        ],
        failing: [[2]],
      },
      { leaders: [[1, 1, 1]], failing: [[1]] },
    ];
    for (const script of scripts) {
      const messages = messagesTo([0, 1, 2, 2, 0]);
      const [fixed, original] = await Promise.all([
        send(copies.patched, script, messages),
        send(copies.original, script, messages),
      ]);
      expect(fixed.produced).toEqual(original.produced);
      expect(fixed.resolved).toEqual(original.resolved);
      expect([...fixed.sequences]).toEqual([...original.sequences]);
    }
  });

  it('deliver every message once to the leader it has when its attempt succeeds, whatever moves and fails', async () => {
    const node = fc.integer({ min: 1, max: 3 });
    const scenario = fc.record({
      leaders: fc.array(fc.array(node, { minLength: 4, maxLength: 4 }), {
        minLength: 1,
        maxLength: 4,
      }),
      failing: fc.array(fc.subarray([1, 2, 3], { maxLength: 2 }), { maxLength: 4 }),
      partitions: fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 12 }),
    });
    await fc.assert(
      fc.asyncProperty(scenario, async ({ leaders, failing, partitions }) => {
        const messages = messagesTo(partitions);
        const { produced, resolved } = await send(copies.patched, { leaders, failing }, messages);
        expect(delivered(produced)).toEqual(messages.map((m) => m.key).sort());
        for (const p of produced) {
          const attemptLeaders = leaders[Math.min(p.attempt, leaders.length - 1)] ?? [];
          expect(p.node).toBe(attemptLeaders[p.partition]);
        }
        expect(resolved.map((r) => r.partition).sort()).toEqual(
          [...new Set(produced.map((p) => `${p.attempt}:${p.partition}`))]
            .map((k) => Number(k.split(':')[1]))
            .sort(),
        );
      }),
      { numRuns: 200 },
    );
  });
});

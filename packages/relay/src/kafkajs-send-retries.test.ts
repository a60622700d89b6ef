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
  topic: string;
  partition: number;
  keys: string[];
}
type TopicMessages = { topic: string; messages: Message[] }[];
interface Send {
  (args: {
    acks: number;
    timeout: number;
    topicMessages: TopicMessages;
  }): Promise<{ topicName: string; partition: number; baseOffset: string }[]>;
}
type SendMessages = (options: Record<string, unknown>) => Send;
type CreateRetry = (options: Record<string, number>) => unknown;
interface ProduceArgs {
  topicData: { topic: string; partitions: { partition: number; messages: Message[] }[] }[];
}

/**
 * Partition leaders per attempt (`leaders[attempt]`, the last holding after; `leadersOf` per
 * topic), the nodes refusing produce requests per attempt (`failing`), and nodes that answer
 * their first request only after `slowMs` (as the attempt decided when it was sent).
 */
interface Script {
  leaders: number[][];
  leadersOf?: Record<string, number[][]>;
  failing: number[][];
  slowMs?: Record<number, number>;
}

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
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A cluster that follows `script`; metadata is refreshed, and the attempt advances, on every
 * retriable failure, as kafkajs does.
 */
function scriptedCluster(script: Script) {
  let attempt = 0;
  let offset = 0;
  const produced: Produced[] = [];
  const leadersNow = (topic: string) => {
    const leaders = script.leadersOf?.[topic] ?? script.leaders;
    return leaders[Math.min(attempt, leaders.length - 1)] ?? [];
  };
  const slow = new Map(Object.entries(script.slowMs ?? {}).map(([n, ms]) => [Number(n), ms]));
  const answer = (nodeId: number, sentIn: number, { topicData }: ProduceArgs) => {
    if ((script.failing[sentIn] ?? []).includes(nodeId)) {
      const error = new Error(`node ${nodeId} is down`);
      throw Object.assign(error, { name: 'KafkaJSConnectionError', retriable: true });
    }
    const topics = topicData.map(({ topic, partitions }) => ({
      topicName: topic,
      partitions: partitions.map(({ partition, messages }) => {
        produced.push({
          attempt: sentIn,
          node: nodeId,
          topic,
          partition,
          keys: messages.map((m) => m.key),
        });
        offset += messages.length;
        return { partition, errorCode: 0, baseOffset: String(offset - messages.length) };
      }),
    }));
    return { topics };
  };
  const brokers = new Map<number, object>();
  const broker = (nodeId: number) => {
    const made = brokers.get(nodeId) ?? {
      nodeId,
      produce: async (args: ProduceArgs) => {
        const sentIn = attempt;
        const delay = slow.get(nodeId);
        slow.delete(nodeId);
        if (delay !== undefined) await sleep(delay);
        return answer(nodeId, sentIn, args);
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
    findTopicPartitionMetadata: (topic: string) =>
      leadersNow(topic).map((leader, partitionId) => ({ partitionId, leader })),
    findLeaderForPartitions: (topic: string, partitions: string[]) => {
      const result: Record<number, number[]> = {};
      for (const id of partitions.map(Number)) {
        const leader = leadersNow(topic)[id] ?? -1;
        (result[leader] ??= []).push(id);
      }
      return result;
    },
    findBroker: ({ nodeId }: { nodeId: string }) => Promise.resolve(broker(Number(nodeId))),
  };
  return { cluster, produced };
}

/** kafkajs' idempotence bookkeeping: sequences per topic and partition, a lock per broker. */
function eosManager() {
  const sequences = new Map<string, number>();
  const locks = new Map<object, Promise<void>>();
  const released = new Map<object, () => void>();
  return {
    sequences,
    isTransactional: () => false,
    acquireBrokerLock: async (broker: object) => {
      while (locks.has(broker)) await locks.get(broker);
      locks.set(broker, new Promise<void>((resolve) => released.set(broker, resolve)));
    },
    releaseBrokerLock: (broker: object) => {
      locks.delete(broker);
      released.get(broker)?.();
      return Promise.resolve();
    },
    getSequence: (topic: string, partition: number) => sequences.get(`${topic}:${partition}`) ?? 0,
    updateSequence: (topic: string, partition: number, by: number) => {
      const key = `${topic}:${partition}`;
      sequences.set(key, (sequences.get(key) ?? 0) + by);
    },
    getProducerId: () => 1,
    getProducerEpoch: () => 0,
  };
}

/** A send by `copy` over `script`: what it produced, what it resolved with, the sequences. */
async function send(copy: SendMessages, script: Script, topicMessages: TopicMessages) {
  const { cluster, produced } = scriptedCluster(script);
  const eos = eosManager();
  const retrier = createRetry({ retries: 10, initialRetryTime: 1, maxRetryTime: 2 });
  const run = copy({
    logger: silent,
    cluster,
    partitioner: ({ message }: { message: Message }) => message.partition,
    eosManager: eos,
    retrier,
  });
  const resolved = await run({ acks: -1, timeout: 1000, topicMessages });
  return { produced, resolved, sequences: eos.sequences };
}

const messagesTo = (partitions: number[]): Message[] =>
  partitions.map((partition, i) => ({ key: `m${i}`, value: `v${i}`, partition }));
const toTopic = (messages: Message[]): TopicMessages => [{ topic: TOPIC, messages }];
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
    const fixed = await send(copies.patched, script, toTopic(messages));
    expect(delivered(fixed.produced)).toEqual(['m0', 'm1', 'm2']);
    expect(fixed.produced).toEqual([
      { attempt: 0, node: 1, topic: TOPIC, partition: 0, keys: ['m0'] },
      { attempt: 1, node: 1, topic: TOPIC, partition: 1, keys: ['m1', 'm2'] },
    ]);
    expect(fixed.resolved.map((r) => r.partition).sort()).toEqual([0, 1]);
    expect([...fixed.sequences]).toEqual([
      ['t:0', 1],
      ['t:1', 2],
    ]);
    // The original resolves as if all went out, and never sent partition 1.
    const original = await send(copies.original, script, toTopic(messages));
    expect(delivered(original.produced)).toEqual(['m0']);
    expect(original.resolved.map((r) => r.partition)).toEqual([0]);
  });

  it('wait for a request of an earlier attempt still open on a broker, and send what it did not', async () => {
    // Node 1 refuses at once; node 2 answers its first request 30 ms later, failing or not.
    for (const failing of [[[1, 2]], [[1]]]) {
      const script = { leaders: [[1, 2]], failing, slowMs: { 2: 30 } };
      const { produced, resolved } = await send(
        copies.patched,
        script,
        toTopic(messagesTo([0, 1])),
      );
      expect(delivered(produced)).toEqual(['m0', 'm1']);
      expect(resolved.map((r) => r.partition).sort()).toEqual([0, 1]);
    }
  });

  it('count a message given for two topics once in each', async () => {
    const [shared] = messagesTo([0]);
    if (shared === undefined) throw new Error('no message');
    const script = { leaders: [[1]], leadersOf: { b: [[2]] }, failing: [[2]] };
    const topicMessages = [
      { topic: 'a', messages: [shared] },
      { topic: 'b', messages: [shared] },
    ];
    const { produced } = await send(copies.patched, script, topicMessages);
    expect(produced.map((p) => [p.topic, p.node, p.keys])).toEqual([
      ['a', 1, ['m0']],
      ['b', 2, ['m0']],
    ]);
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
        send(copies.patched, script, toTopic(messages)),
        send(copies.original, script, toTopic(messages)),
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
        const { produced, resolved } = await send(
          copies.patched,
          { leaders, failing },
          toTopic(messages),
        );
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

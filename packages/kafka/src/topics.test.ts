import type { Kafka } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import {
  createTopicEnsurer,
  durabilityProblems,
  isTopicMetadataLag,
  replicationFor,
  whenTopicsKnown,
} from './topics.js';

describe('replicationFor', () => {
  it.each([
    [1, {}, { replicationFactor: 1, minInsyncReplicas: 1 }],
    [2, {}, { replicationFactor: 2, minInsyncReplicas: 1 }],
    [3, {}, { replicationFactor: 3, minInsyncReplicas: 2 }],
    [
      9,
      { replicationFactor: 'auto', minInsyncReplicas: 'auto' },
      { replicationFactor: 3, minInsyncReplicas: 2 },
    ],
    [9, { replicationFactor: 5 }, { replicationFactor: 5, minInsyncReplicas: 2 }],
    [3, { minInsyncReplicas: 3 }, { replicationFactor: 3, minInsyncReplicas: 3 }],
  ] as const)('%i brokers, %j → %j', (brokers, options, expected) => {
    expect(replicationFor(brokers, options)).toEqual(expected);
  });
});

describe('durabilityProblems', () => {
  const safe = {
    brokers: 3,
    replicationFactor: 3,
    minInsyncReplicas: 2,
    uncleanLeaderElection: false,
  };

  it('none for 3 replicas, 2 in sync, clean elections; none on a single broker', () => {
    expect(durabilityProblems(safe)).toEqual([]);
    expect(
      durabilityProblems({ ...safe, brokers: 1, replicationFactor: 1, minInsyncReplicas: 1 }),
    ).toEqual([]);
  });

  it.each([
    [
      { replicationFactor: 1, minInsyncReplicas: 1 },
      'replication factor 1 on a cluster of 3 brokers',
    ],
    [{ minInsyncReplicas: 1 }, 'min.insync.replicas 1: a record acknowledged by its leader alone'],
    [
      { minInsyncReplicas: 3 },
      'min.insync.replicas 3 of 3 replicas: one broker down stops every write',
    ],
    [{ minInsyncReplicas: 4 }, 'min.insync.replicas 4 above its 3 replicas'],
    [{ uncleanLeaderElection: true }, 'unclean.leader.election.enable=true'],
  ])('%j: %s', (change, problem) => {
    const found = durabilityProblems({ ...safe, ...change });
    expect(found).toHaveLength(1);
    expect(found[0]).toContain(problem);
  });
});

/** Kafka's error for a topic a broker has not learnt of yet, as kafkajs throws it. */
const unknownTopic = () =>
  Object.assign(new Error('This server does not host this topic-partition'), {
    type: 'UNKNOWN_TOPIC_OR_PARTITION',
  });

/**
 * A Kafka whose admin creates topics and whose metadata lags: the first `lagging` reads fail as
 * a broker that has not learnt of the topics fails them, the next `leaderless` list a partition
 * without a leader.
 */
function laggingKafka(lag: { lagging: number; leaderless: number; createError?: Error }) {
  const calls = { create: 0, metadata: 0 };
  const admin = {
    connect: () => Promise.resolve(),
    disconnect: () => Promise.resolve(),
    describeCluster: () => Promise.resolve({ brokers: [{}, {}, {}] }),
    listTopics: () => Promise.resolve([]),
    createTopics: () => {
      calls.create += 1;
      return lag.createError === undefined
        ? Promise.resolve(true)
        : Promise.reject(lag.createError);
    },
    fetchTopicMetadata: ({ topics }: { topics: string[] }) => {
      calls.metadata += 1;
      if (calls.metadata <= lag.lagging) return Promise.reject(unknownTopic());
      const leader = calls.metadata <= lag.lagging + lag.leaderless ? -1 : 1;
      return Promise.resolve({
        topics: topics.map((name) => ({
          name,
          partitions: [0, 1].map((partitionId) => ({ partitionId, leader, replicas: [1] })),
        })),
      });
    },
  };
  return { kafka: { admin: () => admin } as unknown as Kafka, calls };
}

describe('createTopicEnsurer on a cluster whose metadata lags', () => {
  it('waits until the metadata lists every topic with a leader for every partition', async () => {
    const { kafka, calls } = laggingKafka({ lagging: 3, leaderless: 2 });
    await createTopicEnsurer(kafka)(['a', 'b']);
    expect(calls.metadata).toBe(6);
  });

  it('takes a topic another process created at the same moment as created', async () => {
    const exists = Object.assign(new Error('Topic with this name already exists'), {
      type: 'TOPIC_ALREADY_EXISTS',
    });
    const { kafka, calls } = laggingKafka({ lagging: 1, leaderless: 0, createError: exists });
    await createTopicEnsurer(kafka)(['a']);
    expect(calls).toEqual({ create: 1, metadata: 2 });
  });

  it('fails with topic_not_ready naming the topics when the metadata never catches up', async () => {
    const { kafka } = laggingKafka({ lagging: 1000, leaderless: 0 });
    const ensured = createTopicEnsurer(kafka, { leaderTimeoutMs: 300 })(['a', 'b']);
    await expect(ensured).rejects.toMatchObject({ code: 'topic_not_ready' });
    await expect(ensured).rejects.toThrow(/a, b .*does not host this topic-partition/);
  });
});

describe('whenTopicsKnown', () => {
  it('runs again while a broker does not know the topics, wrapped or not', async () => {
    let calls = 0;
    const subscribed = await whenTopicsKnown(
      ['a'],
      () => {
        calls += 1;
        if (calls === 1) return Promise.reject(unknownTopic());
        if (calls === 2) {
          const wrapped = Object.assign(new Error('retries exceeded'), {
            cause: { type: 'LEADER_NOT_AVAILABLE' },
          });
          return Promise.reject(wrapped);
        }
        return Promise.resolve('subscribed');
      },
      5000,
    );
    expect(subscribed).toBe('subscribed');
    expect(calls).toBe(3);
  });

  it('fails at once on other errors, and with topic_not_ready after the timeout', async () => {
    const refused = new Error('SASL authentication failed');
    await expect(whenTopicsKnown(['a'], () => Promise.reject(refused), 5000)).rejects.toBe(refused);
    await expect(
      whenTopicsKnown(['a'], () => Promise.reject(unknownTopic()), 200),
    ).rejects.toMatchObject({ code: 'topic_not_ready' });
  });

  it('tells metadata lag from other errors', () => {
    expect(isTopicMetadataLag(unknownTopic())).toBe(true);
    expect(isTopicMetadataLag({ type: 'TOPIC_AUTHORIZATION_FAILED' })).toBe(false);
    expect(isTopicMetadataLag(undefined)).toBe(false);
  });
});

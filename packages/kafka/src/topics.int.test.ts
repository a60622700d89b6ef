// Topic creation against a real broker: several processes ensure the same fresh topics at once.
import { testKafka, testServers, uniqueName } from '@sluice/testkit';
import { describe, expect, it } from 'vitest';
import { ConfigResourceTypes } from 'kafkajs';
import { createTopicEnsurer } from './index.js';

const { kafkaBrokers } = testServers();
const kafka = testKafka(kafkaBrokers);

describe('createTopicEnsurer', () => {
  it('resolves once every partition has a leader, however many create the topics at once', async () => {
    // Right after CreateTopics a broker may answer metadata with UNKNOWN_TOPIC_OR_PARTITION for a
    // while, the more so the more topics it creates; that is a wait, not a failure.
    const prefix = uniqueName('ensure');
    for (let round = 0; round < 3; round += 1) {
      const topics = Array.from({ length: 40 }, (_, i) => `${prefix}.r${round}.t${i}`);
      const results = await Promise.allSettled([
        createTopicEnsurer(kafka)(topics),
        createTopicEnsurer(kafka)(topics),
        createTopicEnsurer(kafka)(topics.slice(0, 10)),
      ]);
      expect(results.filter((result) => result.status === 'rejected')).toEqual([]);
      const admin = kafka.admin();
      await admin.connect();
      try {
        const { topics: described } = await admin.fetchTopicMetadata({ topics });
        expect(described).toHaveLength(40);
        for (const topic of described) {
          expect(topic.partitions).toHaveLength(6);
          expect(topic.partitions.every((partition) => partition.leader >= 0)).toBe(true);
        }
      } finally {
        await admin.disconnect();
      }
    }
  });
});

describe('replication and durability', () => {
  it('creates topics with the replication the cluster allows, and reports settings that lose records', async () => {
    const prefix = uniqueName('durable');
    const problems: [string, string][] = [];
    const report = (topic: string, problem: string) => problems.push([topic, problem]);
    const admin = kafka.admin();
    await admin.connect();
    try {
      // Found as they are: unclean leader election on; min.insync.replicas above the replicas.
      await admin.createTopics({
        waitForLeaders: false,
        topics: [
          {
            topic: `${prefix}.unclean`,
            configEntries: [{ name: 'unclean.leader.election.enable', value: 'true' }],
          },
          {
            topic: `${prefix}.stuck`,
            configEntries: [{ name: 'min.insync.replicas', value: '2' }],
          },
        ],
      });
      await createTopicEnsurer(kafka, { onDurabilityProblem: report })([
        `${prefix}.fresh`,
        `${prefix}.unclean`,
        `${prefix}.stuck`,
      ]);
      const { resources } = await admin.describeConfigs({
        includeSynonyms: false,
        resources: [
          {
            type: ConfigResourceTypes.TOPIC,
            name: `${prefix}.fresh`,
            configNames: ['min.insync.replicas'],
          },
        ],
      });
      expect(resources[0]?.configEntries[0]?.configValue).toBe('1');
      const [fresh] = (await admin.fetchTopicMetadata({ topics: [`${prefix}.fresh`] })).topics;
      expect(fresh?.partitions[0]?.replicas).toHaveLength(1);
    } finally {
      await admin.disconnect();
    }
    // In whatever order the broker lists the topics.
    expect(problems).toHaveLength(2);
    expect(problems).toEqual(
      expect.arrayContaining([
        [`${prefix}.unclean`, expect.stringContaining('unclean.leader.election.enable=true')],
        [`${prefix}.stuck`, expect.stringContaining('min.insync.replicas 2 above its 1 replicas')],
      ]),
    );
  });
});

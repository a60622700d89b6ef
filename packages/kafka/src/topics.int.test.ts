// Topic creation against a real broker: several processes ensure the same fresh topics at once.
import { testKafka, testServers, uniqueName } from '@sluice/testkit';
import { describe, expect, it } from 'vitest';
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

import { SluiceError, errorMessage } from '@sluice/errors';
import type { Kafka } from 'kafkajs';

/** The codes of the {@link SluiceError}s this package throws. */
export type KafkaErrorCode = 'topic_not_ready';

/** Options for {@link createTopicEnsurer}. */
export interface EnsureTopicsOptions {
  /** Partitions of the topics created here. Default 6. */
  partitions?: number;
  /** How long to wait for every partition to have a leader. Default 30000. */
  leaderTimeoutMs?: number;
}

async function ensureTopics(
  kafka: Kafka,
  topics: readonly string[],
  options: EnsureTopicsOptions = {},
): Promise<void> {
  if (topics.length === 0) return;
  const admin = kafka.admin();
  await admin.connect();
  try {
    const existing = new Set(await admin.listTopics());
    const create = topics.filter((topic) => !existing.has(topic));
    if (create.length > 0) {
      // kafkajs's own wait retries LEADER_NOT_AVAILABLE only; a topic that metadata does not
      // list yet (UNKNOWN_TOPIC_OR_PARTITION) would fail it, so the loop below waits instead.
      await admin
        .createTopics({
          waitForLeaders: false,
          topics: create.map((topic) => ({
            topic,
            numPartitions: options.partitions ?? 6,
            configEntries: [
              { name: 'retention.ms', value: '-1' },
              { name: 'retention.bytes', value: '-1' },
            ],
          })),
        })
        .catch((error: unknown) => {
          if (!/already exists/i.test(errorMessage(error))) throw error;
        });
    }
    const deadline = Date.now() + (options.leaderTimeoutMs ?? 30_000);
    for (;;) {
      const led = await admin.fetchTopicMetadata({ topics: [...topics] }).then(
        (metadata) =>
          metadata.topics.every((topic) =>
            topic.partitions.every((partition) => partition.leader >= 0),
          ),
        () => false,
      );
      if (led) return;
      if (Date.now() > deadline) {
        throw new SluiceError<KafkaErrorCode>(
          'topic_not_ready',
          `No partition leader for ${topics.join(', ')}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}

/**
 * Returns a function that makes sure topics exist. It creates those that are missing, keeping
 * their records forever (consumers rebuild read models from the beginning), and waits until
 * every partition of every one has a leader: a topic created a moment ago, here or by another
 * process, refuses produce and fetch until then. Another process creating the same topic at the
 * same time is fine. It remembers what it ensured, so each topic costs admin requests once.
 *
 * @throws SluiceError `topic_not_ready` (from the returned function) when a partition has no
 *   leader within `leaderTimeoutMs`.
 * @example
 * const ensureTopics = createTopicEnsurer(kafka, { partitions: 6 });
 * await ensureTopics(['outbox.event.cart']);
 */
export function createTopicEnsurer(
  kafka: Kafka,
  options: EnsureTopicsOptions = {},
): (topics: Iterable<string>) => Promise<void> {
  const known = new Set<string>();
  return async (topics) => {
    const missing = [...topics].filter((topic) => !known.has(topic));
    await ensureTopics(kafka, missing, options);
    for (const topic of missing) known.add(topic);
  };
}

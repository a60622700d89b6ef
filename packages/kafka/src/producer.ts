import { Partitioners, type Kafka, type Producer, type ProducerConfig } from 'kafkajs';

/**
 * The settings of every producer Sluice writes events with: idempotent (no duplicates from
 * kafkajs' own retries), one request in flight (so retries keep each partition's order), topics
 * never created by a send (they are created with their retention first), and Java's murmur2
 * partitioner, so a key lands on the same partition whoever produces it.
 */
export const PRODUCER_SETTINGS = {
  idempotent: true,
  maxInFlightRequests: 1,
  allowAutoTopicCreation: false,
  createPartitioner: Partitioners.DefaultPartitioner,
} as const satisfies ProducerConfig;

/**
 * The `acks` of every send with such a producer: all in-sync replicas. kafkajs refuses any other
 * value for an idempotent producer.
 */
export const ACKS_ALL = -1;

/**
 * A producer with {@link PRODUCER_SETTINGS}; `extra` adds what they leave open (timeouts, retry).
 * Send with `acks: ACKS_ALL`. Idempotence does not survive an ambiguous send error: discard the
 * producer and take a fresh one.
 *
 * @example
 * const producer = idempotentProducer(kafka);
 * await producer.connect();
 * await producer.send({ topic, acks: ACKS_ALL, messages });
 */
export function idempotentProducer(
  kafka: Kafka,
  extra: Omit<ProducerConfig, keyof typeof PRODUCER_SETTINGS> = {},
): Producer {
  return kafka.producer({ ...extra, ...PRODUCER_SETTINGS });
}

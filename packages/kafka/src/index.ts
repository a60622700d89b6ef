export {
  createKafka,
  parseBrokers,
  type CreateKafkaOptions,
  type KafkaLogger,
} from './create-kafka.js';
export { decodeHeaderValuesAsStrings } from './header-decoding.js';
export { ACKS_ALL, PRODUCER_SETTINGS, idempotentProducer } from './producer.js';
export { createTopicEnsurer, type EnsureTopicsOptions, type KafkaErrorCode } from './topics.js';

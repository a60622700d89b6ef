export {
  CODEC_NAMES,
  compressionType,
  registerCodecs,
  type CodecName,
  type KafkajsCodec,
} from './codecs.js';
export {
  createKafka,
  parseBrokers,
  type CreateKafkaOptions,
  type KafkaLogger,
} from './create-kafka.js';
export { decodeHeaderValuesAsStrings } from './header-decoding.js';
export { ACKS_ALL, PRODUCER_SETTINGS, idempotentProducer } from './producer.js';
export {
  createTopicEnsurer,
  durabilityProblems,
  isTopicMetadataLag,
  replicationFor,
  whenTopicsKnown,
  type EnsureTopicsOptions,
  type KafkaErrorCode,
  type TopicDurability,
} from './topics.js';
export { kafkaRefusal, probeKafka, verifyKafka, type KafkaRefusalCode } from './refusal.js';
export {
  isSecured,
  kafkaSecurityOf,
  type KafkaSecurity,
  type KafkaSecuritySettings,
} from './security.js';

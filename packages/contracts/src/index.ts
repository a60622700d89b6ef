export {
  aggregateTypes,
  catalog,
  isEventType,
  limits,
  type AggregateType,
  type CatalogEvent,
  type EventPayload,
  type EventType,
} from './catalog.js';
export {
  aggregateTypeOfTopic,
  deadLetterTopicFor,
  fromKafkaRecord,
  METADATA_FIELDS,
  toKafkaRecord,
  topicFor,
  type DomainEvent,
  type EventMetadata,
  type KafkaRecord,
  type SerializedEvent,
} from './cloud-events.js';
export { createUpcaster, type Upcaster } from './upcasters.js';
export { assertPayload, payloadErrors } from './validation.js';
export type { ContractsErrorCode } from './errors.js';

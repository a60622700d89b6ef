export {
  assertPayload,
  defineCatalog,
  defineEvent,
  type Catalog,
  type CatalogOptions,
  type EventDefinition,
  type EventDefinitions,
  type EventOf,
  type NewEventOf,
  type PayloadOf,
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
export {
  headerText,
  readEvent,
  setHeader,
  type HeaderValue,
  type KafkaMessageLike,
} from './read-event.js';
export { createUpcaster, type Upcaster } from './upcasters.js';
export type { ContractsErrorCode } from './errors.js';

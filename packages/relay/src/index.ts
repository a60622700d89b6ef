export { createPgClaimCheckStore } from './claim-checks.js';
export type {
  ClaimCheckStore,
  EventIdentity,
  EventSink,
  KafkaSink,
  KafkaSinkOptions,
  OutgoingEvent,
  PublishBlock,
  PublishedRecord,
  SendFailure,
  SendFailureReason,
} from './event-sink.js';
export type { RelayErrorCode } from './errors.js';
export { createKafkaSink } from './kafka-sink.js';
export { createLeadership, type Leadership, type LeadershipOptions } from './leadership.js';
export { Lsn } from './lsn.js';
export { createPublicationSql, outboxTable, type ReplicationNames } from './publication.js';
export { createRelay, type Relay, type RelayHooks, type RelayOptions } from './relay.js';
export {
  createPublishedEventsRecorder,
  type PublishedEventsOptions,
  type PublishedEventsRecorder,
} from './published-events.js';
export { replicationProblems } from './replication-problems.js';
export {
  createPgReplicationSource,
  type PgReplicationSourceOptions,
  type ReplicationEvent,
  type ReplicationSource,
} from './replication-source.js';
export { classifySendError, isUnderReplicated } from './send-errors.js';
export { HEARTBEAT_PREFIX, emitHeartbeat, inspectSlot, type SlotHealth } from './slot-health.js';
export { prepareReplication, type SlotAdoption, type SlotState } from './slots.js';
export { publishInitialSnapshot, type InitialSnapshot } from './snapshot.js';

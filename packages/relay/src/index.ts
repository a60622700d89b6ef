export { createPgClaimCheckStore } from './claim-checks.js';
export {
  classifySendError,
  createKafkaSink,
  type ClaimCheckStore,
  type EventIdentity,
  type EventSink,
  type KafkaSink,
  type KafkaSinkOptions,
  type OutgoingEvent,
  type PublishBlock,
  type SendFailure,
  type SendFailureReason,
} from './event-sink.js';
export type { RelayErrorCode } from './errors.js';
export { createLeadership, type Leadership, type LeadershipOptions } from './leadership.js';
export { Lsn } from './lsn.js';
export { createRelay, type Relay, type RelayHooks, type RelayOptions } from './relay.js';
export {
  createPgReplicationSource,
  type PgReplicationSourceOptions,
  type ReplicationEvent,
  type ReplicationSource,
} from './replication-source.js';
export {
  HEARTBEAT_PREFIX,
  emitHeartbeat,
  inspectSlot,
  prepareReplication,
  publishInitialSnapshot,
  type InitialSnapshot,
  type ReplicationNames,
  type SlotAdoption,
  type SlotHealth,
  type SlotState,
} from './setup.js';

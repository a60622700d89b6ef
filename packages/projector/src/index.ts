export { HandlerRetry } from './apply-events.js';
export {
  applyBatch,
  type AppliedBatch,
  type ApplyOptions,
  type BatchResult,
  type OffsetReset,
  type Rewind,
} from './batch.js';
export { appliedVersions } from './applied-versions.js';
export type { OperatorRequest } from './audit.js';
export { deadLetterMessage } from './dead-letters.js';
export {
  defineProjection,
  type ApplyContext,
  type Projection,
  type TableNamer,
} from './projection.js';
export {
  tableNamer,
  type Generation,
  type GenerationState,
  type RebuildProgress,
} from './generations.js';
export type { HealthProblem } from './health.js';
export { listOffsetGaps, type OffsetGap } from './offset-gaps.js';
export type {
  BatchReport,
  OffsetNotice,
  Projector,
  ProjectorHooks,
  ProjectorOptions,
} from './api.js';
export { createProjector } from './projector.js';
export {
  type DeadLetter,
  type DeadLetterSink,
  type IncomingRecord,
  type RawHeader,
  type PayloadValidator,
  type RawRecord,
  type BatchSql,
  type Reveal,
} from './records.js';
export { projectorMigrations } from './schema.js';
export { listParked, type ParkedEvent } from './parked-records.js';
export {
  acceptVersionGap,
  redriveParked,
  skipParked,
  type ParkedOutcome,
  type VersionGap,
} from './parked.js';
export type { ProjectorErrorCode } from './errors.js';

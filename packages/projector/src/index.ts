export {
  OffsetGapError,
  applyBatch,
  type ApplyOptions,
  type BatchResult,
  type DeadLetter,
  type DeadLetterSink,
  type IncomingRecord,
} from './batch.js';
export { defineProjection, type ApplyContext, type Projection } from './projection.js';
export {
  createProjector,
  type Projector,
  type ProjectorHooks,
  type ProjectorOptions,
} from './projector.js';
export { projectorMigrations } from './schema.js';
export { listParked, redriveParked, skipParked, type ParkedEvent } from './parked.js';

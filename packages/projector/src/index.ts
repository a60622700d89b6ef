export {
  applyBatch,
  type AppliedBatch,
  type ApplyOptions,
  type BatchResult,
  type DeadLetter,
  type DeadLetterSink,
  type IncomingRecord,
  type Rewind,
} from './batch.js';
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
export {
  createProjector,
  type BatchReport,
  type Projector,
  type ProjectorHooks,
  type ProjectorOptions,
} from './projector.js';
export { projectorMigrations } from './schema.js';
export { listParked, redriveParked, skipParked, type ParkedEvent } from './parked.js';

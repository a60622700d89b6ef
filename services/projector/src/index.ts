export { loadProjectorConfig, projectorConfigSchema, type ProjectorConfig } from './config.js';
export {
  loadProjectionModules,
  moduleSpecs,
  type Migrations,
  type ModuleErrorCode,
  type ProjectionModules,
} from './modules.js';
export {
  runProjections,
  selectProjections,
  type RunProjectionsOptions,
  type RunningProjections,
} from './run-projections.js';

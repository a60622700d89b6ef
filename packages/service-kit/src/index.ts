import { activeSpanLogFields } from '@sluice/tracing';
import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';

export {
  commonConfig,
  configProblems,
  loadConfig,
  redactConfig,
  type ServiceKitErrorCode,
} from './config.js';
export {
  SSL_MODES,
  databaseUrlProblems,
  libpqDatabaseUrl,
  postgresTlsFailure,
  verifyDatabaseAtStart,
  type PostgresTlsErrorCode,
} from './database-url.js';
export {
  configHelp,
  readCommandLine,
  settingOrExit,
  type CommandLine,
  type CommandOptions,
} from './command-line.js';
export {
  ExitCode,
  exitOnRefusal,
  refusalExitCode,
  runService,
  type Readiness,
  type ReadinessProblem,
  type Service,
  type ServiceOptions,
} from './run-service.js';
export { collectProcessMetrics } from './process-metrics.js';
export { topicReplicationSettings } from './topic-settings.js';
export { startTracing, tracingEnabled, tracingProblems, type Tracing } from './tracing.js';

/**
 * JSON-lines logger on stdout, named after the service.
 *
 * @example const log = createLogger({ service: 'relay', level: 'info' });
 */
export function createLogger(options: {
  service: string;
  level: string;
  /** Where the lines go. Default: stdout. */
  destination?: DestinationStream;
}): Logger {
  const settings: LoggerOptions = {
    level: options.level,
    base: { service: options.service },
    // Lines written inside a traced request or event carry its trace and span ids.
    mixin: activeSpanLogFields,
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  };
  return options.destination === undefined ? pino(settings) : pino(settings, options.destination);
}

import { Type, type Static, type TObject } from '@sinclair/typebox';
import { SluiceError } from '@sluice/errors';
import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';
import { pino, type Logger } from 'pino';

/** The codes of the SluiceErrors this package throws. */
export type ServiceKitErrorCode = 'config_invalid';

/**
 * Reads a service's configuration from `env` once: coerces strings to the schema's types,
 * fills defaults, rejects anything invalid naming every bad variable, and freezes the result.
 *
 * @throws SluiceError `config_invalid`
 * @example
 * const config = loadConfig(Type.Object({ API_PORT: Type.Integer({ default: 3000 }) }), process.env);
 */
export function loadConfig<S extends TObject>(
  schema: S,
  env: NodeJS.ProcessEnv,
): Readonly<Static<S>> {
  const ajv = new Ajv({
    coerceTypes: true,
    useDefaults: true,
    allErrors: true,
    removeAdditional: true,
  });
  addFormats.default(ajv);
  const candidate: Record<string, unknown> = {};
  for (const key of Object.keys(schema.properties)) {
    const value = env[key];
    if (value !== undefined && value !== '') candidate[key] = value;
  }
  const validate = ajv.compile(schema);
  if (!validate(candidate)) {
    const problems = (validate.errors ?? []).map(
      (error) => `${error.instancePath.slice(1) || 'config'} ${error.message ?? 'is invalid'}`,
    );
    throw new SluiceError<ServiceKitErrorCode>(
      'config_invalid',
      `Invalid configuration: ${problems.join('; ')}`,
    );
  }
  return Object.freeze(candidate as Static<S>);
}

/**
 * Settings every service reads, with the embedded stack's defaults; spread into a service's
 * own schema.
 *
 * @example const Schema = Type.Object({ ...commonConfig, API_PORT: Type.Integer({ default: 3000 }) });
 */
export const commonConfig = {
  DATABASE_URL: Type.String({
    minLength: 1,
    default: 'postgres://postgres@127.0.0.1:54329/sluice',
  }),
  KAFKA_BROKERS: Type.String({ minLength: 1, default: '127.0.0.1:19092' }),
  LOG_LEVEL: Type.Union(
    ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((level) =>
      Type.Literal(level),
    ),
    { default: 'info' },
  ),
};

/** A config object safe to log: values of keys that look secret, and URL passwords, masked. */
export function redactConfig(config: Readonly<Record<string, unknown>>): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(config).map(([key, value]) => {
      if (/SECRET|PASSWORD|TOKEN|KEY/i.test(key)) return [key, '***'];
      if (typeof value === 'string' && /^[a-z]+:\/\/[^/]*:[^@/]*@/i.test(value)) {
        return [key, value.replace(/(\/\/[^:/]*:)[^@/]*@/, '$1***@')];
      }
      return [key, value];
    }),
  );
}

/**
 * JSON-lines logger on stdout, named after the service.
 *
 * @example const log = createLogger({ service: 'relay', level: 'info' });
 */
export function createLogger(options: { service: string; level: string }): Logger {
  return pino({
    level: options.level,
    base: { service: options.service },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  });
}

export {
  ExitCode,
  runService,
  type Readiness,
  type Service,
  type ServiceOptions,
} from './run-service.js';

import { Type, type Static, type TObject } from '@sinclair/typebox';
import { SluiceError } from '@sluice/errors';
import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';
import { Kysely, PostgresDialect } from 'kysely';
import { Migrator, type Migration } from 'kysely/migration';
import pg from 'pg';
import { pino, type Logger } from 'pino';

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
    throw new SluiceError('config_invalid', `Invalid configuration: ${problems.join('; ')}`);
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

/** int8 columns arrive as numbers; values beyond 2^53 would lose precision, so they fail loudly. */
function parseInt8(text: string): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value)) {
    throw new SluiceError(
      'int8_out_of_range',
      `int8 value ${text} exceeds JavaScript's safe integers`,
    );
  }
  return value;
}

const INT8_OID = 20;
const defaultParser = pg.types.getTypeParser as (oid: number, format?: string) => unknown;
const types = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === INT8_OID
      ? parseInt8
      : defaultParser(oid, format)) as pg.CustomTypesConfig['getTypeParser'],
};

/** Options for {@link createDatabase}. */
export interface DatabaseOptions {
  url: string;
  /** Pool size. Default 10. */
  maxConnections?: number;
  /** Name shown in `pg_stat_activity`. */
  applicationName?: string;
  /**
   * Called when an idle pooled connection fails (e.g. PostgreSQL restarted); the pool drops it
   * and the next query opens a new one. Without a listener such a failure would crash the process.
   */
  onIdleError?: (error: Error) => void;
}

/** A pooled Kysely instance over node-postgres; `bigint` columns read as numbers. */
export function createDatabase<DB>(options: DatabaseOptions): Kysely<DB> {
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.maxConnections ?? 10,
    types,
    ...(options.applicationName === undefined ? {} : { application_name: options.applicationName }),
  });
  pool.on('error', options.onIdleError ?? (() => undefined));
  return new Kysely<DB>({ dialect: new PostgresDialect({ pool }) });
}

/**
 * Applies `migrations` in name order, recording them in `sluice.<table>`; concurrent callers
 * wait for each other (Kysely's migration lock).
 *
 * @throws SluiceError `migration_failed`
 */
export async function migrate<DB>(
  db: Kysely<DB>,
  table: string,
  migrations: Record<string, Migration>,
): Promise<void> {
  await db.schema.createSchema('sluice').ifNotExists().execute();
  const migrator = new Migrator({
    db,
    provider: { getMigrations: () => Promise.resolve(migrations) },
    migrationTableSchema: 'sluice',
    migrationTableName: table,
    migrationLockTableName: `${table}_lock`,
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error !== undefined) {
    const failed = results?.find((result) => result.status === 'Error')?.migrationName ?? 'unknown';
    throw new SluiceError('migration_failed', `Migration ${failed} failed`, { cause: error });
  }
}

import { Type, type Static, type TObject, type TSchema } from '@sinclair/typebox';
import { SluiceError } from '@sluice/errors';
import {
  Ajv,
  type ErrorObject,
  type FuncKeywordDefinition,
  type SchemaValidateFunction,
} from 'ajv';
import addFormats from 'ajv-formats';
import { readFileSync } from 'node:fs';
import { databaseUrlProblems, libpqDatabaseUrl } from './database-url.js';

/** The codes of the SluiceErrors this package throws. */
export type ServiceKitErrorCode = 'config_invalid';

const SECRET_NAME = /SECRET|PASSWORD|TOKEN|KEY/i;
const URL_PASSWORD = /(\/\/[^:/]*:)[^@/]*@/;

/** A setting's value safe to print: secrets masked, URL passwords masked. */
function redactValue(name: string, value: unknown): unknown {
  if (SECRET_NAME.test(name)) return '***';
  if (typeof value === 'string' && URL_PASSWORD.test(value)) {
    return value.replace(URL_PASSWORD, '$1***@');
  }
  return value;
}

/** A config object safe to log: values of keys that look secret, and URL passwords, masked. */
export function redactConfig(config: Readonly<Record<string, unknown>>): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(config).map(([key, value]) => [key, redactValue(key, value)]),
  );
}

/** Settings that a file may hold instead (a mounted secret): the variable naming the file, by setting. */
const FILE_VARIANTS: Readonly<Record<string, string>> = { DATABASE_URL: 'DATABASE_URL_FILE' };

/** The settings of `env`, with those `schema` lets a file hold read from their files. */
interface ResolvedSettings {
  env: NodeJS.ProcessEnv;
  /** One line per variable, or file, that is wrong; never a file's content. */
  problems: string[];
  /** The settings whose values came from files: their values are never shown. */
  fromFiles: Set<string>;
}

function readSettingFile(fileVariable: string, path: string): string {
  let content: string;
  try {
    content = readFileSync(path, 'utf8').trim();
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    const why = typeof code === 'string' ? code : 'unreadable';
    throw new Error(`${fileVariable} ${JSON.stringify(path)} cannot be read (${why})`, {
      cause: error,
    });
  }
  if (content === '') throw new Error(`${fileVariable} ${JSON.stringify(path)} is empty`);
  return content;
}

/** Reads the files of the `_FILE` variants `schema` has and `env` sets; both set is a problem. */
function resolveSettingFiles(schema: TObject, env: NodeJS.ProcessEnv): ResolvedSettings {
  const resolved: ResolvedSettings = { env, problems: [], fromFiles: new Set() };
  for (const [name, fileVariable] of Object.entries(FILE_VARIANTS)) {
    const path = env[fileVariable];
    if (!(fileVariable in schema.properties) || path === undefined || path === '') continue;
    if (env[name] !== undefined && env[name] !== '') {
      resolved.problems.push(`${name} and ${fileVariable} are both set: set one`);
      continue;
    }
    try {
      resolved.env = { ...resolved.env, [name]: readSettingFile(fileVariable, path) };
      resolved.fromFiles.add(name);
    } catch (error) {
      resolved.problems.push((error as Error).message);
    }
  }
  return resolved;
}

/** The variables of `schema` that `env` sets (an empty value counts as unset). */
function candidateOf(schema: TObject, env: NodeJS.ProcessEnv): Record<string, unknown> {
  const candidate: Record<string, unknown> = {};
  for (const key of Object.keys(schema.properties)) {
    const value = env[key];
    if (value !== undefined && value !== '') candidate[key] = value;
  }
  return candidate;
}

/**
 * One line for one violation: the variable, what is wrong, and the value (unless secret; never
 * one read from a file).
 */
function problemLine(error: ErrorObject, settings: ResolvedSettings): string {
  const { env, fromFiles } = settings;
  const name = error.instancePath.slice(1);
  if (name === '') {
    const missing = (error.params as { missingProperty?: string }).missingProperty;
    return missing === undefined
      ? `config ${error.message ?? 'is invalid'}`
      : `${missing} is required and not set`;
  }
  const allowed = (error.params as { allowedValues?: unknown[] }).allowedValues;
  const message = allowed === undefined ? error.message : `must be one of ${allowed.join(', ')}`;
  const fileVariable = fromFiles.has(name) ? FILE_VARIANTS[name] : undefined;
  if (fileVariable !== undefined) {
    const file = JSON.stringify(env[fileVariable]);
    return `${name} (from ${fileVariable} ${file}) ${message ?? 'is invalid'}`;
  }
  return `${name} ${message ?? 'is invalid'} (is ${JSON.stringify(redactValue(name, env[name]))})`;
}

/**
 * A variable's constraint in words, as `--help` and the problem lines say it: `integer 1..65535`,
 * `one of info, debug`, `integer 1.. or auto`.
 */
export function constraintOf(schema: TSchema): string {
  const branches = schema.anyOf as TSchema[] | undefined;
  if (branches !== undefined) {
    const literals = branches.map(
      (branch) => branch.const as string | number | boolean | undefined,
    );
    if (literals.every((value) => value !== undefined)) return `one of ${literals.join(', ')}`;
    return branches.map(constraintOf).join(' or ');
  }
  if (schema.const !== undefined) return String(schema.const);
  const parts: string[] = [String(schema.type ?? 'value')];
  const { minimum, maximum, minLength, pattern } = schema as {
    minimum?: number;
    maximum?: number;
    minLength?: number;
    pattern?: string;
  };
  if (minimum !== undefined || maximum !== undefined) {
    parts.push(`${minimum ?? ''}..${maximum ?? ''}`);
  }
  if (minLength === 1) parts.push('non-empty');
  if (minLength !== undefined && minLength > 1) parts.push(`of at least ${minLength} characters`);
  if (pattern !== undefined) parts.push(`matching ${pattern}`);
  return parts.join(' ');
}

/** One error per variable whose schema is a union, saying what it must be, instead of one per branch. */
function mergeUnionErrors(errors: readonly ErrorObject[], schema: TObject): ErrorObject[] {
  const merged: ErrorObject[] = [];
  const seen = new Set<string>();
  for (const error of errors) {
    const name = error.instancePath.slice(1);
    const property: TSchema | undefined = schema.properties[name];
    if (property?.anyOf === undefined) {
      merged.push(error);
    } else if (!seen.has(name)) {
      seen.add(name);
      merged.push({ ...error, params: {}, message: `must be ${constraintOf(property)}` });
    }
  }
  return merged;
}

/**
 * `databaseUrl: true` on a setting: its TLS parameters are checked (one problem line each), and
 * the value is rewritten so that node-postgres reads `sslmode` as libpq does.
 */
const validateDatabaseUrl: SchemaValidateFunction = (_enabled, url: string, _schema, data) => {
  const problems = databaseUrlProblems(url);
  if (problems.length > 0) {
    validateDatabaseUrl.errors = problems.map((message) => ({
      keyword: 'databaseUrl',
      message,
      params: {},
    }));
    return false;
  }
  if (data !== undefined) {
    (data.parentData as Record<string, unknown>)[data.parentDataProperty] = libpqDatabaseUrl(url);
  }
  return true;
};
const databaseUrlKeyword: FuncKeywordDefinition = {
  keyword: 'databaseUrl',
  type: 'string',
  modifying: true,
  errors: true,
  validate: validateDatabaseUrl,
};

function validatorOf(schema: TObject) {
  const ajv = new Ajv({
    coerceTypes: true,
    useDefaults: true,
    allErrors: true,
    removeAdditional: true,
  });
  addFormats.default(ajv);
  ajv.addKeyword(databaseUrlKeyword);
  return ajv.compile(schema);
}

/**
 * What is wrong with the settings `env` gives `schema`: one line per problem, naming the
 * variable and showing its value (secrets masked); empty when they are valid.
 *
 * @example configProblems(schema, { API_PORT: 'eighty' }) // ['API_PORT must be integer (is "eighty")']
 */
export function configProblems(schema: TObject, env: NodeJS.ProcessEnv): string[] {
  const settings = resolveSettingFiles(schema, env);
  const validate = validatorOf(schema);
  if (validate(candidateOf(schema, settings.env))) return settings.problems;
  const errors = mergeUnionErrors(validate.errors ?? [], schema);
  return [...new Set([...settings.problems, ...errors.map((e) => problemLine(e, settings))])];
}

/**
 * Reads a service's configuration from `env` once: coerces strings to the schema's types,
 * fills defaults, reads `DATABASE_URL` from `DATABASE_URL_FILE` when the schema has both and that
 * is set, rejects anything invalid naming every bad variable, and freezes the result.
 *
 * @throws SluiceError `config_invalid`
 * @example
 * const config = loadConfig(Type.Object({ API_PORT: Type.Integer({ default: 3000 }) }), process.env);
 */
export function loadConfig<S extends TObject>(
  schema: S,
  env: NodeJS.ProcessEnv,
): Readonly<Static<S>> {
  const settings = resolveSettingFiles(schema, env);
  const candidate = candidateOf(schema, settings.env);
  if (settings.problems.length > 0 || !validatorOf(schema)(candidate)) {
    throw new SluiceError<ServiceKitErrorCode>(
      'config_invalid',
      `Invalid configuration: ${configProblems(schema, env).join('; ')}`,
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
    databaseUrl: true,
    description:
      'PostgreSQL connection string (libpq URL). TLS: sslmode (disable, prefer, require, verify-ca, verify-full, as libpq reads them), sslrootcert (CA file), sslcert and sslkey (client certificate). Or DATABASE_URL_FILE.',
  }),
  DATABASE_URL_FILE: Type.String({
    default: '',
    description:
      'File holding DATABASE_URL (a mounted secret: the URL carries the password), instead of the variable; read once at start, surrounding whitespace dropped.',
  }),
  KAFKA_BROKERS: Type.String({
    minLength: 1,
    default: '127.0.0.1:19092',
    description: 'Kafka bootstrap brokers, comma-separated host:port.',
  }),
  KAFKA_SSL: Type.Boolean({
    default: false,
    description:
      'Connect to Kafka over TLS. Implied by any KAFKA_SSL_*_FILE; without a CA file the system CAs are trusted.',
  }),
  KAFKA_SSL_CA_FILE: Type.String({
    default: '',
    description: "PEM file of the CA(s) to trust for the brokers' certificates.",
  }),
  KAFKA_SSL_CERT_FILE: Type.String({
    default: '',
    description: 'PEM client certificate for mutual TLS (with KAFKA_SSL_KEY_FILE).',
  }),
  KAFKA_SSL_KEY_FILE: Type.String({
    default: '',
    description: "PEM private key of KAFKA_SSL_CERT_FILE's certificate.",
  }),
  KAFKA_SSL_REJECT_UNAUTHORIZED: Type.Boolean({
    default: true,
    description:
      "Verify the brokers' certificate chain and host name. false is for development only.",
  }),
  KAFKA_SASL_MECHANISM: Type.Union(
    ['none', 'plain', 'scram-sha-256', 'scram-sha-512'].map((mechanism) => Type.Literal(mechanism)),
    { default: 'none', description: 'SASL mechanism to authenticate to Kafka with.' },
  ),
  KAFKA_SASL_USERNAME: Type.String({
    default: '',
    description: 'SASL user name (an API key on Confluent Cloud).',
  }),
  KAFKA_SASL_PASSWORD: Type.String({
    default: '',
    description: 'SASL password; or KAFKA_SASL_PASSWORD_FILE.',
  }),
  KAFKA_SASL_PASSWORD_FILE: Type.String({
    default: '',
    description: 'File holding the SASL password (read once at start; trailing newline dropped).',
  }),
  LOG_LEVEL: Type.Union(
    ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((level) =>
      Type.Literal(level),
    ),
    { default: 'info', description: 'Level of the JSON log lines on stdout.' },
  ),
};

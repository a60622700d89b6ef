import { Type } from '@sinclair/typebox';
import { SluiceError, errorMessage } from '@sluice/errors';
import { commonConfig, loadConfig } from '@sluice/service-kit';
import { readFileSync } from 'node:fs';

const MIN_SECRET_CHARS = 32;

/** shop-api's settings, read once at start. */
export const shopApiConfigSchema = Type.Object({
  DATABASE_URL: commonConfig.DATABASE_URL,
  DATABASE_URL_FILE: commonConfig.DATABASE_URL_FILE,
  API_PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 3000 }),
  API_HOST: Type.String({ minLength: 1, default: '127.0.0.1' }),
  API_STOP_TIMEOUT_MS: Type.Integer({
    minimum: 1000,
    maximum: 600_000,
    default: 30_000,
    description:
      'A SIGTERM that has not drained the requests in flight by then exits with status 1.',
  }),
  LOG_LEVEL: commonConfig.LOG_LEVEL,
  MIGRATE_ON_START: Type.Boolean({
    default: true,
    description:
      "Apply migrations on start; off when the app's role may not own the schema (infra/postgres/roles.sql).",
  }),
  DATABASE_POOL_SIZE: Type.Integer({ minimum: 1, maximum: 200, default: 20 }),
  OUTBOX_RETENTION_DAYS: Type.Integer({
    minimum: 1,
    default: 7,
    description: 'Outbox rows older than this are purged (the relay has long published them).',
  }),
  VIEW_CONSISTENCY_TIMEOUT_MS: Type.Integer({
    minimum: 1,
    maximum: 60_000,
    default: 5000,
    description:
      'How long a /views/* request with X-Consistency-Token waits for the read model (then 504).',
  }),
  IDEMPOTENCY_RETENTION_HOURS: Type.Integer({
    minimum: 1,
    default: 24,
    description: 'Idempotency keys are remembered this long.',
  }),
  CONSISTENCY_TOKEN_SECRET: Type.Optional(
    Type.String({
      minLength: MIN_SECRET_CHARS,
      description:
        "Signs X-Consistency-Token; unset, the key shop-api's migrations stored in the database.",
    }),
  ),
  CONSISTENCY_TOKEN_SECRET_FILE: Type.Optional(
    Type.String({
      minLength: 1,
      description: 'A file holding that secret (a mounted secret), instead of the variable.',
    }),
  ),
});

export type ShopApiConfig = ReturnType<typeof loadShopApiConfig>;

export function loadShopApiConfig(env: NodeJS.ProcessEnv) {
  return loadConfig(shopApiConfigSchema, env);
}

/**
 * The configured consistency token secret: `CONSISTENCY_TOKEN_SECRET`, or the contents of
 * `CONSISTENCY_TOKEN_SECRET_FILE` without a trailing newline; `undefined` when neither is set.
 *
 * @throws SluiceError `config_invalid` when both are set, or the file is unreadable or too short.
 */
export function configuredTokenSecret(config: ShopApiConfig): Buffer | undefined {
  const file = config.CONSISTENCY_TOKEN_SECRET_FILE;
  if (file === undefined) {
    const secret = config.CONSISTENCY_TOKEN_SECRET;
    return secret === undefined ? undefined : Buffer.from(secret, 'utf8');
  }
  if (config.CONSISTENCY_TOKEN_SECRET !== undefined) {
    throw new SluiceError(
      'config_invalid',
      'Set CONSISTENCY_TOKEN_SECRET or CONSISTENCY_TOKEN_SECRET_FILE, not both',
    );
  }
  let secret: string;
  try {
    secret = readFileSync(file, 'utf8').replace(/\r?\n$/, '');
  } catch (error) {
    throw new SluiceError(
      'config_invalid',
      `CONSISTENCY_TOKEN_SECRET_FILE ${file} cannot be read: ${errorMessage(error)}`,
      { cause: error },
    );
  }
  if (secret.length < MIN_SECRET_CHARS) {
    throw new SluiceError(
      'config_invalid',
      `CONSISTENCY_TOKEN_SECRET_FILE ${file} holds fewer than ${MIN_SECRET_CHARS} characters`,
    );
  }
  return Buffer.from(secret, 'utf8');
}

import { Type } from '@sinclair/typebox';
import { SluiceError, errorMessage, isSluiceError } from '@sluice/errors';
import { masterKeySettings } from '@sluice/privacy';
import { commonConfig, loadConfig } from '@sluice/service-kit';
import { readFileSync } from 'node:fs';
import type { AuthSettings } from './http/authentication.js';

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
  SHOP_AUTH: Type.Union([Type.Literal('jwt'), Type.Literal('off')], {
    default: 'jwt',
    description:
      'jwt: every request needs a bearer JWT (SHOP_AUTH_SECRET or SHOP_AUTH_JWKS_URL); off: every request acts as the admin "dev", for local development only.',
  }),
  SHOP_AUTH_JWKS_URL: Type.Optional(
    Type.String({
      format: 'uri',
      pattern: '^https?://',
      description:
        "The identity provider's JWKS URL (https; http only on a loopback host); its RS256, ES256 or EdDSA tokens for SHOP_AUTH_AUDIENCE are accepted.",
    }),
  ),
  SHOP_AUTH_SECRET: Type.Optional(
    Type.String({
      minLength: MIN_SECRET_CHARS,
      description: 'The shared secret of HS256 tokens, instead of SHOP_AUTH_JWKS_URL.',
    }),
  ),
  SHOP_AUTH_SECRET_FILE: Type.Optional(
    Type.String({
      minLength: 1,
      description: 'A file holding that secret (a mounted secret), instead of the variable.',
    }),
  ),
  SHOP_AUTH_ISSUER: Type.Optional(
    Type.String({ minLength: 1, description: 'Tokens must name this issuer (iss) when set.' }),
  ),
  SHOP_AUTH_AUDIENCE: Type.Optional(
    Type.String({
      minLength: 1,
      description:
        'Tokens must name this audience (aud) when set; required with SHOP_AUTH_JWKS_URL.',
    }),
  ),
  SHOP_AUTH_ADMIN_SCOPE: Type.String({
    minLength: 1,
    default: 'admin',
    description: 'A token whose scope (or scp) has it may do everything; others act as customers.',
  }),
  ...masterKeySettings,
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
  const { CONSISTENCY_TOKEN_SECRET: secret, CONSISTENCY_TOKEN_SECRET_FILE: file } = config;
  return secretSetting('CONSISTENCY_TOKEN_SECRET', secret, file);
}

/**
 * How requests are authenticated: `SHOP_AUTH=off`, or jwt with exactly one key source.
 *
 * @throws SluiceError `config_invalid` when jwt has no key source or two, the secret file is
 * unreadable or too short, or the JWKS URL is not https (off loopback) or has no audience.
 */
export function authSettings(config: ShopApiConfig): AuthSettings {
  if (config.SHOP_AUTH === 'off') return { mode: 'off' };
  const secret = secretSetting(
    'SHOP_AUTH_SECRET',
    config.SHOP_AUTH_SECRET,
    config.SHOP_AUTH_SECRET_FILE,
  );
  const jwksUrl = config.SHOP_AUTH_JWKS_URL;
  if ((secret === undefined) === (jwksUrl === undefined)) {
    throw new SluiceError(
      'config_invalid',
      'SHOP_AUTH=jwt needs exactly one of SHOP_AUTH_JWKS_URL and SHOP_AUTH_SECRET (or SHOP_AUTH_SECRET_FILE); SHOP_AUTH=off turns authentication off for local development',
    );
  }
  if (jwksUrl !== undefined && config.SHOP_AUTH_AUDIENCE === undefined) {
    throw new SluiceError(
      'config_invalid',
      "SHOP_AUTH_JWKS_URL needs SHOP_AUTH_AUDIENCE: without it, the identity provider's tokens for any of its applications would be accepted",
    );
  }
  return {
    mode: 'jwt',
    key: secret ?? keySetUrl(jwksUrl ?? ''),
    issuer: config.SHOP_AUTH_ISSUER,
    audience: config.SHOP_AUTH_AUDIENCE,
    adminScope: config.SHOP_AUTH_ADMIN_SCOPE,
  };
}

const LOOPBACK_HOSTS = new Set(['127.0.0.1', '[::1]', 'localhost']);

/**
 * The JWKS URL: https, since the keys it serves decide who may call; plain http only on a
 * loopback host (a test's provider).
 */
function keySetUrl(text: string): URL {
  const url = new URL(text);
  if (url.protocol !== 'https:' && !LOOPBACK_HOSTS.has(url.hostname)) {
    throw new SluiceError(
      'config_invalid',
      `SHOP_AUTH_JWKS_URL must be an https URL (http only for 127.0.0.1, ::1 or localhost), not ${url.protocol}//${url.host}`,
    );
  }
  return url;
}

/** What is wrong with the authentication settings, in one line (for `--check`); or undefined. */
export function authProblem(config: ShopApiConfig): string | undefined {
  try {
    authSettings(config);
    return undefined;
  } catch (error) {
    if (isSluiceError(error, 'config_invalid')) return error.message;
    throw error;
  }
}

/** A secret set as `name`, or read from the file `file` names without a trailing newline. */
function secretSetting(
  name: string,
  value: string | undefined,
  file: string | undefined,
): Buffer | undefined {
  if (file === undefined) return value === undefined ? undefined : Buffer.from(value, 'utf8');
  if (value !== undefined) {
    throw new SluiceError('config_invalid', `Set ${name} or ${name}_FILE, not both`);
  }
  let secret: string;
  try {
    secret = readFileSync(file, 'utf8').replace(/\r?\n$/, '');
  } catch (error) {
    throw new SluiceError(
      'config_invalid',
      `${name}_FILE ${file} cannot be read: ${errorMessage(error)}`,
      { cause: error },
    );
  }
  if (secret.length < MIN_SECRET_CHARS) {
    throw new SluiceError(
      'config_invalid',
      `${name}_FILE ${file} holds fewer than ${MIN_SECRET_CHARS} characters`,
    );
  }
  return Buffer.from(secret, 'utf8');
}

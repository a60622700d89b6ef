import { Type } from '@sinclair/typebox';
import { commonConfig, loadConfig } from '@sluice/service-kit';

const ConfigSchema = Type.Object({
  DATABASE_URL: commonConfig.DATABASE_URL,
  API_PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 3000 }),
  API_HOST: Type.String({ minLength: 1, default: '127.0.0.1' }),
  LOG_LEVEL: commonConfig.LOG_LEVEL,
  /** Apply migrations on start; off when the app's role may not own the schema (infra/postgres/roles.sql). */
  MIGRATE_ON_START: Type.Boolean({ default: true }),
  DATABASE_POOL_SIZE: Type.Integer({ minimum: 1, maximum: 200, default: 20 }),
  /** Outbox rows older than this are purged (the relay has long published them). */
  OUTBOX_RETENTION_DAYS: Type.Integer({ minimum: 1, default: 7 }),
  /** How long a /views/* request with X-Consistency-Token waits for the read model (then 504). */
  VIEW_CONSISTENCY_TIMEOUT_MS: Type.Integer({ minimum: 1, maximum: 60_000, default: 5000 }),
  /** Idempotency keys are remembered this long. */
  IDEMPOTENCY_RETENTION_HOURS: Type.Integer({ minimum: 1, default: 24 }),
});

export type ShopApiConfig = ReturnType<typeof loadShopApiConfig>;

export function loadShopApiConfig(env: NodeJS.ProcessEnv) {
  return loadConfig(ConfigSchema, env);
}

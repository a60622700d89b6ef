import { Type } from '@sinclair/typebox';
import { commonConfig, loadConfig } from '@sluice/service-kit';

const ConfigSchema = Type.Object({
  ...commonConfig,
  /** Port of /metrics, /healthz, /readyz; 0 picks a free one. */
  PROJECTOR_METRICS_PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 9465 }),
  PROJECTOR_METRICS_HOST: Type.String({ minLength: 1, default: '127.0.0.1' }),
  /** Must match the relay's RELAY_TOPIC_PREFIX. */
  PROJECTOR_TOPIC_PREFIX: Type.String({ pattern: '^[A-Za-z0-9._-]*$', default: '' }),
  PROJECTOR_GROUP_PREFIX: Type.String({
    pattern: '^[A-Za-z0-9._-]*$',
    default: 'sluice.projection.',
  }),
  PROJECTOR_TOPIC_PARTITIONS: Type.Integer({ minimum: 1, maximum: 1000, default: 6 }),
  /** A crashed projector's partitions move to the others after this long (Kafka allows 6000 and up). */
  PROJECTOR_SESSION_TIMEOUT_MS: Type.Integer({ minimum: 6000, maximum: 300_000, default: 30_000 }),
  /** How often the process checks generations: rebuilds started elsewhere, swaps, retirements. */
  PROJECTOR_GENERATION_POLL_MS: Type.Integer({ minimum: 100, maximum: 3_600_000, default: 1000 }),
  /** Attempts of a failing handler (pauses between them double from 50 ms up to 2 s) before its event is dead-lettered. */
  PROJECTOR_MAX_ATTEMPTS: Type.Integer({ minimum: 1, maximum: 20, default: 3 }),
  /** A consumer whose batches have failed this long without a success makes /readyz fail. */
  PROJECTOR_STALLED_AFTER_MS: Type.Integer({ minimum: 1000, maximum: 3_600_000, default: 30_000 }),
  /** A stop (SIGTERM) that has not finished the batches in hand after this long exits anyway, as a failure. */
  PROJECTOR_STOP_TIMEOUT_MS: Type.Integer({ minimum: 1000, maximum: 3_600_000, default: 30_000 }),
  /** The projections this process runs, comma-separated (e.g. to give one its own process). */
  PROJECTOR_PROJECTIONS: Type.String({
    pattern: '^[a-z][a-z0-9_]*(,[a-z][a-z0-9_]*)*$',
    default: 'cart_summary,product_sales,removed_then_bought,audit_log',
  }),
});

export function loadProjectorConfig(env: NodeJS.ProcessEnv) {
  return loadConfig(ConfigSchema, env);
}

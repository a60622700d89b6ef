import { Type } from '@sinclair/typebox';
import { commonConfig, loadConfig } from '@sluice/service-kit';

const Identifier = Type.String({ pattern: '^[a-z_][a-z0-9_]{0,62}$' });

const ConfigSchema = Type.Object({
  ...commonConfig,
  /** Port of /metrics, /healthz, /readyz; 0 picks a free one. */
  RELAY_METRICS_PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 9464 }),
  RELAY_METRICS_HOST: Type.String({ minLength: 1, default: '127.0.0.1' }),
  RELAY_SLOT: { ...Identifier, default: 'sluice_relay' },
  RELAY_PUBLICATION: { ...Identifier, default: 'sluice_outbox' },
  RELAY_OUTBOX_SCHEMA: { ...Identifier, default: 'shop' },
  RELAY_OUTBOX_TABLE: { ...Identifier, default: 'outbox' },
  /** CloudEvents `source` of the published events. */
  RELAY_EVENT_SOURCE: Type.String({ minLength: 1, default: '/shop-api' }),
  RELAY_TOPIC_PREFIX: Type.String({ pattern: '^[A-Za-z0-9._-]*$', default: '' }),
  RELAY_TOPIC_PARTITIONS: Type.Integer({ minimum: 1, maximum: 1000, default: 6 }),
  RELAY_MAX_BATCH_EVENTS: Type.Integer({ minimum: 1, maximum: 100_000, default: 700 }),
  RELAY_MAX_BUFFERED_EVENTS: Type.Integer({ minimum: 100, maximum: 10_000_000, default: 2000 }),
  RELAY_COMPRESS_ABOVE_BYTES: Type.Integer({ minimum: 0, default: 65_536 }),
  RELAY_MAX_RECORD_BYTES: Type.Integer({ minimum: 1024, default: 921_600 }),
  /** Transactional heartbeat into the WAL, so an idle outbox still moves the slot. */
  RELAY_HEARTBEAT_MS: Type.Integer({ minimum: 100, default: 10_000 }),
  RELAY_LEADER_POLL_MS: Type.Integer({ minimum: 50, default: 1000 }),
  /**
   * PostgreSQL ends the lock session and the replication stream of a relay silent this long
   * (frozen, cut off), so a standby takes over.
   */
  RELAY_LEADER_LEASE_MS: Type.Integer({ minimum: 3000, default: 10_000 }),
  /** /readyz fails once Kafka sends have failed, for any reason, this long. */
  RELAY_STALLED_AFTER_MS: Type.Integer({ minimum: 100, default: 30_000 }),
  /** Longest pause between retries of a send retrying cannot fix (until the cause is fixed). */
  RELAY_BLOCKED_RETRY_MAX_MS: Type.Integer({ minimum: 100, default: 60_000 }),
  /** How long a stop waits for what was read to reach Kafka; the rest is sent after a restart. */
  RELAY_STOP_TIMEOUT_MS: Type.Integer({ minimum: 0, default: 10_000 }),
  RELAY_SLOT_CHECK_MS: Type.Integer({ minimum: 100, default: 5000 }),
});

export type RelayConfig = ReturnType<typeof loadRelayConfig>;

export function loadRelayConfig(env: NodeJS.ProcessEnv) {
  return loadConfig(ConfigSchema, env);
}

import { Type, type Static } from '@sinclair/typebox';
import { CODEC_NAMES } from '@sluice/kafka';
import type { ReplicationNames } from '@sluice/relay';
import { commonConfig, topicReplicationSettings } from '@sluice/service-kit';

/** A name the relay uses in PostgreSQL: slot, publication, schema or table. */
function identifier(options: { default: string; description: string }) {
  return Type.String({ pattern: '^[a-z_][a-z0-9_]{0,62}$', ...options });
}

/** The relay's settings: every environment variable it reads, with its default and description. */
export const relayConfigSchema = Type.Object({
  ...commonConfig,
  DATABASE_URL: Type.String({
    ...commonConfig.DATABASE_URL,
    description: `${commonConfig.DATABASE_URL.description ?? ''} Its role needs REPLICATION (or superuser).`,
  }),
  RELAY_METRICS_PORT: Type.Integer({
    minimum: 0,
    maximum: 65535,
    default: 9464,
    description: 'Port of /metrics, /healthz and /readyz; 0 picks a free one.',
  }),
  RELAY_METRICS_HOST: Type.String({
    minLength: 1,
    default: '127.0.0.1',
    description:
      'Address the metrics port listens on; 0.0.0.0 to reach it from other hosts (in a container, always).',
  }),
  RELAY_SLOT: identifier({
    default: 'sluice_relay',
    description:
      'Logical replication slot (pgoutput) the relay reads, created on the first start. Relays with the same slot are one relay and its standbys.',
  }),
  RELAY_PUBLICATION: identifier({
    default: 'sluice_outbox',
    description:
      'Publication of the outbox inserts, created on the first start; an existing one must publish every insert into the outbox whole.',
  }),
  RELAY_OUTBOX_SCHEMA: identifier({
    default: 'shop',
    description: 'Schema of the outbox table.',
  }),
  RELAY_OUTBOX_TABLE: identifier({
    default: 'outbox',
    description: 'Name of the outbox table in RELAY_OUTBOX_SCHEMA.',
  }),
  RELAY_EVENT_SOURCE: Type.String({
    minLength: 1,
    default: '/shop-api',
    description:
      'CloudEvents `source` of the published events: the service that writes the outbox.',
  }),
  RELAY_TOPIC_PREFIX: Type.String({
    pattern: '^[A-Za-z0-9._-]*$',
    default: '',
    description:
      'Put before every topic name (<prefix>outbox.event.<aggregate_type>); keeps environments that share a Kafka cluster apart.',
  }),
  RELAY_TOPIC_PARTITIONS: Type.Integer({
    minimum: 1,
    maximum: 1000,
    default: 6,
    description:
      'Partitions of the topics the relay creates (with unlimited retention); existing topics keep theirs.',
  }),
  ...topicReplicationSettings('RELAY'),
  RELAY_MAX_BATCH_EVENTS: Type.Integer({
    minimum: 1,
    maximum: 100_000,
    default: 700,
    description: 'Most events in one send to Kafka.',
  }),
  RELAY_MAX_BUFFERED_EVENTS: Type.Integer({
    minimum: 100,
    maximum: 10_000_000,
    default: 2000,
    description:
      'Events read but not yet acknowledged by Kafka at which reading the WAL pauses (memory bound while Kafka is slow or away).',
  }),
  RELAY_MAX_BUFFERED_BYTES: Type.Integer({
    minimum: 1_048_576,
    maximum: 1_073_741_824,
    default: 33_554_432,
    description:
      'Payload bytes (about: characters of their JSON) of the events read but not yet acknowledged by Kafka at which reading the WAL pauses: what bounds memory for large payloads.',
  }),
  RELAY_COMPRESS_ABOVE_BYTES: Type.Integer({
    minimum: 0,
    default: 65_536,
    description:
      'Bytes: a batch holding a record larger than this is sent compressed with RELAY_COMPRESSION.',
  }),
  RELAY_COMPRESSION: Type.Union(
    CODEC_NAMES.map((codec) => Type.Literal(codec)),
    {
      default: 'gzip',
      description:
        'Codec of the batches RELAY_COMPRESS_ABOVE_BYTES picks (none: sent uncompressed). Every consumer of the topics must read it; the projector reads all.',
    },
  ),
  RELAY_MAX_RECORD_BYTES: Type.Integer({
    minimum: 1024,
    default: 921_600,
    description:
      "Bytes: a payload larger than this is stored in sluice.claim_checks and its record carries a reference; keep it under the topics' max.message.bytes.",
  }),
  RELAY_HEARTBEAT_MS: Type.Integer({
    minimum: 100,
    default: 10_000,
    description:
      'Milliseconds between transactional heartbeats into the WAL, so an idle outbox still moves the slot and WAL is not retained.',
  }),
  RELAY_LEADER_POLL_MS: Type.Integer({
    minimum: 50,
    default: 1000,
    description: "Milliseconds between a standby's attempts to take the lead.",
  }),
  RELAY_LEADER_LEASE_MS: Type.Integer({
    minimum: 3000,
    default: 10_000,
    description:
      'Milliseconds after which PostgreSQL ends the lock session and the replication stream of a silent (frozen, cut off) leader, so a standby takes over.',
  }),
  RELAY_STALLED_AFTER_MS: Type.Integer({
    minimum: 100,
    default: 30_000,
    description:
      'Milliseconds of failing sends to Kafka, for any reason, after which /readyz fails.',
  }),
  RELAY_BLOCKED_RETRY_MAX_MS: Type.Integer({
    minimum: 100,
    default: 60_000,
    description:
      'Longest pause, in milliseconds, between retries of a send that retrying cannot fix (until its cause is fixed).',
  }),
  RELAY_STOP_TIMEOUT_MS: Type.Integer({
    minimum: 0,
    default: 10_000,
    description:
      'Milliseconds a stop waits for what was read to reach Kafka; the rest is sent after the next start.',
  }),
  RELAY_JOURNEY_RETENTION_HOURS: Type.Integer({
    minimum: 0,
    default: 168,
    description:
      'Hours sluice.published_events keeps where each event was published (topic, partition, offset, time) for the event journey; 0 records nothing.',
  }),
  RELAY_SLOT_CHECK_MS: Type.Integer({
    minimum: 100,
    default: 5000,
    description:
      "Milliseconds between readings of the slot's lag and WAL status (metrics; a lost or dropped slot stops the relay).",
  }),
});

/** The relay's validated settings. */
export type RelayConfig = Readonly<Static<typeof relayConfigSchema>>;

/** The slot, publication and outbox table the settings name. */
export function replicationNames(config: RelayConfig): ReplicationNames {
  return {
    publication: config.RELAY_PUBLICATION,
    slot: config.RELAY_SLOT,
    outbox: { schema: config.RELAY_OUTBOX_SCHEMA, table: config.RELAY_OUTBOX_TABLE },
  };
}

import { Type, type Static } from '@sinclair/typebox';
import { accessConfigSchema } from '@sluice/access';
import { commonConfig } from '@sluice/service-kit';

/** A name the relay uses in PostgreSQL: slot, schema or table. */
function identifier(options: { default: string; description: string }) {
  return Type.String({ pattern: '^[a-z_][a-z0-9_]{0,62}$', ...options });
}

const URL_LIST = '^(https?://[^,\\s]+(,https?://[^,\\s]+)*)?$';

/** An http(s) URL with a host, then `{traceId}` somewhere in its path, query or fragment. */
const TRACE_URL = '^(https?://[^\\s/?#{}]+[/?#]\\S*\\{traceId\\}\\S*)?$';

/** Comma-separated base URLs of services' HTTP servers. */
function urlList(options: { default: string; description: string }) {
  return Type.String({ pattern: URL_LIST, ...options });
}

/** The console's settings: every environment variable it reads, with its default and description. */
export const consoleConfigSchema = Type.Object({
  ...commonConfig,
  ...accessConfigSchema,
  CONSOLE_PORT: Type.Integer({
    minimum: 0,
    maximum: 65535,
    default: 9470,
    description:
      'Port of the console (pages, /api, /healthz, /readyz, /metrics); 0 picks a free one.',
  }),
  CONSOLE_HOST: Type.String({
    minLength: 1,
    default: '127.0.0.1',
    description:
      'Address the console listens on; 0.0.0.0 to reach it from other hosts (behind TLS).',
  }),
  CONSOLE_RELAY_URLS: urlList({
    default: 'http://127.0.0.1:9464',
    description:
      "Base URLs of the relays' HTTP servers (RELAY_METRICS_HOST:RELAY_METRICS_PORT), comma-separated: the leader and its standbys.",
  }),
  CONSOLE_PROJECTOR_URLS: urlList({
    default: 'http://127.0.0.1:9465',
    description:
      "Base URLs of the projectors' HTTP servers (metrics and operations), comma-separated; actions go to the one hosting the projection.",
  }),
  CONSOLE_API_URLS: urlList({
    default: '',
    description:
      'Base URLs of the services that write the outbox (anything serving /readyz and /metrics, e.g. shop-api), comma-separated.',
  }),
  CONSOLE_TOPIC_PREFIX: Type.String({
    pattern: '^[A-Za-z0-9._-]*$',
    default: '',
    description:
      'Prefix of the event and dead-letter topics; the same as the relay’s RELAY_TOPIC_PREFIX and the projector’s PROJECTOR_TOPIC_PREFIX.',
  }),
  CONSOLE_GROUP_PREFIX: Type.String({
    pattern: '^[A-Za-z0-9._-]*$',
    default: 'sluice.projection.',
    description:
      'Prefix of the projections’ consumer groups; the same as the projector’s PROJECTOR_GROUP_PREFIX.',
  }),
  CONSOLE_OUTBOX_SCHEMA: identifier({
    default: 'shop',
    description: 'Schema of the outbox table (the relay’s RELAY_OUTBOX_SCHEMA).',
  }),
  CONSOLE_OUTBOX_TABLE: identifier({
    default: 'outbox',
    description: 'Name of the outbox table (the relay’s RELAY_OUTBOX_TABLE).',
  }),
  CONSOLE_SLOT: identifier({
    default: 'sluice_relay',
    description: 'The relay’s replication slot (its RELAY_SLOT).',
  }),
  CONSOLE_MASKED_EVENT_TYPES: Type.String({
    pattern: '^([A-Za-z0-9._-]+(,[A-Za-z0-9._-]+)*)?$',
    default: '',
    description:
      'Event types whose payloads viewers do not see in parked records, comma-separated (e.g. customer.registered.v1); while any is set, records of unknown type are masked too. Operators see every payload.',
  }),
  CONSOLE_SESSION_TTL_SECONDS: Type.Integer({
    minimum: 60,
    maximum: 7 * 86_400,
    default: 28_800,
    description: 'Seconds a sign-in lasts (the session cookie’s token).',
  }),
  CONSOLE_TRACE_URL: Type.String({
    pattern: TRACE_URL,
    default: '',
    description:
      'A trace in your tracing UI, with {traceId} where the trace id goes (e.g. http://localhost:16686/trace/{traceId} for Jaeger): the journey links each event to its trace. Unset: trace ids are plain text.',
  }),
  CONSOLE_SAMPLE_MS: Type.Integer({
    minimum: 200,
    maximum: 60_000,
    default: 2000,
    description:
      'Milliseconds between readings of PostgreSQL, Kafka and the services; the stream sends one update per reading.',
  }),
});

/** The console's validated settings. */
export type ConsoleConfig = Readonly<Static<typeof consoleConfigSchema>>;

/** The entries of a comma-separated setting; none for an empty one. */
export function listOf(setting: string): string[] {
  return setting
    .split(',')
    .map((entry) => entry.trim().replace(/\/+$/, ''))
    .filter((entry) => entry !== '');
}

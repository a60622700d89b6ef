import { Type, type Static } from '@sinclair/typebox';
import { accessConfigSchema } from '@sluice/access';
import { masterKeySettings } from '@sluice/privacy';
import { commonConfig, loadConfig, topicReplicationSettings } from '@sluice/service-kit';

const NAME_LIST = '^([a-z][a-z0-9_]*(,[a-z][a-z0-9_]*)*)?$';

/** The projector's settings: every variable with its default and what it means. */
export const projectorConfigSchema = Type.Object({
  ...commonConfig,
  ...accessConfigSchema,
  PROJECTOR_MODULES: Type.String({
    default: '',
    description:
      'Modules whose projections run, comma-separated, when the command line names none: paths ' +
      '(relative to the working directory) or package names resolved from it.',
  }),
  PROJECTOR_PROJECTIONS: Type.String({
    pattern: NAME_LIST,
    default: '',
    description:
      'The projections this process runs, comma-separated (e.g. to give one its own process); ' +
      'empty: every projection the modules export.',
  }),
  PROJECTOR_METRICS_PORT: Type.Integer({
    minimum: 0,
    maximum: 65535,
    default: 9465,
    description:
      'Port of /metrics, /healthz, /readyz and the operations routes; 0 picks a free one.',
  }),
  PROJECTOR_METRICS_HOST: Type.String({
    minLength: 1,
    default: '127.0.0.1',
    description: 'Address the HTTP server listens on.',
  }),
  PROJECTOR_TOPIC_PREFIX: Type.String({
    pattern: '^[A-Za-z0-9._-]*$',
    default: '',
    description:
      'Prefix of the event topics and dead-letter topics; must match the relay’s RELAY_TOPIC_PREFIX.',
  }),
  PROJECTOR_GROUP_PREFIX: Type.String({
    pattern: '^[A-Za-z0-9._-]*$',
    default: 'sluice.projection.',
    description: 'Prefix of the consumer groups (see PROJECTOR_CONSUMER_GROUPS).',
  }),
  PROJECTOR_CONSUMER_GROUPS: Type.Union([Type.Literal('shared'), Type.Literal('per-projection')], {
    default: 'shared',
    description:
      'shared: two projections or more read through one consumer group, <prefix><names joined by +>, each record fetched once; per-projection: a group each, <prefix><projection>. Processes that share partitions must host the same projections.',
  }),
  PROJECTOR_TOPIC_PARTITIONS: Type.Integer({
    minimum: 1,
    maximum: 1000,
    default: 6,
    description: 'Partitions of the topics the projector has to create itself.',
  }),
  ...topicReplicationSettings('PROJECTOR'),
  PROJECTOR_SESSION_TIMEOUT_MS: Type.Integer({
    minimum: 6000,
    maximum: 300_000,
    default: 30_000,
    description:
      'A crashed projector’s partitions move to the others after this long (Kafka allows 6000 and up).',
  }),
  PROJECTOR_FETCH_LINGER_MS: Type.Integer({
    minimum: 0,
    maximum: 1000,
    default: 0,
    description:
      'After a fetch that reached its partitions’ ends, the wait before the next (none while a partition is behind): events written meanwhile apply in one transaction (0: fetch again at once).',
  }),
  PROJECTOR_GENERATION_POLL_MS: Type.Integer({
    minimum: 100,
    maximum: 3_600_000,
    default: 1000,
    description:
      'How often the process checks generations: rebuilds started elsewhere, swaps, retirements.',
  }),
  PROJECTOR_MAX_ATTEMPTS: Type.Integer({
    minimum: 1,
    maximum: 20,
    default: 3,
    description:
      'Attempts of a failing handler (pauses between them double from 50 ms up to 2 s) before its event is dead-lettered.',
  }),
  PROJECTOR_STALLED_AFTER_MS: Type.Integer({
    minimum: 1000,
    maximum: 3_600_000,
    default: 30_000,
    description:
      'A consumer whose batches have failed this long without a success, with a batch applying this long, or with a fetch Kafka has not answered this long, makes /readyz fail.',
  }),
  PROJECTOR_JOURNEY_RETENTION_HOURS: Type.Integer({
    minimum: 0,
    default: 168,
    description:
      'Hours sluice.projection_applied_batches keeps when each batch was applied (the event journey); 0 records nothing.',
  }),
  PROJECTOR_STOP_TIMEOUT_MS: Type.Integer({
    minimum: 1000,
    maximum: 3_600_000,
    default: 30_000,
    description:
      'A stop (SIGTERM) that has not finished the batches in hand after this long exits anyway, as a failure.',
  }),
  ...masterKeySettings,
});

/** The projector's validated, frozen settings. */
export type ProjectorConfig = Readonly<Static<typeof projectorConfigSchema>>;

/**
 * Reads the projector's settings from `env`: defaults filled, every invalid variable named.
 *
 * @throws SluiceError `config_invalid`
 * @example const config = loadProjectorConfig({ PROJECTOR_METRICS_PORT: '0' });
 */
export function loadProjectorConfig(env: NodeJS.ProcessEnv): ProjectorConfig {
  return loadConfig(projectorConfigSchema, env);
}

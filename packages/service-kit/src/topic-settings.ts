import { Type, type TInteger, type TLiteral, type TUnion } from '@sinclair/typebox';

type AutoOrCount = TUnion<[TInteger, TLiteral<'auto'>]>;

const autoOrCount = (maximum: number, description: string): AutoOrCount =>
  Type.Union([Type.Integer({ minimum: 1, maximum }), Type.Literal('auto')], {
    default: 'auto',
    description,
  });

/**
 * The replication settings of the topics a program creates, named after its prefix
 * (`RELAY_TOPIC_REPLICATION_FACTOR`, `RELAY_TOPIC_MIN_INSYNC_REPLICAS`); spread into its schema.
 */
export function topicReplicationSettings<P extends string>(
  prefix: P,
): Record<`${P}_TOPIC_REPLICATION_FACTOR` | `${P}_TOPIC_MIN_INSYNC_REPLICAS`, AutoOrCount> {
  return {
    [`${prefix}_TOPIC_REPLICATION_FACTOR`]: autoOrCount(
      16,
      'Replicas of each partition of the topics it creates; auto: 3 on a cluster of three or more brokers, else one per broker. Existing topics keep theirs; their durability is checked at start.',
    ),
    [`${prefix}_TOPIC_MIN_INSYNC_REPLICAS`]: autoOrCount(
      16,
      'min.insync.replicas of the topics it creates (replicas that must have an event before Kafka acknowledges it); auto: 2 with three or more replicas, else 1.',
    ),
  } as Record<`${P}_TOPIC_REPLICATION_FACTOR` | `${P}_TOPIC_MIN_INSYNC_REPLICAS`, AutoOrCount>;
}

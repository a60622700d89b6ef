import { SluiceError, errorMessage } from '@sluice/errors';
import kafkajs, { type Admin, type Kafka } from 'kafkajs';

// A CommonJS module whose ConfigResourceTypes Node's ESM loader does not see as a named export.
const { ConfigResourceTypes } = kafkajs;

/** The codes of the {@link SluiceError}s this package throws. */
export type KafkaErrorCode = 'topic_not_ready';

/** Options for {@link createTopicEnsurer}. */
export interface EnsureTopicsOptions {
  /** Partitions of the topics created here. Default 6. */
  partitions?: number;
  /** How long to wait for every partition to have a leader. Default 30000. */
  leaderTimeoutMs?: number;
  /**
   * Replicas of each partition of the topics created here. `auto` (the default): 3 on a
   * cluster of at least three brokers, otherwise as many as there are brokers.
   */
  replicationFactor?: number | 'auto' | undefined;
  /**
   * `min.insync.replicas` of the topics created here: how many replicas must have a record
   * before Kafka acknowledges it (the relay asks for all of them). `auto` (the default): 2 with
   * three or more replicas, otherwise 1.
   */
  minInsyncReplicas?: number | 'auto' | undefined;
  /**
   * Told once per topic, created here or found, whose settings cannot keep an acknowledged
   * record through the loss of a broker (see {@link durabilityProblems}).
   */
  onDurabilityProblem?: ((topic: string, problem: string) => void) | undefined;
}

/** What a topic keeps: its partitions' replicas and the settings that decide durability. */
export interface TopicDurability {
  brokers: number;
  replicationFactor: number;
  minInsyncReplicas: number;
  uncleanLeaderElection: boolean;
}

/**
 * Why a topic's settings cannot keep an acknowledged record through the loss of one broker;
 * empty when they can (or when the cluster has one broker, where nothing can).
 */
export function durabilityProblems(topic: TopicDurability): string[] {
  const problems: string[] = [];
  const { brokers, replicationFactor: rf, minInsyncReplicas: minIsr } = topic;
  if (brokers > 1 && rf === 1)
    problems.push(
      `replication factor 1 on a cluster of ${brokers} brokers: one broker lost loses records`,
    );
  if (rf > 1 && minIsr < 2)
    problems.push(
      `min.insync.replicas ${minIsr}: a record acknowledged by its leader alone is lost with it`,
    );
  if (minIsr > rf)
    problems.push(`min.insync.replicas ${minIsr} above its ${rf} replicas: no write can succeed`);
  else if (rf > 1 && minIsr === rf)
    problems.push(
      `min.insync.replicas ${minIsr} of ${rf} replicas: one broker down stops every write`,
    );
  if (topic.uncleanLeaderElection)
    problems.push(
      'unclean.leader.election.enable=true: a lagging replica may lead and drop acknowledged records',
    );
  return problems;
}

/** The replication factor and min.insync.replicas for topics created on `brokers` brokers. */
export function replicationFor(
  brokers: number,
  options: Pick<EnsureTopicsOptions, 'replicationFactor' | 'minInsyncReplicas'>,
): { replicationFactor: number; minInsyncReplicas: number } {
  const rf = options.replicationFactor;
  const replicationFactor = rf === undefined || rf === 'auto' ? Math.min(3, brokers) : rf;
  const minIsr = options.minInsyncReplicas;
  const minInsyncReplicas =
    minIsr === undefined || minIsr === 'auto' ? (replicationFactor >= 3 ? 2 : 1) : minIsr;
  return { replicationFactor, minInsyncReplicas };
}

/** Creates the missing topics with unlimited retention and the replication `options` ask for. */
async function createMissing(
  admin: Admin,
  topics: readonly string[],
  brokers: number,
  options: EnsureTopicsOptions,
): Promise<void> {
  const existing = new Set(await admin.listTopics());
  const create = topics.filter((topic) => !existing.has(topic));
  if (create.length === 0) return;
  const { replicationFactor, minInsyncReplicas } = replicationFor(brokers, options);
  // kafkajs's own wait retries LEADER_NOT_AVAILABLE only; a topic that metadata does not
  // list yet (UNKNOWN_TOPIC_OR_PARTITION) would fail it, so the caller waits instead.
  await admin
    .createTopics({
      waitForLeaders: false,
      topics: create.map((topic) => ({
        topic,
        numPartitions: options.partitions ?? 6,
        replicationFactor,
        configEntries: [
          { name: 'retention.ms', value: '-1' },
          { name: 'retention.bytes', value: '-1' },
          { name: 'min.insync.replicas', value: String(minInsyncReplicas) },
        ],
      })),
    })
    .catch((error: unknown) => {
      // Another process created one of them at the same time: it exists, as wanted.
      const { type } = error as { type?: unknown };
      if (type !== 'TOPIC_ALREADY_EXISTS' && !/already exists/i.test(errorMessage(error)))
        throw error;
    });
}

/** Tells `report` what each topic's replicas and settings cannot keep. */
async function checkDurability(
  admin: Admin,
  topics: readonly string[],
  brokers: number,
  report: (topic: string, problem: string) => void,
): Promise<void> {
  const metadata = await admin.fetchTopicMetadata({ topics: [...topics] });
  const { resources } = await admin.describeConfigs({
    includeSynonyms: false,
    resources: topics.map((name) => ({
      type: ConfigResourceTypes.TOPIC,
      name,
      configNames: ['min.insync.replicas', 'unclean.leader.election.enable'],
    })),
  });
  for (const topic of metadata.topics) {
    const entries = resources.find((r) => r.resourceName === topic.name)?.configEntries ?? [];
    const value = (name: string) => entries.find((e) => e.configName === name)?.configValue;
    const durability = {
      brokers,
      replicationFactor: Math.min(...topic.partitions.map((p) => p.replicas.length)),
      minInsyncReplicas: Number(value('min.insync.replicas') ?? 1),
      uncleanLeaderElection: value('unclean.leader.election.enable') === 'true',
    };
    for (const problem of durabilityProblems(durability)) report(topic.name, problem);
  }
}

async function ensureTopics(
  kafka: Kafka,
  topics: readonly string[],
  options: EnsureTopicsOptions = {},
): Promise<void> {
  if (topics.length === 0) return;
  const admin = kafka.admin();
  await admin.connect();
  try {
    const brokers = (await admin.describeCluster()).brokers.length;
    await createMissing(admin, topics, brokers, options);
    await waitForLeaders(admin, topics, options.leaderTimeoutMs ?? 30_000);
    const report = options.onDurabilityProblem;
    if (report !== undefined) {
      await checkDurability(admin, topics, brokers, report).catch((error: unknown) => {
        for (const topic of topics)
          report(
            topic,
            `its settings could not be read (${errorMessage(error)}): durability unchecked`,
          );
      });
    }
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Kafka's error codes for a topic a broker has not learnt of yet, or without a leader yet. */
const METADATA_LAG = new Set(['UNKNOWN_TOPIC_OR_PARTITION', 'LEADER_NOT_AVAILABLE']);

/**
 * Whether `error`, or an error it wraps, is a broker not knowing a topic created a moment ago, or
 * a partition of it without a leader yet: both pass once the cluster's metadata caught up.
 */
export function isTopicMetadataLag(error: unknown): boolean {
  for (let cause = error; typeof cause === 'object' && cause !== null;) {
    const { type, cause: inner } = cause as { type?: unknown; cause?: unknown };
    if (typeof type === 'string' && METADATA_LAG.has(type)) return true;
    cause = inner;
  }
  return false;
}

/** The topics of `topics` that `metadata` does not list with a leader for every partition. */
function unledTopics(
  metadata: Awaited<ReturnType<Admin['fetchTopicMetadata']>> | null,
  topics: readonly string[],
): string[] {
  return topics.filter((name) => {
    const topic = metadata?.topics.find((t) => t.name === name);
    return (
      topic === undefined ||
      topic.partitions.length === 0 ||
      topic.partitions.some((partition) => partition.leader < 0)
    );
  });
}

/** Waits until the metadata lists every topic of `topics` with a leader for every partition. */
async function waitForLeaders(
  admin: Admin,
  topics: readonly string[],
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let delayMs = 50; ; delayMs = Math.min(delayMs * 2, 500)) {
    let pending: string[];
    let why = 'no partition leader';
    try {
      // kafkajs answers null when every broker it asked failed.
      pending = unledTopics(await admin.fetchTopicMetadata({ topics: [...topics] }), topics);
    } catch (error) {
      pending = [...topics];
      why = errorMessage(error);
    }
    if (pending.length === 0) return;
    if (Date.now() >= deadline) {
      throw new SluiceError<KafkaErrorCode>(
        'topic_not_ready',
        `Kafka lists no leader for every partition of ${pending.join(', ')} ${timeoutMs} ms after ` +
          `they were created (${why}); check that every broker is up and in the cluster`,
      );
    }
    await pause(delayMs);
  }
}

/**
 * Runs `run` (a consumer's subscribe, say) again while it fails because a broker does not know
 * `topics` yet or a partition of them has no leader yet, as happens for a while after they were
 * created, by this process or another, on a cluster of several brokers.
 *
 * @throws SluiceError `topic_not_ready` when that still fails after `timeoutMs`; any other
 *   failure of `run` at once.
 * @example await whenTopicsKnown(topics, () => consumer.subscribe({ topics }), 30_000);
 */
export async function whenTopicsKnown<T>(
  topics: readonly string[],
  run: () => Promise<T>,
  timeoutMs: number,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (let delayMs = 50; ; delayMs = Math.min(delayMs * 2, 500)) {
    try {
      return await run();
    } catch (error) {
      if (!isTopicMetadataLag(error)) throw error;
      if (Date.now() >= deadline) {
        throw new SluiceError<KafkaErrorCode>(
          'topic_not_ready',
          `Kafka still does not know ${topics.join(', ')}, or has no leader for a partition of ` +
            `them, ${timeoutMs} ms on (${errorMessage(error)}); check that every broker is up and in the cluster`,
          { cause: error },
        );
      }
      await pause(delayMs);
    }
  }
}

/**
 * Returns a function that makes sure topics exist. It creates those that are missing, keeping
 * their records forever (consumers rebuild read models from the beginning), and waits until
 * every partition of every one has a leader: a topic created a moment ago, here or by another
 * process, refuses produce and fetch until then. Another process creating the same topic at the
 * same time is fine. It remembers what it ensured, so each topic costs admin requests once.
 *
 * @throws SluiceError `topic_not_ready` (from the returned function) when a partition has no
 *   leader within `leaderTimeoutMs`.
 * @example
 * const ensureTopics = createTopicEnsurer(kafka, { partitions: 6 });
 * await ensureTopics(['outbox.event.cart']);
 */
export function createTopicEnsurer(
  kafka: Kafka,
  options: EnsureTopicsOptions = {},
): (topics: Iterable<string>) => Promise<void> {
  const known = new Set<string>();
  return async (topics) => {
    const missing = [...topics].filter((topic) => !known.has(topic));
    await ensureTopics(kafka, missing, options);
    for (const topic of missing) known.add(topic);
  };
}

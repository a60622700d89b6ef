import { logLevel } from 'kafkajs';

/** The levels kafkajs' entries are logged at. */
export type LevelName = 'error' | 'warn' | 'info' | 'debug';

/** A kafkajs log entry, as its `logCreator` receives it. */
export interface KafkaLogEntry {
  namespace: string;
  level: logLevel;
  log: { message: string; [field: string]: unknown };
}

const LEVELS: Readonly<Record<number, LevelName>> = {
  [logLevel.ERROR]: 'error',
  [logLevel.WARN]: 'warn',
  [logLevel.INFO]: 'info',
  [logLevel.DEBUG]: 'debug',
};

/** kafkajs' texts of the Kafka error codes that are steps of a normal start (see below). */
export const STARTUP_ERRORS = {
  GROUP_COORDINATOR_NOT_AVAILABLE: 'The group coordinator is not available',
  GROUP_LOAD_IN_PROGRESS:
    "The coordinator is loading and hence can't process requests for this group",
  NOT_COORDINATOR_FOR_GROUP: 'This is not the correct coordinator for this group',
  REBALANCE_IN_PROGRESS: 'The group is rebalancing, so a rejoin is needed',
  UNKNOWN_TOPIC_OR_PARTITION: 'This server does not host this topic-partition',
  LEADER_NOT_AVAILABLE:
    'There is no leader for this topic-partition as we are in the middle of a leadership election',
  NOT_LEADER_FOR_PARTITION: 'This server is not the leader for that topic-partition',
} as const;

const {
  GROUP_COORDINATOR_NOT_AVAILABLE,
  GROUP_LOAD_IN_PROGRESS,
  NOT_COORDINATOR_FOR_GROUP,
  REBALANCE_IN_PROGRESS,
  UNKNOWN_TOPIC_OR_PARTITION,
  LEADER_NOT_AVAILABLE,
  NOT_LEADER_FOR_PARTITION,
} = STARTUP_ERRORS;

/** Coordinators: a fresh cluster creates `__consumer_offsets` at the first lookup, then loads it. */
const COORDINATOR = [
  GROUP_COORDINATOR_NOT_AVAILABLE,
  GROUP_LOAD_IN_PROGRESS,
  NOT_COORDINATOR_FOR_GROUP,
];
/** Group membership: every member joins again whenever one joins or leaves. */
const MEMBERSHIP = [...COORDINATOR, REBALANCE_IN_PROGRESS];
/** A topic created a moment ago, here or elsewhere: brokers learn of it, partitions get leaders. */
const NEW_TOPIC = [UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE, NOT_LEADER_FOR_PARTITION];

/**
 * Per request, the errors a broker answers with during a normal start, which kafkajs retries by
 * itself. kafkajs logs each such answer at error level; what persists reaches the caller as a
 * thrown error, which the caller reports. Requests not listed (a produce, a topic deletion, …)
 * keep their level whatever the error.
 */
const STARTUP_ANSWERS: Readonly<Record<string, readonly string[]>> = {
  GroupCoordinator: COORDINATOR,
  InitProducerId: COORDINATOR,
  JoinGroup: MEMBERSHIP,
  SyncGroup: MEMBERSHIP,
  Heartbeat: MEMBERSHIP,
  OffsetFetch: MEMBERSHIP,
  OffsetCommit: MEMBERSHIP,
  Metadata: NEW_TOPIC,
  ListOffsets: NEW_TOPIC,
  Fetch: NEW_TOPIC,
  // Another process created the same topic first: kafkajs resolves when every error is
  // TOPIC_ALREADY_EXISTS and throws any other to the caller.
  CreateTopics: ['Topic creation errors'],
};

/** Crash causes after which kafkajs restarts a consumer that was joining its group. */
const RESTARTED_AFTER = new Set<string>(MEMBERSHIP);

/** A broker's error answer to a request, as kafkajs' connection logs it: `Response Metadata(key: 3, …)`. */
function isStartupAnswer({ namespace, log }: KafkaLogEntry): boolean {
  if (namespace !== 'Connection' || typeof log.error !== 'string') return false;
  const request = /^Response (\w+)\(/.exec(log.message)?.[1];
  return request !== undefined && (STARTUP_ANSWERS[request]?.includes(log.error) ?? false);
}

/**
 * Returns the level each kafkajs entry is logged at: kafkajs' own, except for the known steps of
 * a normal start — coordinators being created or loaded, topics just created, groups
 * rebalancing — which kafkajs logs as errors and warnings while it retries them:
 * - a broker's error answer listed in {@link STARTUP_ANSWERS}: debug;
 * - `The group is rebalancing, re-joining`: info;
 * - a consumer crash on a coordinator or rebalance error, which kafkajs restarts, and the
 *   `Restarting the consumer` line after it: info.
 * A crash for any other cause, or one kafkajs gave up retrying, keeps its level.
 * One per client: it remembers which consumer groups are restarting after such a crash.
 */
export function createLevelMapper(): (entry: KafkaLogEntry) => LevelName {
  const restarting = new Set<unknown>();
  return (entry) => {
    const level = LEVELS[entry.level] ?? 'info';
    if (level !== 'error' && level !== 'warn') return level;
    const { namespace, log } = entry;
    if (isStartupAnswer(entry)) return 'debug';
    if (namespace === 'Runner' && log.error === REBALANCE_IN_PROGRESS) return 'info';
    if (namespace !== 'Consumer') return level;
    const crash = /^Crash: KafkaJSProtocolError: (.*)$/.exec(log.message)?.[1];
    if (crash !== undefined && RESTARTED_AFTER.has(crash)) {
      restarting.add(log.groupId);
      return 'info';
    }
    if (log.message.startsWith('Crash: ')) restarting.delete(log.groupId);
    if (log.message.startsWith('Restarting the consumer') && restarting.delete(log.groupId)) {
      return 'info';
    }
    return level;
  };
}

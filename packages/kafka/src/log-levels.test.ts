// The levels kafkajs' entries are logged at, over entries recorded from the services: first
// starts against a fresh cluster and against a shared one (two projectors joining at once), a
// client without a broker, a consumer whose batch handler throws, a topic deletion that fails.
import { logLevel } from 'kafkajs';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { createLevelMapper, STARTUP_ERRORS, type KafkaLogEntry } from './log-levels.js';

const { ERROR, WARN, INFO } = logLevel;

const connection = (request: string, error: string): KafkaLogEntry => ({
  namespace: 'Connection',
  level: ERROR,
  log: {
    timestamp: '2026-11-30T08:51:21.000Z',
    logger: 'kafkajs',
    broker: '127.0.0.1:20820',
    clientId: 'sluice-projector',
    error,
    correlationId: 2,
    size: 55,
    message: `Response ${request}`,
  },
});

const crash = (groupId: string, cause: string): KafkaLogEntry => ({
  namespace: 'Consumer',
  level: ERROR,
  log: {
    timestamp: '2026-11-30T08:53:18.095Z',
    logger: 'kafkajs',
    groupId,
    stack: `${cause}\n    at createErrorFromCode (kafkajs/src/protocol/error.js:581:10)`,
    message: `Crash: ${cause}`,
  },
});

const restarting = (groupId: string): KafkaLogEntry => ({
  namespace: 'Consumer',
  level: ERROR,
  log: {
    timestamp: '2026-11-30T08:53:18.096Z',
    logger: 'kafkajs',
    retryTime: 300,
    groupId,
    message: 'Restarting the consumer in 300ms',
  },
});

/** What a first start printed, kafkajs retrying each one until it passed. */
const startup: [string, KafkaLogEntry][] = [
  [
    'a coordinator not there yet',
    connection(
      'GroupCoordinator(key: 10, version: 2)',
      STARTUP_ERRORS.GROUP_COORDINATOR_NOT_AVAILABLE,
    ),
  ],
  [
    "the producer id's coordinator loading",
    connection('InitProducerId(key: 22, version: 1)', STARTUP_ERRORS.GROUP_LOAD_IN_PROGRESS),
  ],
  [
    'a topic just created',
    connection('Metadata(key: 3, version: 6)', STARTUP_ERRORS.UNKNOWN_TOPIC_OR_PARTITION),
  ],
  [
    'a partition leader being elected',
    connection('ListOffsets(key: 2, version: 3)', STARTUP_ERRORS.NOT_LEADER_FOR_PARTITION),
  ],
  [
    'a topic another process created first',
    connection('CreateTopics(key: 19, version: 3)', 'Topic creation errors'),
  ],
  [
    'a heartbeat while members join',
    connection('Heartbeat(key: 12, version: 3)', STARTUP_ERRORS.REBALANCE_IN_PROGRESS),
  ],
  [
    'a sync while members join',
    connection('SyncGroup(key: 14, version: 3)', STARTUP_ERRORS.REBALANCE_IN_PROGRESS),
  ],
];

describe('createLevelMapper', () => {
  it.each(startup)('logs a broker answer during start-up at debug: %s', (_what, entry) => {
    expect(createLevelMapper()(entry)).toBe('debug');
  });

  it('logs a group rebalancing at info', () => {
    const rejoining: KafkaLogEntry = {
      namespace: 'Runner',
      level: WARN,
      log: {
        timestamp: '2026-11-30T08:51:23.174Z',
        logger: 'kafkajs',
        groupId: 'rec_mx313ohs_1cb3e4.g.removed_then_bought',
        memberId: 'sluice-projector-99f39086-6de0-4b22-9cfa-3b2e8a3da463',
        error: STARTUP_ERRORS.REBALANCE_IN_PROGRESS,
        message: 'The group is rebalancing, re-joining',
      },
    };
    expect(createLevelMapper()(rejoining)).toBe('info');
  });

  it('logs a consumer restarted after its coordinator was loading at info, and only that group', () => {
    const levelOf = createLevelMapper();
    const group = 'rec_mx3164w2_8222d1.g.audit_log';
    const loading = `KafkaJSProtocolError: ${STARTUP_ERRORS.GROUP_LOAD_IN_PROGRESS}`;
    expect(levelOf(crash(group, loading))).toBe('info');
    expect(levelOf(restarting('rec_mx3164w2_8222d1.g.cart_summary'))).toBe('error');
    expect(levelOf(restarting(group))).toBe('info');
    // The next restart of that group has a crash of its own to be judged by.
    expect(levelOf(restarting(group))).toBe('error');
  });

  it('keeps a crash for any other cause at error, and the restart after it', () => {
    const levelOf = createLevelMapper();
    const group = 'rec-1796028992879-g';
    const loading = `KafkaJSProtocolError: ${STARTUP_ERRORS.GROUP_LOAD_IN_PROGRESS}`;
    expect(levelOf(crash(group, loading))).toBe('info');
    // kafkajs gave up retrying the coordinator: no longer a step of a start.
    const exhausted = `KafkaJSNumberOfRetriesExceeded: ${STARTUP_ERRORS.GROUP_COORDINATOR_NOT_AVAILABLE}`;
    expect(levelOf(crash(group, exhausted))).toBe('error');
    expect(levelOf(restarting(group))).toBe('error');
    const handlerBug = "KafkaJSNonRetriableError: Cannot read properties of null (reading 'x')";
    expect(levelOf(crash(group, handlerBug))).toBe('error');
  });

  it('keeps the level of everything else', () => {
    const levelOf = createLevelMapper();
    const refused: KafkaLogEntry = {
      namespace: 'Connection',
      level: ERROR,
      log: {
        timestamp: '2026-11-30T08:56:32.815Z',
        logger: 'kafkajs',
        message: 'Connection error: connect ECONNREFUSED 127.0.0.1:1',
        broker: '127.0.0.1:1',
        clientId: 'rec',
        stack: 'Error: connect ECONNREFUSED 127.0.0.1:1',
      },
    };
    const seedBroker: KafkaLogEntry = {
      namespace: 'BrokerPool',
      level: ERROR,
      log: {
        timestamp: '2026-11-30T08:56:32.816Z',
        logger: 'kafkajs',
        message:
          'Failed to connect to seed broker, trying another broker from the list: Connection error: connect ECONNREFUSED 127.0.0.1:1',
        retryCount: 0,
        retryTime: 60,
      },
    };
    const handlerThrew: KafkaLogEntry = {
      namespace: 'Runner',
      level: ERROR,
      log: {
        timestamp: '2026-11-30T08:56:33.145Z',
        logger: 'kafkajs',
        message: 'Error when calling eachBatch',
        topic: 'rec-1796028992879',
        partition: 0,
        offset: '0',
        stack: "TypeError: Cannot read properties of null (reading 'x')",
      },
    };
    const couldNotDelete: KafkaLogEntry = {
      namespace: 'Admin',
      level: WARN,
      log: {
        timestamp: '2026-11-30T08:56:33.194Z',
        logger: 'kafkajs',
        message: 'Could not delete topics',
        error: STARTUP_ERRORS.UNKNOWN_TOPIC_OR_PARTITION,
        retryCount: 0,
        retryTime: 292,
      },
    };
    const unknownMember: KafkaLogEntry = {
      namespace: 'Runner',
      level: ERROR,
      log: {
        timestamp: '2026-11-30T08:57:00.000Z',
        logger: 'kafkajs',
        groupId: 'g',
        memberId: 'm',
        error: 'The coordinator is not aware of this member',
        message: 'The coordinator is not aware of this member, re-joining the group',
      },
    };
    expect(levelOf(refused)).toBe('error');
    expect(levelOf(seedBroker)).toBe('error');
    expect(levelOf(handlerThrew)).toBe('error');
    expect(levelOf(couldNotDelete)).toBe('warn');
    expect(levelOf(unknownMember)).toBe('error');
    // The same Kafka errors answering requests that are no step of a start.
    const deleteMissing = connection(
      'DeleteTopics(key: 20, version: 1)',
      STARTUP_ERRORS.UNKNOWN_TOPIC_OR_PARTITION,
    );
    expect(levelOf(deleteMissing)).toBe('error');
    const produce = connection(
      'Produce(key: 0, version: 7)',
      STARTUP_ERRORS.NOT_LEADER_FOR_PARTITION,
    );
    expect(levelOf(produce)).toBe('error');
    const notAuthorized = connection(
      'Metadata(key: 3, version: 6)',
      'Not authorized to access topics: [Topic authorization failed]',
    );
    expect(levelOf(notAuthorized)).toBe('error');
    expect(levelOf({ ...refused, level: INFO })).toBe('info');
  });

  it("names each start-up error by kafkajs' own text of it", () => {
    const { errorCodes } = createRequire(import.meta.url)('kafkajs/src/protocol/error') as {
      errorCodes: { type: string; message: string }[];
    };
    for (const [type, message] of Object.entries(STARTUP_ERRORS)) {
      expect(errorCodes.find((code) => code.type === type)?.message).toBe(message);
    }
  });
});

import { Kafka, logLevel, type RetryOptions } from 'kafkajs';
import { createLevelMapper, type KafkaLogEntry, type LevelName } from './log-levels.js';
import type { KafkaSecurity } from './security.js';

/** Where kafkajs' log entries go: a pino logger fits. */
export type KafkaLogger = Record<
  LevelName,
  (fields: Record<string, unknown>, message: string) => void
>;

/** Options for {@link createKafka}. */
export interface CreateKafkaOptions {
  /** Names this process to the brokers, e.g. `sluice-relay`. */
  clientId: string;
  brokers: readonly string[];
  /**
   * Receives kafkajs' warnings and errors, each as `{ kafka: { namespace, …fields } }` with
   * kafkajs' message; the known steps of a normal start at debug or info instead (see
   * {@link createLevelMapper}). Without one, the client logs nothing.
   */
  logger?: KafkaLogger;
  /** How long to wait for a broker connection. Default kafkajs' 1000. */
  connectionTimeoutMs?: number;
  /** kafkajs' retry settings for its requests. Default kafkajs' own. */
  retry?: RetryOptions;
  /** TLS and SASL, as `kafkaSecurityOf` makes them from the settings. Default: neither. */
  security?: KafkaSecurity;
}

function logCreator(logger: KafkaLogger) {
  return () => {
    const levelOf = createLevelMapper();
    return (entry: KafkaLogEntry) => {
      const { message, ...fields } = entry.log;
      logger[levelOf(entry)]({ kafka: { namespace: entry.namespace, ...fields } }, message);
    };
  };
}

/**
 * A kafkajs client whose warnings and errors go to `logger`, with the start-up noise demoted.
 *
 * @example
 * const kafka = createKafka({ clientId: 'sluice-relay', brokers: parseBrokers(config.KAFKA_BROKERS), logger });
 */
export function createKafka(options: CreateKafkaOptions): Kafka {
  const { logger } = options;
  return new Kafka({
    clientId: options.clientId,
    brokers: [...options.brokers],
    ...(options.connectionTimeoutMs === undefined
      ? {}
      : { connectionTimeout: options.connectionTimeoutMs }),
    ...(options.retry === undefined ? {} : { retry: options.retry }),
    ...options.security,
    ...(logger === undefined
      ? { logLevel: logLevel.NOTHING }
      : { logLevel: logLevel.WARN, logCreator: logCreator(logger) }),
  });
}

/**
 * Splits `KAFKA_BROKERS`-style text (`host:port,host:port`) into a broker list.
 *
 * @example parseBrokers('kafka-1:9092, kafka-2:9092') // ['kafka-1:9092', 'kafka-2:9092']
 */
export function parseBrokers(text: string): string[] {
  return text
    .split(',')
    .map((broker) => broker.trim())
    .filter((broker) => broker.length > 0);
}

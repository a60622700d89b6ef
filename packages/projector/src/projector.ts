import { topicFor, type DomainEvent } from '@sluice/contracts';
import { SluiceError } from '@sluice/errors';
import { createTopicEnsurer } from '@sluice/preflight';
import { redriveParked, skipParked } from './parked.js';
import type { Consumer, IHeaders, Kafka, KafkaMessage, Producer } from 'kafkajs';
import type { Kysely } from 'kysely';
import {
  OffsetGapError,
  applyBatch,
  type BatchResult,
  type DeadLetter,
  type DeadLetterSink,
  type IncomingRecord,
} from './batch.js';
import type { Projection } from './projection.js';

/** What the projector reports as it works. */
export interface ProjectorHooks {
  batch?(
    projection: string,
    topic: string,
    partition: number,
    result: BatchResult,
    lag: number,
  ): void;
  failed?(projection: string, error: unknown): void;
}

/** Options for {@link createProjector}. */
export interface ProjectorOptions<DB> {
  db: Kysely<DB>;
  kafka: Kafka;
  projections: readonly Projection<DB>[];
  /** Prefix of the event topics (as the relay's `RELAY_TOPIC_PREFIX`) and of DLQ topics. Default ''. */
  topicPrefix?: string;
  /** Consumer groups are `<groupPrefix><projection>`. Default `sluice.projection.`. */
  groupPrefix?: string;
  /** Partitions of topics the projector has to create itself. Default 6. */
  partitions?: number;
  upcast?: (event: DomainEvent) => DomainEvent;
  /** Attempts of a failing handler before its event is dead-lettered. Default 3. */
  maxAttempts?: number;
  retryDelayMs?: number;
  /** How long a silent member keeps its partitions; after a crash, the wait before others take over. Default 30000. */
  sessionTimeoutMs?: number;
  hooks?: ProjectorHooks;
}

/** Running projections. */
export interface Projector {
  start(): Promise<void>;
  /** Finishes the batches in hand, then leaves the consumer groups. */
  stop(): Promise<void>;
  /** Applies an aggregate's parked events again, in order (after the cause was fixed). */
  redrive(projection: string, aggregate: { type: string; id: string }): Promise<BatchResult>;
  /** Gives up on one parked record and redrives what was parked behind it; undefined if absent. */
  skip(
    projection: string,
    record: { topic: string; partition: number; offset: string },
  ): Promise<BatchResult | undefined>;
}

function toHeaders(headers: IHeaders | undefined): Record<string, string | undefined> {
  const result: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(headers ?? {})) {
    if (value === undefined) continue;
    result[name] = Array.isArray(value) ? value.map(String).join(',') : value.toString();
  }
  return result;
}

function toRecord(topic: string, partition: number, message: KafkaMessage): IncomingRecord {
  return {
    topic,
    partition,
    offset: BigInt(message.offset),
    key: message.key?.toString() ?? null,
    value: message.value?.toString() ?? null,
    headers: toHeaders(message.headers),
  };
}

/** The dead-letter record: the original key, value and headers plus `sluice_error_*` headers. */
function deadLetterMessage(projection: string, letter: DeadLetter) {
  const { record } = letter;
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(record.headers))
    if (value !== undefined) headers[name] = value;
  Object.assign(headers, {
    sluice_error_projection: projection,
    sluice_error_topic: record.topic,
    sluice_error_partition: String(record.partition),
    sluice_error_offset: record.offset.toString(),
    sluice_error_class: letter.errorClass,
    sluice_error_message: letter.message.slice(0, 2000),
    sluice_error_attempts: String(letter.attempts),
    sluice_error_first_failure: letter.firstFailure.toISOString(),
    sluice_error_last_failure: letter.lastFailure.toISOString(),
  });
  return { key: record.key, value: record.value, headers };
}

/**
 * Runs projections as Kafka consumer groups. Each partition batch is applied in one PostgreSQL
 * transaction with its checkpoint; Kafka's committed offsets follow afterwards (for lag tools
 * only). A batch that starts past the stored checkpoint makes the consumer seek back to it.
 */
export function createProjector<DB>(options: ProjectorOptions<DB>): Projector {
  const prefix = options.topicPrefix ?? '';
  const groupPrefix = options.groupPrefix ?? 'sluice.projection.';
  const consumers: Consumer[] = [];
  let producer: Producer | undefined;

  const ensureTopics = createTopicEnsurer(options.kafka, { partitions: options.partitions ?? 6 });

  const deadLetters: DeadLetterSink = {
    async send(projection, letters) {
      const topic = `${prefix}sluice.dlq.${projection}`;
      await ensureTopics([topic]);
      if (producer === undefined) {
        const fresh = options.kafka.producer({
          idempotent: true,
          maxInFlightRequests: 1,
          allowAutoTopicCreation: false,
        });
        await fresh.connect();
        producer = fresh;
      }
      await producer.send({
        topic,
        acks: -1,
        messages: letters.map((letter) => deadLetterMessage(projection, letter)),
      });
    },
  };

  async function startOne(projection: Projection<DB>): Promise<void> {
    const topics = projection.aggregateTypes.map((type) => `${prefix}${topicFor(type)}`);
    await ensureTopics(topics);
    const consumer = options.kafka.consumer({
      groupId: `${groupPrefix}${projection.name}`,
      allowAutoTopicCreation: false,
      maxBytesPerPartition: 4 * 1024 * 1024,
      sessionTimeout: options.sessionTimeoutMs ?? 30_000,
      // The broker answers as soon as records exist; a short wait keeps shutdown quick.
      maxWaitTimeInMs: 1000,
      heartbeatInterval: Math.min(3000, Math.floor((options.sessionTimeoutMs ?? 30_000) / 3)),
    });
    consumers.push(consumer);
    await consumer.connect();
    await consumer.subscribe({ topics, fromBeginning: true });
    await consumer.run({
      autoCommit: true,
      eachBatchAutoResolve: false,
      eachBatch: async (payload) => {
        const { batch } = payload;
        if (!payload.isRunning() || payload.isStale() || batch.messages.length === 0) return;
        const records = batch.messages.map((message) =>
          toRecord(batch.topic, batch.partition, message),
        );
        try {
          const result = await applyBatch(
            options.db,
            projection,
            records,
            deadLetters,
            applyOptions,
          );
          const last = batch.messages[batch.messages.length - 1];
          if (last !== undefined) payload.resolveOffset(last.offset);
          const lag = Number(BigInt(batch.highWatermark) - (records.at(-1)?.offset ?? 0n) - 1n);
          options.hooks?.batch?.(projection.name, batch.topic, batch.partition, result, lag);
          await payload.heartbeat();
        } catch (error) {
          if (error instanceof OffsetGapError) {
            // Kafka's position is past the checkpoint (stored with the view): go back to it.
            consumer.seek({
              topic: batch.topic,
              partition: batch.partition,
              offset: error.expected.toString(),
            });
            return;
          }
          options.hooks?.failed?.(projection.name, error);
          throw error;
        }
      },
    });
  }

  const applyOptions = {
    topicPrefix: prefix,
    ...(options.upcast === undefined ? {} : { upcast: options.upcast }),
    ...(options.maxAttempts === undefined ? {} : { maxAttempts: options.maxAttempts }),
    ...(options.retryDelayMs === undefined ? {} : { retryDelayMs: options.retryDelayMs }),
  };
  const projectionNamed = (name: string): Projection<DB> => {
    const projection = options.projections.find((p) => p.name === name);
    if (projection === undefined)
      throw new SluiceError('projection_unknown', `No projection named ${JSON.stringify(name)}`);
    return projection;
  };

  return {
    redrive: (name, aggregate) =>
      redriveParked(options.db, projectionNamed(name), aggregate, deadLetters, applyOptions),
    skip: (name, record) =>
      skipParked(options.db, projectionNamed(name), record, deadLetters, applyOptions),
    async start() {
      await Promise.all(options.projections.map((projection) => startOne(projection)));
    },
    async stop() {
      await Promise.all(consumers.map((consumer) => consumer.disconnect()));
      consumers.length = 0;
      await producer?.disconnect().catch(() => undefined);
      producer = undefined;
    },
  };
}

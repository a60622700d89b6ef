import { toKafkaRecord, topicFor, type DomainEvent } from '@sluice/contracts';
import { SluiceError } from '@sluice/errors';
import { CompressionTypes, Partitioners, type Kafka, type Message, type Producer } from 'kafkajs';
import { Lsn } from './lsn.js';

/** An event on its way out, with the commit position of its transaction. */
export interface OutgoingEvent {
  event: DomainEvent;
  commitLsn: Lsn;
}

/** Where the relay publishes events; resolves only once every event is durable there. */
export interface EventSink {
  publish(events: readonly OutgoingEvent[]): Promise<void>;
  close(): Promise<void>;
}

/** Keeps payloads too large for a Kafka record; the record then carries a `dataref`. */
export interface ClaimCheckStore {
  /** Stores the payload under the event id (idempotent) and returns the `dataref` URI. */
  put(event: DomainEvent, payloadJson: string): Promise<string>;
}

/** Options for {@link createKafkaSink}. */
export interface KafkaSinkOptions {
  kafka: Kafka;
  /** CloudEvents `source` of the events, e.g. `/shop-api`. */
  source: string;
  /** Prepended to every topic name (isolates environments sharing a cluster). Default ''. */
  topicPrefix?: string;
  /** Partitions of topics the sink creates. Default 6. */
  partitions?: number;
  /** Batches holding a record larger than this go out gzip-compressed. Default 64 KiB. */
  compressAboveBytes?: number;
  /** Payloads larger than this go to the claim-check store. Default 900 KiB (under Kafka's 1 MiB). */
  maxRecordBytes?: number;
  claimChecks?: ClaimCheckStore;
  /** First pause before retrying a failed send; doubles up to 5 s. Default 200. */
  retryInitialMs?: number;
  /** Called after the producer was recreated following a failed send. */
  onRetry?: (error: unknown, attempt: number) => void;
}

/**
 * Publishes to `outbox.event.<aggregate_type>` with an idempotent producer (`acks: -1`, one
 * request in flight, so per-partition order holds). Creates missing topics with unlimited
 * retention. A failed send is retried with a fresh producer (idempotence does not survive an
 * ambiguous failure), with backoff, until it succeeds or the sink is closed.
 */
export function createKafkaSink(options: KafkaSinkOptions): EventSink {
  const { kafka } = options;
  const compressAbove = options.compressAboveBytes ?? 64 * 1024;
  const maxRecord = options.maxRecordBytes ?? 900 * 1024;
  const knownTopics = new Set<string>();
  let producer: Producer | undefined;
  let closed = false;

  async function connectedProducer(): Promise<Producer> {
    if (producer === undefined) {
      const fresh = kafka.producer({
        idempotent: true,
        maxInFlightRequests: 1,
        allowAutoTopicCreation: false,
        // Java's murmur2 partitioner: a key lands on the same partition whoever produces it.
        createPartitioner: Partitioners.DefaultPartitioner,
      });
      await fresh.connect();
      producer = fresh;
    }
    return producer;
  }

  async function ensureTopics(topics: Iterable<string>): Promise<void> {
    const missing = [...topics].filter((topic) => !knownTopics.has(topic));
    if (missing.length === 0) return;
    const admin = kafka.admin();
    await admin.connect();
    try {
      const existing = new Set(await admin.listTopics());
      const create = missing.filter((topic) => !existing.has(topic));
      if (create.length > 0) {
        await admin.createTopics({
          waitForLeaders: true,
          topics: create.map((topic) => ({
            topic,
            numPartitions: options.partitions ?? 6,
            // Consumers rebuild read models from the beginning: official events never expire.
            configEntries: [
              { name: 'retention.ms', value: '-1' },
              { name: 'retention.bytes', value: '-1' },
            ],
          })),
        });
      }
      for (const topic of missing) knownTopics.add(topic);
    } finally {
      await admin.disconnect();
    }
  }

  async function toMessages(events: readonly OutgoingEvent[]) {
    const byTopic = new Map<string, Message[]>();
    let compress = false;
    for (const { event, commitLsn } of events) {
      const record = toKafkaRecord(event, {
        source: options.source,
        commitLsn: Lsn.format(commitLsn),
      });
      let value: string | null = record.value;
      if (Buffer.byteLength(record.value) > maxRecord) {
        if (options.claimChecks === undefined) {
          throw new SluiceError(
            'record_too_large',
            `Event ${event.id} exceeds ${maxRecord} bytes and no claim-check store is configured`,
          );
        }
        record.headers.ce_dataref = await options.claimChecks.put(event, record.value);
        value = null;
      } else if (record.value.length > compressAbove) {
        compress = true;
      }
      const topic = `${options.topicPrefix ?? ''}${topicFor(event.aggregateType)}`;
      const messages = byTopic.get(topic) ?? [];
      messages.push({ key: record.key, value, headers: record.headers });
      byTopic.set(topic, messages);
    }
    return { byTopic, compress };
  }

  return {
    async publish(events) {
      if (events.length === 0) return;
      const { byTopic, compress } = await toMessages(events);
      for (let attempt = 1; ; attempt += 1) {
        try {
          await ensureTopics(byTopic.keys());
          const current = await connectedProducer();
          await current.sendBatch({
            acks: -1,
            ...(compress ? { compression: CompressionTypes.GZIP } : {}),
            topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })),
          });
          return;
        } catch (error) {
          if (closed)
            throw new SluiceError('sink_closed', 'The Kafka sink was closed during a send', {
              cause: error,
            });
          options.onRetry?.(error, attempt);
          const stale = producer;
          producer = undefined;
          await stale?.disconnect().catch(() => undefined);
          await new Promise((resolve) =>
            setTimeout(
              resolve,
              Math.min((options.retryInitialMs ?? 200) * 2 ** Math.min(attempt - 1, 5), 5000),
            ),
          );
        }
      }
    },

    async close() {
      closed = true;
      await producer?.disconnect().catch(() => undefined);
      producer = undefined;
    },
  };
}

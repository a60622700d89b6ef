import { toKafkaRecord, topicFor, type SerializedEvent } from '@sluice/contracts';
import { SluiceError } from '@sluice/errors';
import { createTopicEnsurer } from '@sluice/preflight';
import { CompressionTypes, Partitioners, type Kafka, type Message, type Producer } from 'kafkajs';
import { Lsn } from './lsn.js';

/** An event on its way out, with the commit position of its transaction. */
export interface OutgoingEvent {
  event: SerializedEvent;
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
  put(event: SerializedEvent): Promise<string>;
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
  /** Bytes per send, under the broker's `message.max.bytes` (1 MiB by default). Default 900 KiB. */
  maxBatchBytes?: number;
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
  const maxBatchBytes = options.maxBatchBytes ?? 900 * 1024;
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

  const ensureTopics = createTopicEnsurer(kafka, { partitions: options.partitions ?? 6 });

  interface Outgoing {
    topic: string;
    message: Message;
    bytes: number;
    compress: boolean;
  }

  async function toOutgoing(events: readonly OutgoingEvent[]): Promise<Outgoing[]> {
    const outgoing: Outgoing[] = [];
    // Events come in runs of one transaction and one aggregate type: format each once.
    let lsn: Lsn | undefined;
    let lsnText = '';
    let aggregateType: string | undefined;
    let topic = '';
    for (const { event, commitLsn } of events) {
      if (commitLsn !== lsn) {
        lsn = commitLsn;
        lsnText = Lsn.format(commitLsn);
      }
      if (event.aggregateType !== aggregateType) {
        aggregateType = event.aggregateType;
        topic = `${options.topicPrefix ?? ''}${topicFor(aggregateType)}`;
      }
      const record = toKafkaRecord(event, { source: options.source, commitLsn: lsnText });
      let value: string | null = record.value;
      const valueBytes = Buffer.byteLength(record.value);
      if (valueBytes > maxRecord) {
        if (options.claimChecks === undefined) {
          throw new SluiceError(
            'record_too_large',
            `Event ${event.id} exceeds ${maxRecord} bytes and no claim-check store is configured`,
          );
        }
        record.headers.ce_dataref = await options.claimChecks.put(event);
        value = null;
      }
      // The encoded size, counting header characters as bytes: a non-ASCII header could make a
      // chunk too large, which the broker refuses and `send` then halves.
      let bytes = Buffer.byteLength(record.key) + (value === null ? 0 : valueBytes) + 64;
      for (const name in record.headers)
        bytes += name.length + (record.headers[name]?.length ?? 0) + 8;
      outgoing.push({
        topic,
        message: { key: record.key, value, headers: record.headers },
        bytes,
        compress: value !== null && valueBytes > compressAbove,
      });
    }
    return outgoing;
  }

  /** Consecutive runs of at most `maxBatchBytes`: the broker refuses larger record batches. */
  function chunksOf(outgoing: readonly Outgoing[]): Outgoing[][] {
    const chunks: Outgoing[][] = [];
    let chunk: Outgoing[] = [];
    let size = 0;
    for (const item of outgoing) {
      if (chunk.length > 0 && size + item.bytes > maxBatchBytes) {
        chunks.push(chunk);
        chunk = [];
        size = 0;
      }
      chunk.push(item);
      size += item.bytes;
    }
    if (chunk.length > 0) chunks.push(chunk);
    return chunks;
  }

  function tooLarge(error: unknown): boolean {
    const type = (error as { type?: string }).type;
    return type === 'MESSAGE_TOO_LARGE' || type === 'RECORD_LIST_TOO_LARGE';
  }

  /** Sends one chunk in order, retrying with a fresh producer; halves it if the broker finds it too large. */
  async function send(chunk: readonly Outgoing[]): Promise<void> {
    const byTopic = new Map<string, Message[]>();
    for (const item of chunk) {
      const messages = byTopic.get(item.topic) ?? [];
      messages.push(item.message);
      byTopic.set(item.topic, messages);
    }
    const compress = chunk.some((item) => item.compress);
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
        if (closed) {
          throw new SluiceError('sink_closed', 'The Kafka sink was closed during a send', {
            cause: error,
          });
        }
        if (tooLarge(error) && chunk.length > 1) {
          const half = Math.ceil(chunk.length / 2);
          await send(chunk.slice(0, half));
          await send(chunk.slice(half));
          return;
        }
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
  }

  return {
    async publish(events) {
      if (events.length === 0) return;
      for (const chunk of chunksOf(await toOutgoing(events))) await send(chunk);
    },

    async close() {
      closed = true;
      await producer?.disconnect().catch(() => undefined);
      producer = undefined;
    },
  };
}

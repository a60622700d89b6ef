import { SluiceError } from '@sluice/errors';
import {
  ACKS_ALL,
  compressionType,
  createTopicEnsurer,
  idempotentProducer,
  registerCodecs,
} from '@sluice/kafka';
import {
  CompressionTypes,
  type Kafka,
  type Message,
  type Producer,
  type RecordMetadata,
} from 'kafkajs';
import type { RelayErrorCode } from './errors.js';
import type { KafkaSinkOptions } from './event-sink.js';
import { sendSpans } from './event-spans.js';
import { identify, type OutgoingRecord, type RecordEncoder } from './outgoing-records.js';
import { locateRecords, partitionNoting } from './record-offsets.js';
import { isTooLarge } from './send-errors.js';
import type { SendProgress } from './send-progress.js';

/** Settles as `work` does, or rejects as soon as one of `signals` aborts. */
function unlessAborted<T>(work: Promise<T>, signals: readonly AbortSignal[]): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const abort = () => reject(new Error('aborted'));
    const done = () => signals.forEach((signal) => signal.removeEventListener('abort', abort));
    work.finally(done).then(resolve, reject);
    if (signals.some((signal) => signal.aborted)) abort();
    else signals.forEach((signal) => signal.addEventListener('abort', abort, { once: true }));
  });
}

/**
 * Fails a send unless its acknowledgement holds every partition its records went to. kafkajs
 * 2.2.4 (unpatched) resolves a retried send without the partitions that moved from a failed
 * broker to one that had answered, never having written their records; the send is made again.
 */
function assertAcknowledged(
  chunk: readonly OutgoingRecord[],
  acknowledged: readonly RecordMetadata[],
  latest: WeakMap<Message, number>,
): void {
  const answered = new Set(acknowledged.map((meta) => `${meta.partition}@${meta.topicName}`));
  for (const item of chunk) {
    const partition = latest.get(item.message);
    if (partition === undefined || answered.has(`${partition}@${item.topic}`)) continue;
    throw new SluiceError<RelayErrorCode>(
      'send_unacknowledged',
      `Kafka did not acknowledge partition ${partition} of ${item.topic} in a send reported done`,
      { retriable: true },
    );
  }
}

function pause(ms: number, signals: readonly AbortSignal[]): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const elapsed = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)));
  return unlessAborted(elapsed, signals).finally(() => clearTimeout(timer));
}

/**
 * Sends records in order through one idempotent producer, and retries a failed send with a
 * fresh one (idempotence does not survive an ambiguous failure) until it succeeds, the sink is
 * closed or the publish is aborted.
 */
export class KafkaSender {
  private producer: Producer | undefined;
  private readonly closing = new AbortController();
  private readonly ensureTopics: (topics: Iterable<string>) => Promise<void>;
  /** The partition kafkajs picked for each message sent, for {@link locateRecords}. */
  private readonly partitions = new WeakMap<Message, number>();
  /** The partition of each message's latest attempt: the acknowledgement must hold it. */
  private readonly latestPartitions = new WeakMap<Message, number>();
  private readonly kafka: Kafka;
  /** The codec of a send holding a record marked `compress`. */
  private readonly compression: CompressionTypes;

  constructor(
    private readonly options: KafkaSinkOptions,
    private readonly encoder: RecordEncoder,
    private readonly progress: SendProgress,
  ) {
    const { replicationFactor, minInsyncReplicas, onDurabilityProblem } = options;
    this.ensureTopics = createTopicEnsurer(options.kafka, {
      partitions: options.partitions ?? 6,
      replicationFactor,
      minInsyncReplicas,
      onDurabilityProblem,
    });
    const codec = options.compression ?? 'gzip';
    this.compression = compressionType(codec);
    // GZIP is kafkajs' own.
    if (codec !== 'none' && codec !== 'gzip') registerCodecs();
    this.kafka = partitionNoting(options.kafka, this.partitions, this.latestPartitions);
  }

  /** What ends a publish: the sink closing, and the caller's signal. */
  signalsWith(signal: AbortSignal | undefined): AbortSignal[] {
    return signal === undefined ? [this.closing.signal] : [this.closing.signal, signal];
  }

  /**
   * Sends one chunk in order. A chunk the broker finds too large is halved; a single record it
   * finds too large for its topic goes out as a claim check, when a store is configured.
   */
  async send(chunk: readonly OutgoingRecord[], signals: readonly AbortSignal[]): Promise<void> {
    const [first] = chunk;
    if (first === undefined) return;
    const startedAt = Date.now();
    await this.retrying(first, signals, async () => {
      try {
        await this.sendOnce(chunk, signals, startedAt);
      } catch (error) {
        if (!isTooLarge(error)) throw error;
        if (chunk.length > 1) {
          const half = Math.ceil(chunk.length / 2);
          await this.send(chunk.slice(0, half), signals);
          await this.send(chunk.slice(half), signals);
          return;
        }
        if (!this.encoder.canClaimCheck(first)) throw error;
        await this.encoder.claimCheck(first);
        this.options.onClaimCheckFallback?.(identify(first.event), first.topic, error);
        await this.sendOnce(chunk, signals, startedAt);
      }
    });
  }

  /** Runs `attempt` until it succeeds; each failure is reported against `item`, then paused on. */
  async retrying(
    item: OutgoingRecord,
    signals: readonly AbortSignal[],
    attempt: () => Promise<void>,
  ): Promise<void> {
    this.progress.begin(item);
    for (let count = 1; ; count += 1) {
      try {
        await unlessAborted(attempt(), signals);
        this.progress.settle(true);
        return;
      } catch (error) {
        if (signals.some((signal) => signal.aborted)) throw this.aborted(error);
        const retryInMs = this.progress.failed(item, error, count);
        await this.discardProducer();
        await pause(retryInMs, signals).catch((abort: unknown) => {
          throw this.aborted(abort);
        });
      }
    }
  }

  async close(): Promise<void> {
    this.closing.abort();
    await this.discardProducer();
  }

  private async sendOnce(
    chunk: readonly OutgoingRecord[],
    signals: readonly AbortSignal[],
    startedAt: number,
  ): Promise<void> {
    const byTopic = new Map<string, Message[]>();
    for (const item of chunk) {
      const messages = byTopic.get(item.topic) ?? [];
      messages.push(item.message);
      byTopic.set(item.topic, messages);
    }
    await this.ensureTopics(byTopic.keys());
    // An abandoned attempt must not go on to send, nor make a producer nobody disconnects.
    if (signals.some((signal) => signal.aborted)) throw new Error('aborted');
    const current = await this.connectedProducer();
    const acknowledged = await current.sendBatch({
      acks: ACKS_ALL,
      ...(this.compression !== CompressionTypes.None && chunk.some((item) => item.compress)
        ? { compression: this.compression }
        : {}),
      topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })),
    });
    assertAcknowledged(chunk, acknowledged, this.latestPartitions);
    this.report(chunk, acknowledged, startedAt);
  }

  /**
   * Tells `onAcknowledged` where the records went, and ends their send spans; nothing either
   * does reaches the send.
   */
  private report(
    chunk: readonly OutgoingRecord[],
    acknowledged: RecordMetadata[],
    startedAt: number,
  ): void {
    const { onAcknowledged, tracer } = this.options;
    if (onAcknowledged === undefined && tracer === undefined) return;
    try {
      const located = locateRecords(chunk, acknowledged, this.partitions);
      if (located !== undefined) onAcknowledged?.(located, new Date());
      if (tracer !== undefined) sendSpans(tracer, chunk, located, startedAt);
    } catch {
      // The journey and the traces are records of publishing, never conditions of it.
    }
  }

  private async connectedProducer(): Promise<Producer> {
    if (this.producer === undefined) {
      const fresh = idempotentProducer(this.kafka);
      await fresh.connect();
      this.producer = fresh;
    }
    return this.producer;
  }

  private async discardProducer(): Promise<void> {
    const stale = this.producer;
    this.producer = undefined;
    if (stale === undefined) return;
    // kafkajs waits for requests in flight before it disconnects: a hung broker never answers.
    await unlessAborted(stale.disconnect(), [AbortSignal.timeout(5000)]).catch(() => undefined);
  }

  private aborted(cause: unknown): SluiceError {
    this.progress.settle(false);
    // A send may still be in flight on this producer: the next one starts afresh.
    void this.discardProducer();
    return this.closing.signal.aborted
      ? new SluiceError<RelayErrorCode>('sink_closed', 'The Kafka sink was closed during a send', {
          cause,
        })
      : new SluiceError<RelayErrorCode>(
          'publish_aborted',
          'Stopped before Kafka acknowledged every event',
          {
            cause,
            retriable: true,
          },
        );
  }
}

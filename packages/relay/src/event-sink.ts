import { toKafkaRecord, topicFor, type SerializedEvent } from '@sluice/contracts';
import { SluiceError, errorMessage, isSluiceError } from '@sluice/errors';
import { ACKS_ALL, createTopicEnsurer, idempotentProducer } from '@sluice/kafka';
import { CompressionTypes, type Kafka, type Message, type Producer } from 'kafkajs';
import { Lsn } from './lsn.js';
import type { RelayErrorCode } from './errors.js';

/** An event on its way out, with the commit position of its transaction. */
export interface OutgoingEvent {
  event: SerializedEvent;
  commitLsn: Lsn;
}

/** Where the relay publishes events. */
export interface EventSink {
  /**
   * Resolves only once every event is durable in the sink. Rejects with `publish_aborted` as
   * soon as `signal` aborts: some events may have been written, none is confirmed.
   */
  publish(events: readonly OutgoingEvent[], signal?: AbortSignal): Promise<void>;
  /** Ends any publish still under way (`sink_closed`) and releases the connection. */
  close(): Promise<void>;
}

/** Keeps payloads too large for a Kafka record; the record then carries a `dataref`. */
export interface ClaimCheckStore {
  /** Stores the payload under the event id (idempotent) and returns the `dataref` URI. */
  put(event: SerializedEvent): Promise<string>;
}

/** What names an event in logs, readiness and metrics. */
export type EventIdentity = Pick<
  SerializedEvent,
  'id' | 'type' | 'aggregateType' | 'aggregateId' | 'aggregateVersion'
>;

/**
 * Why a send failed. `transient`: the cluster may recover by itself (unreachable, leaders
 * moving, timeouts). `programming_error`: a TypeError, ReferenceError, RangeError or SyntaxError
 * in the client or the relay. `rejected`: Kafka refuses the record or its topic, and will again
 * until the cluster or the relay's configuration changes (MESSAGE_TOO_LARGE for one record,
 * INVALID_RECORD, CORRUPT_MESSAGE, INVALID_TOPIC_EXCEPTION, TOPIC_AUTHORIZATION_FAILED, …).
 */
export type SendFailureReason = 'transient' | 'programming_error' | 'rejected';

/** A failed send. Every one is retried; no event is ever skipped. */
export interface SendFailure {
  reason: SendFailureReason;
  error: unknown;
  /** The first event of the failed send: the refused record itself once a send is down to one. */
  event: EventIdentity;
  topic: string;
  /** Failed attempts of this send in a row. */
  attempt: number;
  /** When the first attempt of this send started. */
  since: Date;
  retryInMs: number;
}

/** Why events are not getting into Kafka; see {@link KafkaSink.blocked}. */
export interface PublishBlock {
  /**
   * `programming_error` or `rejected`: the last failure is one retrying cannot fix (the sink
   * retries anyway, so a fixed cluster recovers without a restart). `stalled`: a send has been
   * failing or waiting, for whatever reason, for longer than `stalledAfterMs`.
   */
  reason: 'programming_error' | 'rejected' | 'stalled';
  /** The first event of the send: the refused record itself once a send is down to one. */
  event: EventIdentity;
  topic: string;
  /** The last failure, with Kafka's error type when it has one. */
  error: string;
  /** When the first attempt of the send started. */
  since: Date;
  /** Failed attempts so far. */
  attempts: number;
}

/** An {@link EventSink} over Kafka that says when it cannot get events through. */
export interface KafkaSink extends EventSink {
  /** Why sends are not getting through; undefined while they are, or failed only briefly. */
  blocked(): PublishBlock | undefined;
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
  /**
   * Takes payloads over `maxRecordBytes`, and records the broker refuses as too large for their
   * topic (whose `max.message.bytes` may be lower).
   */
  claimChecks?: ClaimCheckStore;
  /** Bytes per send, under the broker's `message.max.bytes` (1 MiB by default). Default 900 KiB. */
  maxBatchBytes?: number;
  /** First pause before retrying a failed send; doubles up to `retryMaxMs` for transient failures. Default 200. */
  retryInitialMs?: number;
  /** Longest pause between retries of a send that failed for a transient reason. Default 5000. */
  retryMaxMs?: number;
  /** Longest pause between retries of a send that retrying cannot fix. Default 60000. */
  blockedRetryMaxMs?: number;
  /** A send not through after this long makes {@link KafkaSink.blocked} report `stalled`. Default 30000. */
  stalledAfterMs?: number;
  /** Called after every failed send, before its pause; `block` is what `blocked()` now says. */
  onSendFailed?: (failure: SendFailure, block: PublishBlock | undefined) => void;
  /** Called once a send has been failing or waiting for `stalledAfterMs`. */
  onStalled?: (block: PublishBlock) => void;
  /** Called when a send that failed or stalled succeeds; `failedAttempts` may be 0 (a stall). */
  onRecovered?: (since: Date, failedAttempts: number) => void;
  /** Called when the broker refused one record as too large and it went out as a claim check. */
  onClaimCheckFallback?: (event: EventIdentity, topic: string, error: unknown) => void;
}

const PROGRAMMING_ERRORS = new Set(['TypeError', 'ReferenceError', 'RangeError', 'SyntaxError']);
/** Refusals of the producer's state, which a fresh producer (new id, new sequences) clears. */
const PRODUCER_STATE_ERRORS = new Set([
  'OUT_OF_ORDER_SEQUENCE_NUMBER',
  'DUPLICATE_SEQUENCE_NUMBER',
  'INVALID_PRODUCER_EPOCH',
  'UNKNOWN_PRODUCER_ID',
  'INVALID_PRODUCER_ID_MAPPING',
  'PRODUCER_FENCED',
]);

/** The error and its causes, outermost first: kafkajs wraps what its retrier gives up on. */
function causes(error: unknown): unknown[] {
  const chain: unknown[] = [];
  for (let current = error; current != null && chain.length < 8;) {
    chain.push(current);
    current = (current as { cause?: unknown }).cause;
  }
  return chain;
}

/** Whether retrying a failed send may help; see {@link SendFailureReason}. */
export function classifySendError(error: unknown): SendFailureReason {
  const chain = causes(error);
  if (chain.some((cause) => cause instanceof Error && PROGRAMMING_ERRORS.has(cause.name))) {
    return 'programming_error';
  }
  for (const cause of chain) {
    const { type, retriable } = cause as { type?: unknown; retriable?: unknown };
    // kafkajs calls CORRUPT_MESSAGE retriable; sent again, the same bytes fail the same check.
    if (type === 'CORRUPT_MESSAGE') return 'rejected';
    if (typeof type === 'string' && retriable === false && !PRODUCER_STATE_ERRORS.has(type)) {
      return 'rejected';
    }
    if (isSluiceError(cause, 'record_too_large')) return 'rejected';
  }
  return 'transient';
}

/** The error's message, with the first Kafka error type found among its causes. */
function describeError(error: unknown): string {
  const type = causes(error)
    .map((cause) => (cause as { type?: unknown }).type)
    .find((value): value is string => typeof value === 'string');
  const name = error instanceof Error ? error.name : 'Error';
  return `${name}${type === undefined ? '' : ` (${type})`}: ${errorMessage(error)}`;
}

function identify(event: SerializedEvent): EventIdentity {
  const { id, type, aggregateType, aggregateId, aggregateVersion } = event;
  return { id, type, aggregateType, aggregateId, aggregateVersion };
}

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

function pause(ms: number, signals: readonly AbortSignal[]): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const elapsed = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)));
  return unlessAborted(elapsed, signals).finally(() => clearTimeout(timer));
}

interface Outgoing {
  topic: string;
  message: Message;
  event: SerializedEvent;
  bytes: number;
  compress: boolean;
  /** Its payload exceeds `maxRecordBytes`: it goes out as a claim check. */
  oversized: boolean;
}

/**
 * Publishes to `outbox.event.<aggregate_type>` with an idempotent producer (`acks: -1`, one
 * request in flight, so per-partition order holds). Creates missing topics with unlimited
 * retention. A failed send is retried with a fresh producer (idempotence does not survive an
 * ambiguous failure) until it succeeds, the sink is closed or the publish is aborted: quickly
 * while the failure may pass by itself, slowly while it cannot (see {@link classifySendError}),
 * never skipping an event. {@link KafkaSink.blocked} says when sends are not getting through.
 */
export function createKafkaSink(options: KafkaSinkOptions): KafkaSink {
  const { kafka } = options;
  const compressAbove = options.compressAboveBytes ?? 64 * 1024;
  const maxRecord = options.maxRecordBytes ?? 900 * 1024;
  const maxBatchBytes = options.maxBatchBytes ?? 900 * 1024;
  const stalledAfterMs = options.stalledAfterMs ?? 30_000;
  const closing = new AbortController();
  let producer: Producer | undefined;
  /** The send under way, from its first attempt until one succeeds. */
  let underway:
    | {
        since: Date;
        item: Outgoing;
        failure?: SendFailure;
        stallTimer: NodeJS.Timeout;
        stalled: boolean;
      }
    | undefined;

  async function connectedProducer(): Promise<Producer> {
    if (producer === undefined) {
      const fresh = idempotentProducer(kafka);
      await fresh.connect();
      producer = fresh;
    }
    return producer;
  }

  async function discardProducer(): Promise<void> {
    const stale = producer;
    producer = undefined;
    if (stale === undefined) return;
    // kafkajs waits for requests in flight before it disconnects: a hung broker never answers.
    await unlessAborted(stale.disconnect(), [AbortSignal.timeout(5000)]).catch(() => undefined);
  }

  const ensureTopics = createTopicEnsurer(kafka, { partitions: options.partitions ?? 6 });

  function toOutgoing(events: readonly OutgoingEvent[]): Outgoing[] {
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
      const valueBytes = Buffer.byteLength(record.value);
      const oversized = valueBytes > maxRecord;
      // The encoded size, counting header characters as bytes: a non-ASCII header could make a
      // chunk too large, which the broker refuses and `send` then halves.
      let bytes = Buffer.byteLength(record.key) + (oversized ? 0 : valueBytes) + 64;
      for (const name in record.headers)
        bytes += name.length + (record.headers[name]?.length ?? 0) + 8;
      outgoing.push({
        topic,
        message: { key: record.key, value: record.value, headers: record.headers },
        event,
        bytes,
        compress: !oversized && valueBytes > compressAbove,
        oversized,
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

  /** Moves the payload to the claim-check store; the record keeps a `dataref` and no value. */
  async function claimCheck(item: Outgoing): Promise<void> {
    if (options.claimChecks === undefined) {
      throw new SluiceError<RelayErrorCode>(
        'record_too_large',
        `Event ${item.event.id} exceeds ${maxRecord} bytes and no claim-check store is configured`,
      );
    }
    const headers = item.message.headers as Record<string, string>;
    headers.ce_dataref = await options.claimChecks.put(item.event);
    item.message.value = null;
    item.compress = false;
  }

  function tooLarge(error: unknown): boolean {
    const type = (error as { type?: string }).type;
    return type === 'MESSAGE_TOO_LARGE' || type === 'RECORD_LIST_TOO_LARGE';
  }

  async function sendOnce(
    chunk: readonly Outgoing[],
    signals: readonly AbortSignal[],
  ): Promise<void> {
    const byTopic = new Map<string, Message[]>();
    for (const item of chunk) {
      const messages = byTopic.get(item.topic) ?? [];
      messages.push(item.message);
      byTopic.set(item.topic, messages);
    }
    await ensureTopics(byTopic.keys());
    // An abandoned attempt must not go on to send, nor make a producer nobody disconnects.
    if (signals.some((signal) => signal.aborted)) throw new Error('aborted');
    const current = await connectedProducer();
    await current.sendBatch({
      acks: ACKS_ALL,
      ...(chunk.some((item) => item.compress) ? { compression: CompressionTypes.GZIP } : {}),
      topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })),
    });
  }

  /**
   * Sends one chunk in order. A chunk the broker finds too large is halved; a single record it
   * finds too large for its topic goes out as a claim check, when a store is configured.
   */
  async function send(chunk: readonly Outgoing[], signals: readonly AbortSignal[]): Promise<void> {
    const [first] = chunk;
    if (first === undefined) return;
    await retrying(first, signals, async () => {
      try {
        await sendOnce(chunk, signals);
      } catch (error) {
        if (!tooLarge(error)) throw error;
        if (chunk.length > 1) {
          const half = Math.ceil(chunk.length / 2);
          await send(chunk.slice(0, half), signals);
          await send(chunk.slice(half), signals);
          return;
        }
        if (options.claimChecks === undefined || first.message.value === null) throw error;
        await claimCheck(first);
        options.onClaimCheckFallback?.(identify(first.event), first.topic, error);
        await sendOnce(chunk, signals);
      }
    });
  }

  /** Runs `attempt` until it succeeds; each failure is reported against `item`, then paused on. */
  async function retrying(
    item: Outgoing,
    signals: readonly AbortSignal[],
    attempt: () => Promise<void>,
  ): Promise<void> {
    underway ??= {
      since: new Date(),
      item,
      stallTimer: setTimeout(stalled, stalledAfterMs),
      stalled: false,
    };
    for (let count = 1; ; count += 1) {
      try {
        await unlessAborted(attempt(), signals);
        settle(true);
        return;
      } catch (error) {
        if (signals.some((signal) => signal.aborted)) throw aborted(error);
        const retryInMs = failed(item, error, count);
        await discardProducer();
        await pause(retryInMs, signals).catch((abort: unknown) => {
          throw aborted(abort);
        });
      }
    }
  }

  /** Ends the send under way; `through` when it succeeded. */
  function settle(through: boolean): void {
    if (underway === undefined) return;
    clearTimeout(underway.stallTimer);
    const { since, failure, stalled: wasStalled } = underway;
    underway = undefined;
    if (through && (failure !== undefined || wasStalled)) {
      options.onRecovered?.(since, failure?.attempt ?? 0);
    }
  }

  function stalled(): void {
    if (underway === undefined) return;
    underway.stalled = true;
    const block = blocked();
    if (block?.reason === 'stalled') options.onStalled?.(block);
  }

  /** Records a failed attempt and returns the pause before the next. */
  function failed(item: Outgoing, error: unknown, attempt: number): number {
    const reason = classifySendError(error);
    const ceilingMs =
      reason === 'transient' ? (options.retryMaxMs ?? 5000) : (options.blockedRetryMaxMs ?? 60_000);
    const retryInMs = Math.min(
      (options.retryInitialMs ?? 200) * 2 ** Math.min(attempt - 1, 20),
      ceilingMs,
    );
    const since = underway?.since ?? new Date();
    const failure = {
      reason,
      error,
      event: identify(item.event),
      topic: item.topic,
      attempt,
      since,
      retryInMs,
    };
    if (underway !== undefined) underway.failure = failure;
    options.onSendFailed?.(failure, blocked());
    return retryInMs;
  }

  function aborted(cause: unknown): SluiceError {
    settle(false);
    // A send may still be in flight on this producer: the next one starts afresh.
    void discardProducer();
    return closing.signal.aborted
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

  function blocked(): PublishBlock | undefined {
    if (underway === undefined) return undefined;
    const { since, item, failure } = underway;
    const reason = failure?.reason ?? 'transient';
    if (reason === 'transient' && Date.now() - since.getTime() < stalledAfterMs) return undefined;
    return {
      reason: reason === 'transient' ? 'stalled' : reason,
      event: failure?.event ?? identify(item.event),
      topic: failure?.topic ?? item.topic,
      error: failure === undefined ? 'no answer from Kafka yet' : describeError(failure.error),
      since,
      attempts: failure?.attempt ?? 0,
    };
  }

  return {
    async publish(events, signal) {
      if (events.length === 0) return;
      const signals = signal === undefined ? [closing.signal] : [closing.signal, signal];
      const outgoing = toOutgoing(events);
      for (const item of outgoing) {
        if (item.oversized) await retrying(item, signals, () => claimCheck(item));
      }
      for (const chunk of chunksOf(outgoing)) await send(chunk, signals);
    },

    blocked,

    async close() {
      closing.abort();
      await discardProducer();
    },
  };
}

import type { SerializedEvent } from '@sluice/contracts';
import type { CodecName } from '@sluice/kafka';
import type { SpanContext, Tracer } from '@sluice/tracing';
import type { Kafka } from 'kafkajs';
import type { Lsn } from './lsn.js';

/** An event on its way out, with the commit position of its transaction. */
export interface OutgoingEvent {
  event: SerializedEvent;
  commitLsn: Lsn;
  /** Commit time of its transaction, when known (not for an initial snapshot's rows). */
  commitTime?: Date;
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
  /** The event's `create` span, when traced and recorded: log lines about the failure name it. */
  span?: SpanContext;
}

/** Where Kafka stored an event's record, as its acknowledgement says. */
export interface PublishedRecord {
  eventId: string;
  topic: string;
  partition: number;
  /** The record's offset in its partition (int64, as a decimal string). */
  offset: string;
  /** Commit position of the event's transaction, as `ce_commitlsn` carries it (`16/B374D848`). */
  commitLsn: string;
  /** Commit time of the event's transaction, when known. */
  commitTime: Date | undefined;
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
  /** Replicas of the topics the sink creates (`auto`: 3 with three or more brokers). Default `auto`. */
  replicationFactor?: number | 'auto' | undefined;
  /** `min.insync.replicas` of the topics the sink creates. Default `auto`. */
  minInsyncReplicas?: number | 'auto' | undefined;
  /** Told once per topic whose settings cannot keep an acknowledged event through a broker's loss. */
  onDurabilityProblem?: ((topic: string, problem: string) => void) | undefined;
  /** Batches holding a record larger than this go out compressed with `compression`. Default 64 KiB. */
  compressAboveBytes?: number;
  /** The codec of those batches. Default `gzip`. */
  compression?: CodecName;
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
  /**
   * Called once Kafka acknowledged a send, with where each of its records is (kafkajs' record
   * metadata: a base offset per partition, the partition's records consecutive in send order).
   * Called before the publish resolves: hand the records on and return. What it throws is
   * ignored; publishing never waits for it nor fails because of it.
   */
  onAcknowledged?: (records: readonly PublishedRecord[], at: Date) => void;
  /**
   * Traces every event: a `create <topic>` span (a child of the context stored with the event;
   * the record's `traceparent` header carries it) and `send <topic>` spans linking them.
   * Default: none, and nothing is spent on tracing.
   */
  tracer?: Tracer | undefined;
  /** Called when the broker refused one record as too large and it went out as a claim check. */
  onClaimCheckFallback?: (event: EventIdentity, topic: string, error: unknown) => void;
}

import { SluiceError } from '@sluice/errors';
import type { ContractsErrorCode } from './errors.js';

/**
 * Each piece of an event's context under its three names: as a writer passes it (`context`),
 * as the outbox stores it (`metadata`, snake_case JSON), and as a Kafka header (`header`). The
 * one place these spellings meet.
 */
export const METADATA_FIELDS = [
  { context: 'traceparent', metadata: 'traceparent', header: 'ce_traceparent' },
  { context: 'correlationId', metadata: 'correlation_id', header: 'ce_correlationid' },
  { context: 'causationId', metadata: 'causation_id', header: 'ce_causationid' },
  { context: 'actor', metadata: 'actor', header: 'ce_actor' },
  { context: 'reason', metadata: 'reason', header: 'ce_reason' },
] as const;

/** Who/why/trace context stored with every event (`shop.outbox.metadata`, snake_case keys). */
export interface EventMetadata {
  /** W3C trace context of the request that caused the event. */
  traceparent?: string;
  correlation_id?: string;
  /** Id of the event or command that caused this one. */
  causation_id?: string;
  /** Who acted (a user id, a service name). */
  actor?: string;
  /** Why, in the actor's words. */
  reason?: string;
}

/** An official domain event, as stored in the outbox and carried by Kafka. */
export interface DomainEvent<P = unknown> {
  /** UUIDv7 event id; also the CloudEvents `id`. */
  id: string;
  type: string;
  aggregateType: string;
  aggregateId: string;
  /** 1, 2, 3, … per aggregate, without gaps. */
  aggregateVersion: number;
  /** RFC 3339 time the change happened. */
  occurredAt: string;
  payload: P;
  metadata: EventMetadata;
}

/**
 * An event whose payload is still the JSON text it was stored as (e.g. read from the WAL), so
 * publishing it needs no parse and no re-serialisation.
 */
export type SerializedEvent = Omit<DomainEvent, 'payload'> & { payloadJson: string };

const EVENT_TOPIC = 'outbox.event.';

/**
 * The Kafka topic of an aggregate type's events, after an optional prefix that isolates
 * environments sharing a cluster.
 *
 * @example topicFor('cart') // 'outbox.event.cart'
 * @example topicFor('cart', 'staging.') // 'staging.outbox.event.cart'
 */
export function topicFor(aggregateType: string, prefix = ''): string {
  return `${prefix}${EVENT_TOPIC}${aggregateType}`;
}

/**
 * The aggregate type whose events `topic` carries; null for a topic that is not an event topic.
 *
 * @example aggregateTypeOfTopic('staging.outbox.event.cart', 'staging.') // 'cart'
 */
export function aggregateTypeOfTopic(topic: string, prefix = ''): string | null {
  const base = `${prefix}${EVENT_TOPIC}`;
  return topic.startsWith(base) && topic.length > base.length ? topic.slice(base.length) : null;
}

/**
 * The dead-letter topic of a projection: records it could not apply, with why.
 *
 * @example deadLetterTopicFor('cart_summary') // 'sluice.dlq.cart_summary'
 */
export function deadLetterTopicFor(projection: string, prefix = ''): string {
  return `${prefix}sluice.dlq.${projection}`;
}

/** A Kafka record in CloudEvents binary content mode. */
export interface KafkaRecord {
  key: string;
  value: string;
  headers: Record<string, string>;
}

/**
 * Encodes an event as a CloudEvents 1.0 Kafka record (binary content mode): the payload is the
 * value, attributes and Sluice's extensions are `ce_*` headers.
 *
 * @example toKafkaRecord(event, { source: '/shop-api', commitLsn: '0/16B3748' })
 */
export function toKafkaRecord(
  event: DomainEvent | SerializedEvent,
  options: { source: string; commitLsn?: string },
): KafkaRecord {
  const headers: Record<string, string> = {
    ce_specversion: '1.0',
    ce_id: event.id,
    ce_type: event.type,
    ce_source: options.source,
    ce_time: event.occurredAt,
    ce_subject: event.aggregateId,
    'content-type': 'application/json',
    ce_aggregatetype: event.aggregateType,
    ce_aggregateversion: String(event.aggregateVersion),
  };
  // Who and why travel too, so consumers can keep an audit trail without reading the outbox.
  for (const field of METADATA_FIELDS) {
    const value = event.metadata[field.metadata];
    if (value !== undefined) headers[field.header] = value;
  }
  if (options.commitLsn !== undefined) headers.ce_commitlsn = options.commitLsn;
  const value = 'payloadJson' in event ? event.payloadJson : JSON.stringify(event.payload);
  return { key: event.aggregateId, value, headers };
}

/** `2026-11-24T03:47:56.123Z`, `2026-11-24T04:47:56+01:00`: a date, a time and a zone. */
const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

/** `\u0000` in JSON text, not preceded by an escaped backslash (`\\u0000` is a backslash and text). */
const ESCAPED_NUL = /(?<!\\)(?:\\\\)*\\u0000/;

const REQUIRED_HEADERS = [
  'ce_specversion',
  'ce_id',
  'ce_type',
  'ce_time',
  'ce_aggregatetype',
  'ce_aggregateversion',
] as const;

/** A record as Kafka carries it, key, value and header values as text. */
type TextRecord = {
  key: string | null;
  value: string | null;
  headers: Record<string, string | undefined>;
};

type Headers = Record<(typeof REQUIRED_HEADERS)[number], string> &
  Record<string, string | undefined>;

const malformed = (message: string, cause?: unknown) =>
  new SluiceError<ContractsErrorCode>(
    'record_malformed',
    message,
    cause === undefined ? {} : { cause },
  );

/** The headers of a record that is a CloudEvent of ours, or why not. */
function checkedHeaders(record: TextRecord): { h: Headers; key: string } {
  for (const name of REQUIRED_HEADERS) {
    if (record.headers[name] !== undefined) continue;
    const missing = REQUIRED_HEADERS.filter((required) => record.headers[required] === undefined);
    throw malformed(`missing headers: ${missing.join(', ')}`);
  }
  if (record.key === null || record.key.length === 0)
    throw malformed('record has no key (aggregate id)');
  const h = record.headers as Headers;
  // PostgreSQL stores no NUL character in text or jsonb: an event carrying one came from
  // somewhere else, and would fail every statement that stored it.
  if (record.key.includes('\u0000')) throw malformed('record key contains a NUL character');
  for (const name in h) {
    if (name.startsWith('ce_') && h[name]?.includes('\u0000') === true)
      throw malformed(`header ${name} contains a NUL character`);
  }
  if (h.ce_specversion !== '1.0') throw malformed(`unsupported ce_specversion ${h.ce_specversion}`);
  if (h.ce_id.length === 0 || h.ce_type.length === 0 || h.ce_aggregatetype.length === 0)
    throw malformed('empty ce_id, ce_type or ce_aggregatetype');
  if (
    !/^[1-9][0-9]{0,15}$/.test(h.ce_aggregateversion) ||
    !Number.isSafeInteger(Number(h.ce_aggregateversion))
  )
    throw malformed(`bad ce_aggregateversion ${h.ce_aggregateversion}`);
  if (!RFC3339.test(h.ce_time) || !Number.isFinite(Date.parse(h.ce_time)))
    throw malformed(`ce_time ${JSON.stringify(h.ce_time)} is not an RFC 3339 time`);
  return { h, key: record.key };
}

function parsedPayload(value: string | null): unknown {
  let payload: unknown;
  try {
    payload = JSON.parse(value ?? '');
  } catch (error) {
    throw malformed('record value is not JSON', error);
  }
  if (value !== null && value.includes('\\u0000') && ESCAPED_NUL.test(value))
    throw malformed('record value contains a NUL character');
  return payload;
}

/**
 * Decodes a CloudEvents Kafka record back into an event (payload not yet schema-checked).
 *
 * @throws SluiceError `record_malformed` naming what is missing or wrong.
 */
export function fromKafkaRecord(record: TextRecord): DomainEvent {
  const { h, key } = checkedHeaders(record);
  const payload = parsedPayload(record.value);
  const metadata: EventMetadata = {};
  for (const field of METADATA_FIELDS) {
    const value = h[field.header];
    if (value !== undefined) metadata[field.metadata] = value;
  }
  return {
    id: h.ce_id,
    type: h.ce_type,
    aggregateType: h.ce_aggregatetype,
    aggregateId: key,
    aggregateVersion: Number(h.ce_aggregateversion),
    occurredAt: h.ce_time,
    payload,
    metadata,
  };
}

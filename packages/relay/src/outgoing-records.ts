import { toKafkaRecord, topicFor, type SerializedEvent } from '@sluice/contracts';
import { SluiceError } from '@sluice/errors';
import { traceparentOf, type SpanContext } from '@sluice/tracing';
import type { Message } from 'kafkajs';
import type { RelayErrorCode } from './errors.js';
import type { EventIdentity, KafkaSinkOptions, OutgoingEvent } from './event-sink.js';
import { createSpan } from './event-spans.js';
import { Lsn } from './lsn.js';

/** An event encoded as the Kafka record it is sent as. */
export interface OutgoingRecord {
  topic: string;
  message: Message;
  event: SerializedEvent;
  /** Commit position of the event's transaction, formatted. */
  commitLsn: string;
  commitTime: Date | undefined;
  bytes: number;
  compress: boolean;
  /** Its payload exceeds `maxRecordBytes`: it goes out as a claim check. */
  oversized: boolean;
  /** Its `create` span, when traced and recorded: the send's span links to it. */
  span?: SpanContext;
}

export function identify(event: SerializedEvent): EventIdentity {
  const { id, type, aggregateType, aggregateId, aggregateVersion } = event;
  return { id, type, aggregateType, aggregateId, aggregateVersion };
}

/** Turns events into CloudEvents records, and moves payloads too large for one aside. */
export class RecordEncoder {
  private readonly compressAbove: number;
  private readonly maxRecord: number;

  constructor(private readonly options: KafkaSinkOptions) {
    this.compressAbove = options.compressAboveBytes ?? 64 * 1024;
    this.maxRecord = options.maxRecordBytes ?? 900 * 1024;
  }

  encode(events: readonly OutgoingEvent[]): OutgoingRecord[] {
    const outgoing: OutgoingRecord[] = [];
    // Events come in runs of one transaction and one aggregate type: format each once.
    let lsn: Lsn | undefined;
    let lsnText = '';
    let aggregateType: string | undefined;
    let topic = '';
    for (const { event, commitLsn, commitTime } of events) {
      if (commitLsn !== lsn) {
        lsn = commitLsn;
        lsnText = Lsn.format(commitLsn);
      }
      if (event.aggregateType !== aggregateType) {
        aggregateType = event.aggregateType;
        topic = topicFor(aggregateType, this.options.topicPrefix);
      }
      outgoing.push(this.record(event, topic, { commitLsn: lsnText, commitTime }));
    }
    return outgoing;
  }

  private record(
    event: SerializedEvent,
    topic: string,
    commit: { commitLsn: string; commitTime: Date | undefined },
  ): OutgoingRecord {
    const { commitLsn, commitTime } = commit;
    const record = toKafkaRecord(event, { source: this.options.source, commitLsn });
    const { tracer } = this.options;
    const created =
      tracer === undefined
        ? undefined
        : createSpan(
            tracer,
            { topic, event, commitLsn, ...(commitTime && { commitTime }) },
            this.options.source,
          );
    // The record's context is its create span, when recorded (an unrecorded one would be a
    // parent nobody sees, and 60 bytes more in every record); `ce_traceparent` keeps the origin's.
    if (created?.recording === true) record.headers.traceparent = traceparentOf(created.context);
    const valueBytes = Buffer.byteLength(record.value);
    const oversized = valueBytes > this.maxRecord;
    // The encoded size, counting header characters as bytes: a non-ASCII header could make a
    // chunk too large, which the broker refuses and `send` then halves.
    let bytes = Buffer.byteLength(record.key) + (oversized ? 0 : valueBytes) + 64;
    for (const name in record.headers)
      bytes += name.length + (record.headers[name]?.length ?? 0) + 8;
    return {
      topic,
      message: { key: record.key, value: record.value, headers: record.headers },
      event,
      commitLsn,
      commitTime,
      bytes,
      compress: !oversized && valueBytes > this.compressAbove,
      oversized,
      ...(created?.recording === true ? { span: created.context } : {}),
    };
  }

  /** Whether the broker's refusal of `item` as too large may be met with a claim check. */
  canClaimCheck(item: OutgoingRecord): boolean {
    return this.options.claimChecks !== undefined && item.message.value !== null;
  }

  /** Moves the payload to the claim-check store; the record keeps a `dataref` and no value. */
  async claimCheck(item: OutgoingRecord): Promise<void> {
    if (this.options.claimChecks === undefined) {
      throw new SluiceError<RelayErrorCode>(
        'record_too_large',
        `Event ${item.event.id} exceeds ${this.maxRecord} bytes and no claim-check store is configured`,
      );
    }
    const headers = item.message.headers as Record<string, string>;
    headers.ce_dataref = await this.options.claimChecks.put(item.event);
    item.message.value = null;
    item.compress = false;
  }
}

/** Consecutive runs of at most `maxBatchBytes`: the broker refuses larger record batches. */
export function chunksOf(
  outgoing: readonly OutgoingRecord[],
  maxBatchBytes: number,
): OutgoingRecord[][] {
  const chunks: OutgoingRecord[][] = [];
  let chunk: OutgoingRecord[] = [];
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

import {
  fromKafkaRecord,
  headerText,
  setHeader,
  type Catalog,
  type DomainEvent,
} from '@sluice/contracts';
import { errorMessage, SluiceError } from '@sluice/errors';
import type { IHeaders, KafkaMessage } from 'kafkajs';
import type { ProjectorErrorCode } from './errors.js';

/** A header as Kafka carries it: a name and bytes, or null (Kafka allows a null value). */
export type RawHeader = [name: string, value: string | Buffer | null];

/** A record exactly as Kafka holds it: what dead letters and parked records keep. */
export interface RawRecord {
  key: Buffer | null;
  value: Buffer | null;
  /** In record order; a name may repeat. */
  headers: RawHeader[];
}

/** A Kafka record as the projector received it. */
export interface IncomingRecord {
  topic: string;
  partition: number;
  offset: bigint;
  /** Kafka's timestamp of the record (milliseconds, as text), when known. */
  timestamp?: string;
  /** The key and value as UTF-8 text. */
  key: string | null;
  value: string | null;
  /**
   * Header values as text; a repeated header's values joined by commas; null values left out.
   * Read only: it may be the consumer's own header object, which `raw` also reads.
   */
  headers: Readonly<Record<string, string | undefined>>;
  /** The bytes as received; derived from the text fields when absent. */
  raw?: RawRecord;
  /** An operator skipped this parked record: it counts as applied once its turn comes. */
  skipped?: { aggregateType: string; aggregateId: string; version: number };
}

/** A record that will not be applied, with why. */
export interface DeadLetter {
  record: IncomingRecord;
  errorClass: string;
  message: string;
  attempts: number;
  firstFailure: Date;
  lastFailure: Date;
}

/** Where records that cannot be applied go (`sluice.dlq.<projection>`), before the batch commits. */
export interface DeadLetterSink {
  send(projection: string, letters: readonly DeadLetter[]): Promise<void>;
}

/** A record that could be decoded into an event, or why not. */
export type Decoded =
  | { ok: true; record: IncomingRecord; event: DomainEvent }
  | {
      ok: false;
      record: IncomingRecord;
      errorClass: string;
      message: string;
      /** Set when the record is a well-formed event whose payload breaks its schema. */
      event?: DomainEvent;
    };

const text = (value: string | Buffer): string =>
  typeof value === 'string' ? value : value.toString('utf8');

function rawHeaders(headers: IHeaders | undefined): RawHeader[] {
  const pairs: RawHeader[] = [];
  if (headers === undefined) return pairs;
  for (const name in headers) {
    const value = headers[name] as string | Buffer | (string | Buffer | null)[] | null | undefined;
    if (value === undefined) continue;
    for (const item of Array.isArray(value) ? value : [value]) pairs.push([name, item]);
  }
  return pairs;
}

/** A record of a kafkajs batch; nothing in it can make this throw. */
export function toRecord(topic: string, partition: number, message: KafkaMessage): IncomingRecord {
  return {
    topic,
    partition,
    offset: BigInt(message.offset),
    timestamp: message.timestamp,
    key: message.key === null ? null : message.key.toString('utf8'),
    value: message.value === null ? null : message.value.toString('utf8'),
    headers: textHeaders(message.headers),
    raw: new ReceivedRecord(message),
  };
}

/**
 * The headers as text: kafkajs' own object when every value is a string already (the header
 * values are decoded as strings in the projector's process, and a name seldom repeats), so a
 * record carries no second copy of them.
 */
function textHeaders(headers: IHeaders | undefined): Record<string, string | undefined> {
  if (headers === undefined) return {};
  for (const name in headers) if (typeof headers[name] !== 'string') return headerText(headers);
  return headers as Record<string, string>;
}

/** The record's bytes; the header pairs are made only when asked for (a parked or dead letter). */
class ReceivedRecord implements RawRecord {
  #headers: RawHeader[] | undefined;
  constructor(private readonly message: KafkaMessage) {}
  get key(): Buffer | null {
    return this.message.key;
  }
  get value(): Buffer | null {
    return this.message.value;
  }
  get headers(): RawHeader[] {
    return (this.#headers ??= rawHeaders(this.message.headers));
  }
}

/** About how many bytes a record holds: its key and value, as received or as text. */
export function recordBytes(record: IncomingRecord): number {
  const { raw } = record;
  if (raw !== undefined) return (raw.key?.length ?? 0) + (raw.value?.length ?? 0);
  return (record.key?.length ?? 0) + (record.value?.length ?? 0);
}

/** The record's bytes: as received, or from its text fields. */
export function rawOf(record: IncomingRecord): RawRecord {
  if (record.raw !== undefined) return record.raw;
  const headers: RawHeader[] = [];
  for (const [name, value] of Object.entries(record.headers))
    if (value !== undefined) headers.push([name, value]);
  return {
    key: record.key === null ? null : Buffer.from(record.key),
    value: record.value === null ? null : Buffer.from(record.value),
    headers,
  };
}

/** Headers as stored with a parked record: JSON `[name, value]` pairs, values as UTF-8 text. */
export function encodeHeaders(headers: readonly RawHeader[]): Buffer {
  return Buffer.from(
    JSON.stringify(headers.map(([name, value]) => [name, value === null ? null : text(value)])),
  );
}

/** Headers stored with a parked record; rows parked before pairs were kept hold an object. */
export function decodeHeaders(stored: Buffer | null): RawHeader[] {
  if (stored === null) return [];
  const parsed = JSON.parse(stored.toString('utf8')) as unknown;
  if (Array.isArray(parsed)) return parsed as RawHeader[];
  return Object.entries(parsed as Record<string, string | null>);
}

/** A record rebuilt from the bytes a parked row kept. */
export function recordFromRaw(
  at: { topic: string; partition: number; offset: bigint },
  raw: RawRecord,
): IncomingRecord {
  const headers: Record<string, string | undefined> = {};
  for (const [name, value] of raw.headers) {
    if (value === null) continue;
    const item = text(value);
    const joined = Object.hasOwn(headers, name) ? `${headers[name] ?? ''},${item}` : item;
    setHeader(headers, name, joined);
  }
  return {
    ...at,
    key: raw.key === null ? null : raw.key.toString('utf8'),
    value: raw.value === null ? null : raw.value.toString('utf8'),
    headers,
    raw,
  };
}

/**
 * What identifies a record besides its offset: its time and event id. A different one at an
 * offset the projection applied before means the partition's offsets were reused.
 */
export function fingerprint(record: IncomingRecord): string {
  return storableText(`${record.timestamp ?? ''}/${record.headers.ce_id ?? ''}`);
}

/** Text PostgreSQL can store: NUL characters escaped. */
export function storableText(value: string): string {
  return value.includes('\u0000') ? value.replaceAll('\u0000', '\\u0000') : value;
}

/** An aggregate id PostgreSQL can hold: the key, unless it holds a NUL (then no event has it). */
export function storableKey(key: string | null): string | null {
  return key === null || key.includes('\u0000') ? null : key;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The event id a claim-checked record names, when it is one PostgreSQL can look up. */
export function claimCheckId(record: IncomingRecord): string | undefined {
  const id = record.headers.ce_id;
  return record.value === null &&
    record.headers.ce_dataref !== undefined &&
    id !== undefined &&
    UUID.test(id)
    ? id
    : undefined;
}

/** Runs SQL in the transaction of the batch being applied. */
export interface BatchSql {
  query(text: string, values?: unknown[]): Promise<{ rows: unknown[] }>;
}

/**
 * Opens an event's sealed personal fields (e.g. `@sluice/privacy`) after it was validated as
 * published. A SluiceError it throws that is not `retriable` is a problem of the event: the
 * record is set aside as one that does not decode (dead-lettered and parked). Anything else (a
 * retriable SluiceError such as a master key missing from the settings, a database error) fails
 * the whole batch: it rolls back and is retried, and the consumer's readiness names the code.
 * `sql` is one object per batch, used for that batch's transaction alone: what the hook keeps
 * per `sql` (keys it read) lives no longer than the transaction.
 */
export type Reveal = (event: DomainEvent, sql: BatchSql) => Promise<DomainEvent>;

/** What validates payloads: a team's catalog (`defineCatalog`). */
export type PayloadValidator = Pick<Catalog, 'payloadErrors'>;

/** Decodes and validates a record against `catalog`, then upcasts it; never throws. */
export function decode(
  record: IncomingRecord,
  catalog: PayloadValidator,
  upcast: (event: DomainEvent) => DomainEvent,
): Decoded {
  try {
    const dataref = record.headers.ce_dataref;
    if (record.value === null && dataref !== undefined)
      throw new SluiceError<ProjectorErrorCode>(
        'claim_check_missing',
        `No claim-checked payload for ${dataref}`,
      );
    const event = fromKafkaRecord(record);
    const errors = catalog.payloadErrors(event.type, event.payload);
    if (errors.length > 0) {
      return {
        ok: false,
        record,
        errorClass: 'schema_invalid',
        message: `${event.type}: ${errors.join('; ')}`,
        event,
      };
    }
    return { ok: true, record, event: upcast(event) };
  } catch (error) {
    const errorClass = error instanceof SluiceError ? error.code : 'decode_failed';
    return { ok: false, record, errorClass, message: errorMessage(error) };
  }
}

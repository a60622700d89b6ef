// A parked record as the console shows it: Kafka's bytes decoded, and the payload hidden from
// viewers for the event types CONSOLE_MASKED_EVENT_TYPES names.
import type { Role } from '@sluice/access';
import type { ParkedItem } from './bodies.js';

/** A row of sluice.parked_events, with the projection's name for its generation's instance. */
export interface ParkedRow {
  projection: string;
  topic: string;
  partition: number;
  record_offset: string;
  aggregate_type: string | null;
  aggregate_id: string | null;
  aggregate_version: string | null;
  record_key: Buffer | null;
  record_value: Buffer | null;
  record_headers: Buffer;
  reason: string;
  error: string | null;
  attempts: number;
  first_failed_at: Date;
}

/** Headers stored as a JSON array of [name, value] pairs; a null value is left out. */
export function headersOf(stored: Buffer): Record<string, string> {
  const headers: Record<string, string> = {};
  try {
    const pairs = JSON.parse(stored.toString('utf8')) as unknown;
    if (!Array.isArray(pairs)) return headers;
    for (const pair of pairs as unknown[]) {
      if (!Array.isArray(pair)) continue;
      const [name, value] = pair as unknown[];
      if (typeof name === 'string' && typeof value === 'string') headers[name] = value;
    }
  } catch {
    // Stored bytes that are not JSON show as no headers; the record's other fields still help.
  }
  return headers;
}

/** The payload as JSON when it is JSON, else as text; null without a value. */
function payloadOf(value: Buffer | null): unknown {
  if (value === null) return null;
  const text = value.toString('utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

/**
 * Whether `role` may not see the payload of an event of `eventType`: a viewer, a masked type.
 * While any type is masked, a record whose type is unknown (malformed) is masked too.
 */
export function isMasked(
  role: Role,
  eventType: string | null,
  maskedTypes: ReadonlySet<string>,
): boolean {
  if (role !== 'viewer' || maskedTypes.size === 0) return false;
  return eventType === null || maskedTypes.has(eventType);
}

/** The item `row` is for a caller of `role`. */
export function parkedItemOf(
  row: ParkedRow,
  role: Role,
  maskedTypes: ReadonlySet<string>,
): ParkedItem {
  const headers = headersOf(row.record_headers);
  const eventType = headers.ce_type ?? null;
  const masked = isMasked(role, eventType, maskedTypes);
  return {
    projection: row.projection,
    topic: row.topic,
    partition: row.partition,
    offset: row.record_offset,
    aggregateType: row.aggregate_type,
    aggregateId: row.aggregate_id,
    version: row.aggregate_version === null ? null : Number(row.aggregate_version),
    eventType,
    errorClass: row.reason,
    message: row.error ?? row.reason,
    attempts: row.attempts,
    key: row.record_key?.toString('utf8') ?? null,
    headers,
    payload: masked ? null : payloadOf(row.record_value),
    masked,
    parkedAt: row.first_failed_at.toISOString(),
  };
}

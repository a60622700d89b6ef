// The outbox row as the relay reads it, kept apart from the Kysely side of the package: the relay
// imports this without loading Kysely.
import type { EventMetadata, SerializedEvent } from '@sluice/contracts';
import { SluiceError } from '@sluice/errors';
import type { OutboxErrorCode } from './errors.js';

/** The outbox's columns (snake_case, as CONTRACT.md names them). */
export const OUTBOX_COLUMNS = [
  'id',
  'aggregate_type',
  'aggregate_id',
  'aggregate_version',
  'type',
  'payload',
  'metadata',
  'occurred_at',
] as const;

/** An outbox row as PostgreSQL's text output of each column (as pgoutput sends it). */
export type OutboxTextRow = Readonly<Record<string, string | null>>;

/**
 * The select list that reads outbox rows (of a table aliased `alias`) as the same text pgoutput
 * sends, timestamps in UTC, so a snapshot's rows and the stream's decode alike.
 */
export function outboxTextColumns(alias: string): string {
  return OUTBOX_COLUMNS.map((column) => {
    const name = `${alias}.${column}`;
    if (column === 'occurred_at')
      return `to_char(${name} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00' AS occurred_at`;
    return `${name}::text AS ${column}`;
  }).join(', ');
}

/**
 * `2026-11-24 03:47:56.123456+00` (a timestamptz in ISO DateStyle, UTC) as
 * `2026-11-24T03:47:56.123Z`; other forms through `Date`.
 */
function isoTime(text: string): string {
  if (text.length >= 22 && text.length <= 29 && text[10] === ' ' && text.endsWith('+00')) {
    const fraction = text[19] === '.' ? text.slice(20, -3) : '';
    return `${text.slice(0, 10)}T${text.slice(11, 19)}.${fraction.padEnd(3, '0').slice(0, 3)}Z`;
  }
  return new Date(text).toISOString();
}

/**
 * An outbox row in PostgreSQL's text output as an event; the payload stays JSON text.
 *
 * @throws SluiceError `outbox_row_malformed` naming a missing column.
 */
export function outboxRowToEvent(row: OutboxTextRow): SerializedEvent {
  const column = (name: (typeof OUTBOX_COLUMNS)[number]): string => {
    const value = row[name];
    if (value === undefined || value === null)
      throw new SluiceError<OutboxErrorCode>(
        'outbox_row_malformed',
        `An outbox row has no ${name}`,
      );
    return value;
  };
  return {
    id: column('id'),
    type: column('type'),
    aggregateType: column('aggregate_type'),
    aggregateId: column('aggregate_id'),
    aggregateVersion: Number(column('aggregate_version')),
    occurredAt: isoTime(column('occurred_at')),
    payloadJson: column('payload'),
    metadata: JSON.parse(row.metadata ?? '{}') as EventMetadata,
  };
}

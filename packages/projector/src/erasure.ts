import type { DomainEvent } from '@sluice/contracts';
import type { Transaction } from 'kysely';
import type { Item } from './classify.js';
import type { Park } from './parked-records.js';
import type { Projection, TableNamer } from './projection.js';
import type { IncomingRecord } from './records.js';

/** Reasons a record waits for an earlier one of its aggregate, not for its own fault. */
const WAITING = new Set(['behind_parked', 'version_gap']);

/**
 * Erasures that cannot wait: events of `projection.erasure.types` parked behind an earlier event
 * of their aggregate (or a version gap) go to `erasure.forget` now, in the batch's transaction;
 * they are applied again in their turn.
 */
export async function forgetWaiting<DB>(
  trx: Transaction<DB>,
  projection: Projection<DB>,
  items: readonly Item[],
  parks: readonly Park[],
  table: TableNamer,
): Promise<void> {
  const { erasure } = projection;
  if (erasure === undefined || parks.length === 0) return;
  const events = new Map<IncomingRecord, DomainEvent>();
  for (const item of items) if ('ok' in item && item.ok) events.set(item.record, item.event);
  const waiting = parks
    .filter((park) => WAITING.has(park.reason))
    .map((park) => events.get(park.record))
    .filter((event) => event !== undefined && erasure.types.includes(event.type));
  if (waiting.length > 0) await erasure.forget(waiting as DomainEvent[], { trx, table });
}

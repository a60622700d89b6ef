import type { DomainEvent } from '@sluice/contracts';
import type { Transaction } from 'kysely';

/** What a projection's `apply` receives besides the events. */
export interface ApplyContext<DB> {
  /** The transaction that also advances the projection's checkpoint: write the view here. */
  trx: Transaction<DB>;
  /** The projection's tables may be versioned for blue/green rebuilds; default ''. */
  tableSuffix: string;
}

/**
 * A read model built from official events. `apply` gets decoded, upcast, schema-valid events in
 * order, each exactly once (duplicates and redeliveries are filtered before it), and must write
 * only through `context.trx`. It may see several events of one aggregate in one call.
 */
export interface Projection<DB = unknown> {
  /** Stable name: keys checkpoints, versions, the consumer group and `sluice.dlq.<name>`. */
  name: string;
  /** The aggregate types whose topics it reads, e.g. `['cart', 'order']`. */
  aggregateTypes: readonly string[];
  apply(events: readonly DomainEvent[], context: ApplyContext<DB>): Promise<void>;
}

/**
 * Declares a projection.
 *
 * @example
 * const carts = defineProjection({
 *   name: 'cart_summary',
 *   aggregateTypes: ['cart'],
 *   async apply(events, { trx }) { ... },
 * });
 */
export function defineProjection<DB>(projection: Projection<DB>): Projection<DB> {
  if (!/^[a-z][a-z0-9_]{0,62}$/.test(projection.name)) {
    throw new Error(`Projection name ${JSON.stringify(projection.name)} must be snake_case`);
  }
  return projection;
}

import type { DomainEvent, EventDefinitions, EventOf } from '@sluice/contracts';
import type { Transaction } from 'kysely';
import type { PayloadValidator } from './records.js';

/**
 * A table's name in one generation of a projection: `table('views.cart_summaries')` is
 * `views.cart_summaries_g2` while generation 2 is applied. Use it with `sql.table(...)`.
 */
export type TableNamer = (name: string) => string;

/** What a projection's `apply` receives besides the events. */
export interface ApplyContext<DB> {
  /** The transaction that also advances the projection's checkpoint: write the view here. */
  trx: Transaction<DB>;
  /** The names of the projection's tables in the generation being applied. */
  table: TableNamer;
}

/**
 * A read model built from official events. `apply` gets decoded, upcast, schema-valid events in
 * order, each exactly once (duplicates and redeliveries are filtered before it), and must write
 * only through `context.trx`, to the tables `context.table` names. It may see several events of
 * one aggregate in one call.
 *
 * Each generation of a projection has its own copy of its tables, so a rebuild can replay
 * everything into new tables while readers keep using the old ones. Readers query the plain
 * names (`views.cart_summaries`): views the projector points at the active generation.
 */
export interface Projection<DB = unknown, E extends DomainEvent = DomainEvent> {
  /** Stable name: keys checkpoints, versions, the consumer group and `sluice.dlq.<name>`. */
  name: string;
  /**
   * The catalog of the events it reads (`defineCatalog`): a record whose type it does not know,
   * or whose payload it refuses, is dead-lettered. Include the old versions an upcaster reads.
   */
  catalog: PayloadValidator;
  /** The aggregate types whose topics it reads, e.g. `['cart', 'order']`. */
  aggregateTypes: readonly string[];
  /** The tables it writes, schema-qualified; readers see the active generation's under these names. */
  tables: readonly string[];
  /**
   * `'reveal'`: its events arrive with their personal fields opened by the projector's `reveal`
   * hook (`@sluice/privacy`: clear values, or `[erased]` once the subject was erased). Without
   * it they arrive as published, sealed (`sluice:enc:v1:...` strings): a projection that needs
   * no personal data never holds any. One that opts in keeps clear values in its tables, so it
   * must forget them when a subject is erased (as `views.audit_log` does on `customer.erased.v1`).
   * Its error texts (parked events, dead letters, logs) have the values opened redacted.
   */
  personalData?: 'reveal';
  /**
   * Erasures that must not wait: an event of one of `types` (e.g. `customer.erased.v1`) that
   * waits behind a parked event of its aggregate, or a gap in its versions, is handed to `forget`
   * at once, in the batch's transaction, and applied again in its turn. `forget` must only remove
   * the subject's personal data, and be idempotent. Without it a poison event of a customer would
   * keep their clear values in the view until an operator redrives or skips it.
   */
  erasure?: {
    types: readonly E['type'][];
    forget(events: readonly E[], context: ApplyContext<DB>): Promise<void>;
  };
  /** Creates one generation's tables (and their indexes), named through `table`. */
  createTables(trx: Transaction<DB>, table: TableNamer): Promise<void>;
  /**
   * Applies events in order. `E` narrows what they are (e.g. a catalog's discriminated union):
   * the projector hands over only events its validation accepted.
   */
  apply(events: readonly E[], context: ApplyContext<DB>): Promise<void>;
}

/**
 * Declares a projection over the events of `catalog`: `apply` receives them as the catalog's
 * discriminated union, so switching on `event.type` narrows the payload.
 *
 * @example
 * const carts = defineProjection({
 *   catalog: shopCatalog,
 *   name: 'cart_summary',
 *   aggregateTypes: ['cart'],
 *   tables: ['views.cart_summaries'],
 *   async createTables(trx, table) {
 *     await sql`CREATE TABLE ${sql.table(table('views.cart_summaries'))} (...)`.execute(trx);
 *   },
 *   async apply(events, { trx, table }) { ... },
 * });
 */
export function defineProjection<
  DB,
  C extends PayloadValidator & { readonly events: EventDefinitions },
>(projection: Projection<DB, EventOf<C>> & { catalog: C }): Projection<DB, EventOf<C>> {
  if (!/^[a-z][a-z0-9_]{0,62}$/.test(projection.name)) {
    throw new Error(`Projection name ${JSON.stringify(projection.name)} must be snake_case`);
  }
  for (const table of projection.tables) {
    if (!/^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]{0,50}$/.test(table))
      throw new Error(
        `Table ${JSON.stringify(table)} of projection ${projection.name} must be schema.table in snake_case, at most 50 characters`,
      );
  }
  return projection;
}

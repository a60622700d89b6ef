import { assertPayload } from '@sluice/contracts';
import { atCommit } from '@sluice/database';
import { createOutbox, type AppendContext } from '@sluice/outbox';
import type { Privacy, Queryable } from '@sluice/privacy';
import { shopCatalog, shopCatalogInClear, type NewShopEvent } from '@sluice/shop-catalog';
import {
  CompiledQuery,
  sql,
  type Insertable,
  type Selectable,
  type Transaction,
  type Updateable,
} from 'kysely';
import type { WrittenVersion } from '../consistency-tokens.js';
import type { ShopDatabase } from '../database.js';
import { CommandError } from './command-error.js';

const outbox = createOutbox({ schema: 'shop', catalog: shopCatalog });

/** Who acted and why (the events' metadata), and what seals the events' personal fields. */
export interface CommandContext extends AppendContext {
  privacy: Privacy;
  /**
   * Whether whoever sent the command may change what belongs to this customer; what they may
   * not is answered as missing (`not_found`). Checked on the row the command locked.
   */
  mayActFor(customerId: string | null): boolean;
}

/** `trx` as `@sluice/privacy` runs SQL. */
export const queryable = (trx: Transaction<ShopDatabase>): Queryable => ({
  query: (text, values = []) => trx.executeQuery(CompiledQuery.raw(text, values)),
});

/**
 * The events as the outbox stores them: validated in clear text (`shopCatalogInClear`), then
 * with their personal fields sealed for their subject (whose key is made in `trx` on first use);
 * the outbox validates them again as published, sealed (`shopCatalog`).
 */
async function sealed(
  trx: Transaction<ShopDatabase>,
  events: readonly NewShopEvent[],
  privacy: Privacy,
): Promise<NewShopEvent[]> {
  for (const event of events) assertPayload(shopCatalogInClear, event.type, event.payload);
  return privacy.sealEvents(queryable(trx), events);
}

/** The table holding each aggregate's state; its `version` column is the aggregate's version. */
const STATE_TABLES = {
  customer: 'shop.customers',
  product: 'shop.products',
  cart: 'shop.carts',
  order: 'shop.orders',
} as const;

export type AggregateType = keyof typeof STATE_TABLES;
type StateTable<T extends AggregateType> = ShopDatabase[(typeof STATE_TABLES)[T]];
/** An aggregate's state row. */
export type State<T extends AggregateType> = Selectable<StateTable<T>>;
/**
 * What every state row has. TypeScript cannot relate the table a generic `T` names to `T`'s
 * columns, so the helpers below spell this out and type the rows they read by hand.
 */
interface Versioned {
  id: string;
  version: number;
}
/** Aggregates that change after they are created (orders do not). */
type Changing = Exclude<AggregateType, 'order'>;
/** What a command may write to a state row; the version is {@link commit}'s alone. */
type Changes<T extends Changing> = Omit<
  Updateable<StateTable<T>>,
  'id' | 'version' | 'created_at' | 'updated_at'
>;

/** Input that may name the version the caller last read (its ETag); then no other will do. */
export interface ExpectedVersion {
  expectedVersion?: number | undefined;
}

/** What a command wrote. */
export interface Outcome<S> {
  /** The state of what the command is about, as the command left it. */
  state: S;
  /** Its version now (an ETag). */
  version: number;
  /** Every aggregate version the command wrote, for consistency tokens. */
  versions: WrittenVersion[];
}

function outcome<S>(state: S, type: AggregateType, id: string, version: number): Outcome<S> {
  return { state, version, versions: [{ aggregateType: type, aggregateId: id, version }] };
}

/**
 * Locks an aggregate's state row for this transaction, so commands on one aggregate run one
 * after another, and checks that it is at the version the caller expects. `exists` tells rows
 * that no longer count (an erased customer) from live ones.
 *
 * @throws CommandError `not_found`, `precondition_failed`
 */
export async function lock<T extends Changing>(
  trx: Transaction<ShopDatabase>,
  type: T,
  id: string,
  expectedVersion: number | undefined,
  exists: (state: State<T>) => boolean = () => true,
): Promise<State<T> & Versioned> {
  const table: (typeof STATE_TABLES)[Changing] = STATE_TABLES[type];
  const state = (await trx
    .selectFrom(table)
    .selectAll()
    .where('id', '=', id)
    .forUpdate()
    .executeTakeFirst()) as (State<T> & Versioned) | undefined;
  const locked = present(type, id, state, exists);
  expectVersion(locked.version, expectedVersion);
  return locked;
}

/** `state`, when there is one that counts; `not_found` otherwise. */
function present<T extends Changing>(
  type: T,
  id: string,
  state: (State<T> & Versioned) | undefined,
  exists: (state: State<T>) => boolean,
): State<T> & Versioned {
  if (state === undefined || !exists(state))
    throw new CommandError('not_found', `No ${type} ${id}`);
  return state;
}

/** `precondition_failed` unless the aggregate is at the version the caller expects, if any. */
function expectVersion(version: number, expectedVersion: number | undefined): void {
  if (expectedVersion !== undefined && expectedVersion !== version) {
    throw new CommandError(
      'precondition_failed',
      `The resource is at version ${version}, not ${expectedVersion}`,
    );
  }
}

/** An aggregate locked and moved on by {@link advanceStatement}: the version found, and the row now. */
export interface Advanced<T extends Changing> {
  found: State<T> & Versioned;
  state: State<T> & Versioned;
}

/**
 * {@link lock} and the version bump of {@link commit} in one statement, for a command that
 * writes exactly `count` events whenever it succeeds: the state row moved on by `count` versions,
 * returned. {@link advanced} checks what it returned: a refusal throws, and the transaction rolls
 * the bump back. {@link appendAdvanced} then appends the events.
 */
export function advanceStatement(
  trx: Transaction<ShopDatabase>,
  type: Changing,
  id: string,
  count: number,
): CompiledQuery {
  const table: (typeof STATE_TABLES)[Changing] = STATE_TABLES[type];
  return trx
    .updateTable(table)
    .set({ version: sql<number>`version + ${count}`, updated_at: new Date() })
    .where('id', '=', id)
    .returningAll()
    .compile();
}

/**
 * What {@link advanceStatement} returned (`row`): the version found and the row now, when the
 * aggregate exists, counts (`exists`) and was at the version the caller expects.
 *
 * @throws CommandError `not_found`, `precondition_failed`
 */
export function advanced<T extends Changing>(
  type: T,
  id: string,
  row: unknown,
  expected: {
    expectedVersion: number | undefined;
    count: number;
    exists?: (state: State<T>) => boolean;
  },
): Advanced<T> {
  const state = row as (State<T> & Versioned) | undefined;
  const now = present(type, id, state, expected.exists ?? (() => true));
  const found = { ...now, version: now.version - expected.count };
  expectVersion(found.version, expected.expectedVersion);
  return { found, state: now };
}

/** Appends the events of an aggregate {@link advanceStatement} moved on, one per version. */
export async function appendAdvanced<T extends Changing>(
  trx: Transaction<ShopDatabase>,
  type: T,
  { found, state }: Advanced<T>,
  events: readonly NewShopEvent[],
  context: CommandContext,
): Promise<Outcome<State<T>>> {
  if (found.version + events.length !== state.version) {
    throw new Error(
      `${type} ${found.id} moved on by ${state.version - found.version} versions, not ${events.length}`,
    );
  }
  await append(trx, { type, id: found.id, expectedVersion: found.version }, events, context);
  return outcome(state, type, found.id, state.version);
}

/**
 * Seals `events` and appends them to the outbox after `expectedVersion`, sent with the COMMIT (a
 * version conflict fails it).
 */
async function append(
  trx: Transaction<ShopDatabase>,
  stream: { type: AggregateType; id: string; expectedVersion: number },
  events: readonly NewShopEvent[],
  context: CommandContext,
): Promise<void> {
  const stored = await sealed(trx, events, context.privacy);
  const prepared = outbox.prepare(stream, stored, context);
  await atCommit(trx, [CompiledQuery.raw(prepared.text, prepared.values)], prepared);
}

/**
 * Moves an aggregate found at `current.version` on by one version per event: writes `changes`
 * and the new version to its state row, and appends `events` expecting `current.version`, in
 * `trx`. Without events nothing is written.
 *
 * @throws SluiceError `version_conflict` when the outbox holds another version (a stale `current`).
 * @example
 * const renamed = await commit(trx, 'customer', locked,
 *   [{ type: 'customer.renamed.v1', payload: { customerId: locked.id, name } }], context, { name });
 */
export async function commit<T extends Changing>(
  trx: Transaction<ShopDatabase>,
  type: T,
  current: State<T> & Versioned,
  events: readonly NewShopEvent[],
  context: CommandContext,
  changes?: Changes<T>,
): Promise<Outcome<State<T>>> {
  const { id } = current;
  const version = current.version + events.length;
  if (events.length === 0) return outcome(current, type, id, version);
  const table: (typeof STATE_TABLES)[Changing] = STATE_TABLES[type];
  const set: Updateable<StateTable<Changing>> = { ...changes, version, updated_at: new Date() };
  const state = (await trx
    .updateTable(table)
    .set(set)
    .where('id', '=', id)
    .returningAll()
    .executeTakeFirstOrThrow()) as State<T>;
  await append(trx, { type, id, expectedVersion: current.version }, events, context);
  return outcome(state, type, id, version);
}

/**
 * Creates an aggregate: inserts its state row at version `events.length` and appends `events`
 * as its versions 1, 2, …, in `trx`.
 *
 * @throws SluiceError `version_conflict` when the id already has events.
 */
export async function commitNew<T extends AggregateType>(
  trx: Transaction<ShopDatabase>,
  type: T,
  row: Omit<Insertable<StateTable<T>>, 'version'> & { id: string },
  events: readonly NewShopEvent[],
  context: CommandContext,
): Promise<Outcome<State<T>>> {
  const version = events.length;
  const table: (typeof STATE_TABLES)[AggregateType] = STATE_TABLES[type];
  const values = { ...row, version } as Insertable<StateTable<AggregateType>>;
  const state = (await trx
    .insertInto(table)
    .values(values)
    .returningAll()
    .executeTakeFirstOrThrow()) as State<T>;
  await append(trx, { type, id: row.id, expectedVersion: 0 }, events, context);
  return outcome(state, type, row.id, version);
}

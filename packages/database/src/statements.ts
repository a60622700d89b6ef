// Statements of a transaction sent together (`pipelined`) or with its COMMIT (`atCommit`): the
// pool of createDatabase runs them so; on any other Kysely they run one at a time. Array
// parameters as text (`arrayLiteral`). Apart from the pool, so that code handed a Kysely
// instance (a projection library) does not load `pg`.
import { SluiceError } from '@sluice/errors';
import { CompiledQuery, type Kysely, type KyselyPlugin, type QueryResult } from 'kysely';
import type pg from 'pg';
import type { DatabaseErrorCode } from './index.js';

export { arrayLiteral, type ArrayElement } from './arrays.js';

/**
 * The text {@link pipelined} sends through Kysely, with the statements as its one value: the pool
 * of `createDatabase` runs them; any other pool reaches PostgreSQL, which refuses it.
 */
export const PIPELINE_TEXT =
  '/* statements pipelined by @sluice/database need a database made by its createDatabase */ SELECT pg_catalog.sluice_pipeline()';

/** The text {@link atCommit} sends through Kysely, as {@link PIPELINE_TEXT}. */
export const AT_COMMIT_TEXT =
  '/* statements deferred by @sluice/database need a database made by its createDatabase */ SELECT pg_catalog.sluice_at_commit()';

/**
 * Marks the Kysely instances of `createDatabase` (and those derived from them: transactions,
 * `withPlugin`), whose pool runs pipelines.
 */
export const PIPELINES: KyselyPlugin = {
  transformQuery: ({ node }) => node,
  transformResult: ({ result }) => Promise.resolve(result),
};

/**
 * Runs `queries` in the transaction `trx` (a Kysely `Transaction`) in one round trip: sent
 * together, run in order, each seeing what the ones before it wrote (each takes its own snapshot,
 * as statements sent one at a time do). Rejects with the first statement that fails; the
 * transaction must then roll back (PostgreSQL runs nothing after a statement it refuses; a row pg
 * cannot read, such as `int8_out_of_range`, is found after all of them ran). For statements whose
 * texts do not depend on each other's results. The results are pg's, through no Kysely plugin.
 * On a database not made by `createDatabase` the statements run one at a time, in order,
 * with the same results.
 *
 * @throws SluiceError `pipeline_outside_transaction`
 * @example
 * const [locked, lines] = await pipelined(trx, [lockCart.compile(), readLines.compile()]);
 */
export async function pipelined(
  trx: Pick<Kysely<unknown>, 'isTransaction' | 'executeQuery' | 'getExecutor'>,
  queries: readonly CompiledQuery[],
): Promise<QueryResult<unknown>[]> {
  assertTransaction(trx);
  if (queries.length === 0) return [];
  if (!pipelines(trx)) return oneAtATime(trx, queries);
  const { rows } = await handOver(trx, PIPELINE_TEXT, queries);
  return (rows as pg.QueryResult[]).map((result) => ({
    rows: result.rows as unknown[],
    ...(/^(INSERT|UPDATE|DELETE|MERGE)$/.test(result.command)
      ? { numAffectedRows: BigInt(result.rowCount ?? 0) }
      : {}),
  }));
}

/**
 * Runs `queries` when the transaction `trx` commits, sent with its COMMIT in one round trip: for
 * statements whose results the caller does not need (bookkeeping written last; best without
 * RETURNING: a row pg cannot read is found once the COMMIT ran, and still fails the call). They
 * run after everything else the transaction runs, in order. One that fails fails the commit: the
 * transaction rolls back and its `execute` rejects with that statement's error, passed through
 * `refused` when given (a check a statement makes by failing, named as the caller names it). A
 * rollback to a savepoint does not take them back. On a database not made by `createDatabase`
 * they run at once, one at a time.
 *
 * @throws SluiceError `pipeline_outside_transaction`
 * @example
 * await atCommit(trx, [sql`UPDATE checkpoints SET next = ${next}`.compile(trx)]);
 */
export async function atCommit(
  trx: Pick<Kysely<unknown>, 'isTransaction' | 'executeQuery' | 'getExecutor'>,
  queries: readonly CompiledQuery[],
  options: { refused?: (error: Error) => Error } = {},
): Promise<void> {
  assertTransaction(trx);
  if (queries.length === 0) return;
  const { refused } = options;
  if (!pipelines(trx)) {
    await oneAtATime(trx, queries).catch((error: unknown) => {
      throw refusal(refused, error);
    });
    return;
  }
  await handOver(trx, AT_COMMIT_TEXT, queries, refused === undefined ? {} : { refused });
}

/**
 * What the caller of a failed statement is told: `error` through the statement's `refused`, if it
 * has one (should `refused` itself throw, `error` as it was).
 */
export function refusal(refused: ((error: Error) => Error) | undefined, error: unknown): unknown {
  if (refused === undefined || !(error instanceof Error)) return error;
  try {
    return refused(error);
  } catch {
    return error;
  }
}

/** Hands `queries` to the pool of `createDatabase` under `text`, as its one value. */
const handOver = (
  trx: Pick<Kysely<unknown>, 'executeQuery'>,
  text: string,
  queries: readonly CompiledQuery[],
  extra: { refused?: (error: Error) => Error } = {},
) =>
  trx.executeQuery(
    CompiledQuery.raw(text, [
      queries.map((query) => ({ text: query.sql, values: [...query.parameters], ...extra })),
    ]),
  );

/** @throws SluiceError `pipeline_outside_transaction` */
function assertTransaction(trx: Pick<Kysely<unknown>, 'isTransaction'>): void {
  if (!trx.isTransaction) {
    throw new SluiceError<DatabaseErrorCode>(
      'pipeline_outside_transaction',
      'pipelined statements run inside a transaction: outside one, they would commit together',
    );
  }
}

/** Whether `db` comes from `createDatabase`, whose pool runs pipelines. */
const pipelines = (db: Pick<Kysely<unknown>, 'getExecutor'>): boolean =>
  db.getExecutor().plugins.includes(PIPELINES);

/** `queries` in order, each in its own round trip, with {@link pipelined}'s results. */
async function oneAtATime(
  trx: Pick<Kysely<unknown>, 'executeQuery'>,
  queries: readonly CompiledQuery[],
): Promise<QueryResult<unknown>[]> {
  const results: QueryResult<unknown>[] = [];
  for (const query of queries) {
    const { rows, numAffectedRows } = await trx.executeQuery(query);
    results.push({ rows, ...(numAffectedRows === undefined ? {} : { numAffectedRows }) });
  }
  return results;
}

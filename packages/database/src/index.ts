// The database pool and migrations, apart from the service kit: a process that does not use
// Kysely (the relay) does not load it.
import { isSluiceError, SluiceError } from '@sluice/errors';
import {
  Kysely,
  PostgresDialect,
  sql,
  type PostgresPool,
  type PostgresPoolClient,
  type Transaction,
} from 'kysely';
import { Migrator, type Migration } from 'kysely/migration';
import pg from 'pg';
import { queryPipeline, type PipelinedStatement } from './pipeline.js';
import { AT_COMMIT_TEXT, PIPELINES, PIPELINE_TEXT, refusal } from './statements.js';

export { atCommit, pipelined } from './statements.js';
export { arrayLiteral, type ArrayElement } from './arrays.js';

/** The codes of the SluiceErrors this package throws. */
export type DatabaseErrorCode =
  | 'int8_out_of_range'
  | 'migration_failed'
  | 'transaction_not_begun'
  | 'pipeline_outside_transaction';

/** int8 columns arrive as numbers; values beyond 2^53 would lose precision, so they fail loudly. */
function parseInt8(text: string): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value)) {
    throw new SluiceError<DatabaseErrorCode>(
      'int8_out_of_range',
      `int8 value ${text} exceeds JavaScript's safe integers`,
    );
  }
  return value;
}

const INT8_OID = 20;
const defaultParser = pg.types.getTypeParser as (oid: number, format?: string) => unknown;
const types = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === INT8_OID
      ? parseInt8
      : defaultParser(oid, format)) as pg.CustomTypesConfig['getTypeParser'],
};

/** Options for {@link createDatabase}. */
export interface DatabaseOptions {
  url: string;
  /** Pool size. Default 10. */
  maxConnections?: number;
  /** Name shown in `pg_stat_activity`. */
  applicationName?: string;
  /**
   * Called when an idle pooled connection fails (e.g. PostgreSQL restarted); the pool drops it
   * and the next query opens a new one. Without a listener such a failure would crash the process.
   */
  onIdleError?: (error: Error) => void;
  /** Session settings of every connection, e.g. `{ synchronous_commit: 'off' }`. */
  settings?: Readonly<Record<string, string>>;
  /**
   * How long a query waits for a connection, a new one or a free one of the pool, before it
   * fails (pg-pool's `timeout exceeded when trying to connect`). Default: no limit.
   */
  connectTimeoutMs?: number;
  /**
   * A parameterized statement text run this many times becomes a server-side prepared
   * statement on each connection, so PostgreSQL parses and plans it once rather than every time
   * (as pgjdbc's `prepareThreshold`). At most 256 texts are prepared. 0 turns it off. Default 5.
   */
  prepareThreshold?: number;
}

/** Texts prepared per process, at most (each connection prepares them as it runs them). */
const PREPARED_TEXTS = 256;

interface StatementNamer {
  /** The name to prepare `text` under, once it is worth preparing. */
  name(text: string): string | undefined;
  /** Prepares `text` afresh, under a new name, the next time it is worth it. */
  forget(text: string): void;
}

/**
 * Names the statement texts worth preparing: data statements run `threshold` times. Texts are
 * counted until `PREPARED_TEXTS` are named; one-off texts (dynamic lists) are forgotten in bulk.
 */
function statementNamer(threshold: number): StatementNamer {
  const names = new Map<string, string>();
  const uses = new Map<string, number>();
  let named = 0;
  return {
    name(text) {
      const name = names.get(text);
      if (name !== undefined || threshold <= 0 || named >= PREPARED_TEXTS) return name;
      if (text.length > 16_384 || !/^\s*(select|insert|update|delete|with)\b/i.test(text))
        return undefined;
      const count = (uses.get(text) ?? 0) + 1;
      if (count < threshold) {
        if (uses.size >= 16 * PREPARED_TEXTS) uses.clear();
        uses.set(text, count);
        return undefined;
      }
      uses.delete(text);
      named += 1;
      names.set(text, `sluice_${named}`);
      return `sluice_${named}`;
    },
    forget(text) {
      names.delete(text);
    },
  };
}

/** PostgreSQL refuses a prepared statement whose result columns changed (a view redefined). */
const RESULT_TYPE_CHANGED = /cached plan must not change result type/;
// Transaction control alone in its text (a text may hold several statements).
const TRANSACTION_START = /^\s*(begin|start\s+transaction)\b[^;]*;?\s*$/i;
const TRANSACTION_END = /^\s*(commit|end|rollback|abort)(\s+(work|transaction))?\s*;?\s*$/i;
const ROLLBACK = /^\s*(rollback|abort)(\s+(work|transaction))?\s*;?\s*$/i;

/** What a statement after a BEGIN PostgreSQL refused is told: nothing runs outside it. */
const notBegun = (cause: Error) =>
  new SluiceError<DatabaseErrorCode>(
    'transaction_not_begun',
    `The transaction did not begin (${cause.message}); only ROLLBACK may follow`,
    { cause },
  );

/** The result of a command that had nothing to send yet, without a round trip. */
const completed = (command: 'BEGIN' | 'COMMIT' | 'ROLLBACK' | 'DEFER'): Promise<pg.QueryResult> =>
  Promise.resolve({
    command,
    rowCount: null,
    oid: 0,
    fields: [],
    rows: [],
  });

/**
 * Kysely's queries on one checked-out `client`: texts `namer` names run as prepared statements,
 * and a BEGIN waits to go with the transaction's first statement. Should a BEGIN fail, nothing
 * more runs on the client until its ROLLBACK: not outside the transaction the caller began.
 */
function sessionQuery(client: pg.PoolClient, namer: StatementNamer) {
  let begin: string | undefined;
  let failed: Error | undefined;
  /** Statements of {@link atCommit}: sent with the COMMIT, dropped by a ROLLBACK. */
  let deferred: PipelinedStatement[] = [];
  const statementOf = (text: string, values: unknown[]): PipelinedStatement => ({
    name: values.length === 0 ? undefined : namer.name(text),
    text,
    values,
    types,
  });
  /**
   * The next run prepares them again under other names: PostgreSQL refuses a statement on every
   * connection that prepared it (its result columns changed), or pg dropped it (values it could
   * not send). The caller still sees the failure.
   */
  const forgetOnFailure = (statements: readonly PipelinedStatement[]) => (error: unknown) => {
    // Not a row pg could not read (int8_out_of_range): the statement itself is sound.
    const dropped = !(error instanceof pg.DatabaseError) && !isSluiceError(error);
    if (dropped || RESULT_TYPE_CHANGED.test(error.message))
      for (const { name, text } of statements) if (name !== undefined) namer.forget(text);
    throw error;
  };
  /** The statements' failure after the names are sorted out, through the failed one's `refused`. */
  const pipeline = (statements: readonly PipelinedStatement[], after: string | undefined) => {
    let failedAt: number | undefined;
    const failure = {
      beginFailed: (error: Error) => (failed = error),
      statementFailed: (index: number) => (failedAt = index),
    };
    return queryPipeline(client, after, statements, failure)
      .catch(forgetOnFailure(statements))
      .catch((error: unknown) => {
        throw refusal(failedAt === undefined ? undefined : statements[failedAt]?.refused, error);
      });
  };
  const run = (text: string, values: unknown[], after?: string): Promise<pg.QueryResult> => {
    const statement = statementOf(text, values);
    if (after !== undefined)
      return pipeline([statement], after).then((results) => results[0] as pg.QueryResult);
    const result =
      statement.name === undefined ? client.query(text, values) : client.query(statement);
    return result.catch(forgetOnFailure([statement]));
  };
  const statementsOf = (value: unknown) =>
    (value as Pick<PipelinedStatement, 'text' | 'values' | 'refused'>[]).map(
      ({ text, values = [], refused }) => ({
        ...statementOf(text, values),
        ...(refused === undefined ? {} : { refused }),
      }),
    );
  /** The deferred statements, then COMMIT (after the BEGIN still waiting, if any). */
  const commitDeferred = (pending: string | undefined) => {
    const statements = [...deferred, { text: 'COMMIT', values: [] }];
    deferred = [];
    return pipeline(statements, pending).then((results) => results.at(-1) as pg.QueryResult);
  };
  const query = (text: string, values: unknown[]): Promise<pg.QueryResult> => {
    if (failed !== undefined) {
      if (!ROLLBACK.test(text)) return Promise.reject(notBegun(failed));
      failed = undefined;
      deferred = [];
      return client.query(text);
    }
    if (text === AT_COMMIT_TEXT) {
      deferred.push(...statementsOf(values[0]));
      return completed('DEFER');
    }
    const pending = begin;
    begin = undefined;
    if (text === PIPELINE_TEXT)
      return pipeline(statementsOf(values[0]), pending).then((results) => pipelineResult(results));
    if (deferred.length > 0 && TRANSACTION_END.test(text)) {
      if (!ROLLBACK.test(text)) return commitDeferred(pending);
      deferred = [];
    }
    // Without parameters pg uses the simple protocol, where one text may hold several statements.
    if (values.length > 0) return run(text, values, pending);
    if (pending === undefined) {
      if (!TRANSACTION_START.test(text)) return run(text, values);
      begin = text;
      return completed('BEGIN');
    }
    if (TRANSACTION_END.test(text)) return completed(ROLLBACK.test(text) ? 'ROLLBACK' : 'COMMIT');
    return sendBegin(pending).then(() => run(text, values));
  };
  const sendBegin = (text: string) =>
    client.query(text).catch((error: unknown) => {
      failed = error as Error;
      throw error;
    });
  /** A query object (a cursor) goes after the BEGIN still waiting, and not if it failed. */
  const submit = (submittable: pg.Submittable) => {
    if (begin !== undefined) void sendBegin(begin).catch(() => undefined);
    begin = undefined;
    // pg reports an Error a query's submit returns to that query.
    const send = submittable.submit.bind(submittable);
    submittable.submit = (connection) =>
      failed === undefined ? send(connection) : notBegun(failed);
    return client.query(submittable);
  };
  return { query, submit };
}

/** The pipeline's results as one result: each statement's a row, for {@link pipelined}. */
const pipelineResult = (results: pg.QueryResult[]): pg.QueryResult => ({
  command: 'PIPELINE',
  rowCount: results.length,
  oid: 0,
  fields: [],
  rows: results,
});

/** Kysely's view of `pool`, running the texts `namer` names as prepared statements. */
function preparingPool(pool: pg.Pool, namer: StatementNamer): PostgresPool {
  return {
    options: pool.options,
    end: () => pool.end(),
    async connect() {
      const client = await pool.connect();
      const session = sessionQuery(client, namer);
      return {
        get processID() {
          return (client as { processID?: number }).processID;
        },
        // Given back inside a transaction (a caller that neither committed nor rolled back):
        // closed rather than lent to the next caller in the middle of it.
        release: (destroy?: boolean) =>
          client.release(destroy === true || client.getTransactionStatus() !== 'I'),
        query: (text: unknown, values?: readonly unknown[]): unknown =>
          typeof text === 'string'
            ? session.query(text, [...(values ?? [])])
            : session.submit(text as pg.Submittable),
      } as PostgresPoolClient;
    },
  };
}

/**
 * A pooled Kysely instance over node-postgres; `bigint` columns read as numbers. A transaction's
 * `BEGIN` goes with its first statement that has parameters, in one round trip; a `BEGIN` that
 * fails runs nothing (see {@link DatabaseOptions.prepareThreshold} for prepared statements).
 */
export function createDatabase<DB>(options: DatabaseOptions): Kysely<DB> {
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.maxConnections ?? 10,
    types,
    ...(options.connectTimeoutMs === undefined
      ? {}
      : { connectionTimeoutMillis: options.connectTimeoutMs }),
    ...(options.applicationName === undefined ? {} : { application_name: options.applicationName }),
    ...(options.settings === undefined
      ? {}
      : {
          options: Object.entries(options.settings)
            .map(([name, value]) => `-c ${name}=${value}`)
            .join(' '),
        }),
  });
  pool.on('error', options.onIdleError ?? (() => undefined));
  // A connection that fails while checked out (terminated between two statements of a
  // transaction) emits 'error' on its client, and without a listener that ends the process.
  // The failure reaches the caller through the next query, which fails; the pool drops it.
  pool.on('connect', (client) => client.on('error', () => undefined));
  const namer = statementNamer(options.prepareThreshold ?? 5);
  return new Kysely<DB>({
    dialect: new PostgresDialect({ pool: preparingPool(pool, namer) }),
    plugins: [PIPELINES],
  });
}

/** Options for {@link migrate}. */
export interface MigrateOptions {
  /**
   * Other sets record their migrations in the same table (programs running other modules): names
   * they applied are left alone, not refused as missing. Default false.
   */
  shared?: boolean;
}

/**
 * Applies `migrations` in name order, recording them in `sluice.<table>`, in one transaction:
 * all of them or none. Concurrent callers wait for each other. A set may merge several packages'
 * migrations, so a new one may sort before one already applied: it is applied, not refused.
 *
 * @throws SluiceError `migration_failed`
 */
export async function migrate<DB>(
  db: Kysely<DB>,
  table: string,
  migrations: Record<string, Migration>,
  options: MigrateOptions = {},
): Promise<void> {
  await db.transaction().execute(async (trx) => {
    // One caller at a time from the schema's creation on: Kysely's own lock needs its tables.
    await sql`SELECT pg_advisory_xact_lock(hashtext(${`sluice.${table}`}))`.execute(trx);
    await trx.schema.createSchema('sluice').ifNotExists().execute();
    const recorded = options.shared === true ? await appliedElsewhere(trx, table) : {};
    const migrator = new Migrator({
      db: trx,
      provider: { getMigrations: () => Promise.resolve({ ...recorded, ...migrations }) },
      migrationTableSchema: 'sluice',
      migrationTableName: table,
      migrationLockTableName: `${table}_lock`,
      allowUnorderedMigrations: true,
    });
    const { error, results } = await migrator.migrateToLatest();
    if (error === undefined) return;
    const failed = results?.find((result) => result.status === 'Error')?.migrationName ?? 'unknown';
    throw new SluiceError<DatabaseErrorCode>('migration_failed', `Migration ${failed} failed`, {
      cause: error,
    });
  });
}

/** The migrations recorded in `sluice.<table>`, as ones that do nothing when asked again. */
async function appliedElsewhere<DB>(
  trx: Transaction<DB>,
  table: string,
): Promise<Record<string, Migration>> {
  const name = `sluice.${table}`;
  const { rows: found } = await sql<{ exists: boolean }>`
    SELECT to_regclass(${name}) IS NOT NULL AS exists`.execute(trx);
  if (found[0]?.exists !== true) return {};
  const { rows } = await sql<{ name: string }>`SELECT name FROM ${sql.table(name)}`.execute(trx);
  const done: Migration = { up: () => Promise.resolve() };
  return Object.fromEntries(rows.map((row) => [row.name, done]));
}

// Statements written together, before one Sync: one round trip for all of them. A transaction's
// BEGIN goes with its first statement (as pgjdbc does), and a caller may pipeline statements of
// its own. PostgreSQL skips every message after an error up to the Sync, so once one fails,
// nothing after it runs (a BEGIN that fails runs nothing).
import pg from 'pg';

/** What this module uses of a `pg.Query`: its protocol handlers, which pg calls by name. */
interface PgQuery {
  readonly name?: string;
  readonly text: string;
  submit(connection: pg.Connection): Error | null;
  handleRowDescription(message: unknown): void;
  handleDataRow(message: unknown): void;
  handleCommandComplete(message: unknown, connection: pg.Connection): void;
  handleEmptyQuery(connection: pg.Connection): void;
  handleError(error: Error, connection: pg.Connection): void;
  handleReadyForQuery(connection: pg.Connection): void;
  handlePortalSuspended(connection: pg.Connection): void;
  handleCopyInResponse(connection: pg.Connection): void;
  handleCopyData(message: unknown, connection: pg.Connection): void;
}

/** pg's record of named statements sent and not yet parsed, per connection. */
interface SubmittedNames {
  submittedNamedStatements: Record<string, string>;
}

/** How pg reports a query's end: once, or again after an error it reported (ignored then). */
type Callback = (error: Error | null | undefined, result?: unknown) => void;

/**
 * A statement to pipeline: extended protocol (it has values), maybe a prepared statement;
 * `refused` turns the error PostgreSQL reports for it into the one its caller rejects with.
 */
export type PipelinedStatement = pg.QueryConfig & {
  types?: pg.CustomTypesConfig;
  refused?: (error: Error) => Error;
};

/**
 * `begin` (if any) and `statements` as one submission: BEGIN's Parse, Bind and Execute, then each
 * statement's messages, then one Sync, in one write. Each statement's responses go to it, in
 * order; BEGIN's completion is taken here. Settles once: with every result, or the first error.
 */
class Pipeline implements pg.Submittable {
  #begun: boolean;
  #failedBeforeBegin = false;
  /** The statement whose responses come next. */
  #current = 0;
  #failed = false;
  #failedAt: number | undefined;
  private readonly queries: PgQuery[];
  private readonly results: unknown[] = [];

  /** Called when the pipeline ends; pg wraps it when it times queries (`query_timeout`). */
  callback: Callback;

  /** @param statements at least one */
  constructor(
    private readonly begin: string | undefined,
    statements: readonly PipelinedStatement[],
    callback: Callback,
  ) {
    this.#begun = begin === undefined;
    this.callback = callback;
    this.queries = statements.map(
      (statement, index) =>
        new pg.Query({ ...statement, queryMode: 'extended' } as pg.QueryConfig, (error, result) =>
          this.settled(index, error, result),
        ) as unknown as PgQuery,
    );
  }

  /** The statement whose error ended the pipeline, once one did (not the BEGIN's). */
  get failedAt(): number | undefined {
    return this.#failedAt;
  }

  /** Whether PostgreSQL reported an error before it completed the BEGIN: nothing ran. */
  get failedBeforeBegin(): boolean {
    return this.#failedBeforeBegin;
  }

  /** pg marks the active query's name parsed at every ParseComplete: the current statement's. */
  get name(): string | undefined {
    return this.#begun ? this.queries[this.#current]?.name : undefined;
  }

  get text(): string {
    return (this.queries[this.#current] ?? this.queries[0])?.text ?? '';
  }

  /** The statements' texts, in order. */
  get texts(): string[] {
    return this.queries.map((query) => query.text);
  }

  submit(connection: pg.Connection): void {
    connection.stream.cork();
    // Each statement's own Sync is held back: one ends the whole submission.
    const own = Object.getOwnPropertyDescriptor(connection, 'sync');
    connection.sync = () => undefined;
    try {
      if (this.begin !== undefined) {
        connection.parse({ text: this.begin, name: '', types: [] }, false);
        connection.bind({}, false);
        connection.execute({}, false);
      }
      for (const query of this.queries) {
        // A config pg refuses is written nothing of; values it cannot send fail the statement
        // in `submit` (its callback). Either way what was written runs, up to the Sync below.
        const refused = query.submit(connection);
        if (refused !== null) query.handleError(refused, connection);
        if (this.#failed) break;
      }
    } finally {
      if (own === undefined) Reflect.deleteProperty(connection, 'sync');
      else Object.defineProperty(connection, 'sync', own);
      connection.sync();
      connection.stream.uncork();
    }
  }

  private settled(index: number, error: Error | null | undefined, result: unknown): void {
    if (this.#failed) return;
    if (error !== null && error !== undefined) {
      this.#failed = true;
      if (!this.#failedBeforeBegin) this.#failedAt = index;
      this.callback(error);
      return;
    }
    this.results[index] = result;
    if (index === this.queries.length - 1) this.callback(null, this.results);
  }

  handleCommandComplete(message: unknown, connection: pg.Connection): void {
    if (!this.#begun) {
      this.#begun = true;
      return;
    }
    this.queries[this.#current]?.handleCommandComplete(message, connection);
    this.#current += 1;
  }

  handleEmptyQuery(connection: pg.Connection): void {
    this.queries[this.#current]?.handleEmptyQuery(connection);
    this.#current += 1;
  }

  /** An error PostgreSQL reported, or the connection's; not one pg met binding the values. */
  handleError(error: Error, connection: pg.Connection): void {
    if (!this.#begun) this.#failedBeforeBegin = true;
    const { submittedNamedStatements } = connection as unknown as SubmittedNames;
    // The statements after the failed one were skipped: their names were sent, never parsed.
    const skipped = this.queries.slice(this.#begun ? this.#current + 1 : 0);
    for (const { name, text } of skipped) {
      if (name !== undefined && submittedNamedStatements[name] === text)
        Reflect.deleteProperty(submittedNamedStatements, name);
    }
    (this.queries[this.#current] ?? this.queries[0])?.handleError(error, connection);
  }

  /** Every statement completed: each hands its result over (or its rows' parse error). */
  handleReadyForQuery(connection: pg.Connection): void {
    for (const query of this.queries) query.handleReadyForQuery(connection);
  }

  handleRowDescription(message: unknown): void {
    this.queries[this.#current]?.handleRowDescription(message);
  }
  handleDataRow(message: unknown): void {
    this.queries[this.#current]?.handleDataRow(message);
  }
  handlePortalSuspended(connection: pg.Connection): void {
    this.queries[this.#current]?.handlePortalSuspended(connection);
  }
  handleCopyInResponse(connection: pg.Connection): void {
    this.queries[this.#current]?.handleCopyInResponse(connection);
  }
  handleCopyData(message: unknown, connection: pg.Connection): void {
    this.queries[this.#current]?.handleCopyData(message, connection);
  }
}

/** How a pipeline failed: PostgreSQL refused the BEGIN (nothing ran), or statement `failedAt`. */
export interface PipelineFailure {
  beginFailed(error: Error): void;
  statementFailed(index: number): void;
}

/**
 * Runs `statements` (extended protocol) on `client` in one round trip, after `begin` when there
 * is one, and settles with their results in order, or with the first error (nothing after it
 * ran); `failure` hears first which: the BEGIN (only a ROLLBACK should follow) or a statement.
 */
export function queryPipeline(
  client: pg.ClientBase,
  begin: string | undefined,
  statements: readonly PipelinedStatement[],
  failure: PipelineFailure,
): Promise<pg.QueryResult[]> {
  return new Promise((resolve, reject) => {
    const submission: Pipeline = new Pipeline(begin, statements, (error, results) => {
      if (error === undefined || error === null) {
        resolve(results as pg.QueryResult[]);
        return;
      }
      if (submission.failedBeforeBegin) failure.beginFailed(error);
      const { failedAt } = submission;
      if (failedAt !== undefined) failure.statementFailed(failedAt);
      reject(error);
    });
    client.query(submission);
  });
}

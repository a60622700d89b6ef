// A transaction's BEGIN written with its first statement, before one Sync, as pgjdbc does: one
// round trip fewer per transaction. PostgreSQL skips every message after an error up to the
// Sync, so a BEGIN that fails runs nothing.
import pg from 'pg';

/** What this module uses of a `pg.Query`: its protocol handlers, which pg calls by name. */
export interface PgQuery {
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
export interface SubmittedNames {
  submittedNamedStatements: Record<string, string>;
}

/** How pg reports a query's end: once, or again after an error it reported (ignored then). */
export type Callback = (error: Error | null | undefined, result?: unknown) => void;

/**
 * `begin` and `statement` as one submission: BEGIN's Parse, Bind and Execute, then the
 * statement's messages and their Sync, in one write. The statement's responses go to it;
 * BEGIN's completion is taken here.
 */
class BeginWithStatement implements pg.Submittable {
  #begun = false;
  #failedBeforeBegin = false;
  private readonly statement: PgQuery;

  /** Called when the statement ends; pg wraps it when it times queries (`query_timeout`). */
  callback: Callback;

  constructor(
    private readonly begin: string,
    statement: pg.QueryConfig,
    callback: Callback,
  ) {
    this.callback = callback;
    const done: Callback = (error, result) => this.callback(error, result);
    this.statement = new pg.Query(statement, done) as unknown as PgQuery;
  }

  /** Whether PostgreSQL reported an error before it completed the BEGIN: nothing ran. */
  get failedBeforeBegin(): boolean {
    return this.#failedBeforeBegin;
  }

  /** pg marks the active query's name parsed at every ParseComplete: BEGIN's is not the statement's. */
  get name(): string | undefined {
    return this.#begun ? this.statement.name : undefined;
  }

  get text(): string {
    return this.statement.text;
  }

  submit(connection: pg.Connection): void {
    connection.stream.cork();
    try {
      connection.parse({ text: this.begin, name: '', types: [] }, false);
      connection.bind({}, false);
      connection.execute({}, false);
      // Cannot fail for the statements built below (text, an array of values, one name per
      // text); if it did, the BEGIN must not wait on the connection for the next Sync.
      if (this.statement.submit(connection) !== null) connection.stream.destroy();
    } finally {
      connection.stream.uncork();
    }
  }

  handleCommandComplete(message: unknown, connection: pg.Connection): void {
    if (this.#begun) this.statement.handleCommandComplete(message, connection);
    else this.#begun = true;
  }

  /** An error PostgreSQL reported, or the connection's; not one pg met binding the values. */
  handleError(error: Error, connection: pg.Connection): void {
    const { name } = this.statement;
    if (!this.#begun) {
      this.#failedBeforeBegin = true;
      // The statement was skipped: its name was sent, never parsed.
      if (name !== undefined) {
        const { submittedNamedStatements } = connection as unknown as SubmittedNames;
        Reflect.deleteProperty(submittedNamedStatements, name);
      }
    }
    this.statement.handleError(error, connection);
  }

  handleRowDescription(message: unknown): void {
    this.statement.handleRowDescription(message);
  }
  handleDataRow(message: unknown): void {
    this.statement.handleDataRow(message);
  }
  handleEmptyQuery(connection: pg.Connection): void {
    this.statement.handleEmptyQuery(connection);
  }
  handleReadyForQuery(connection: pg.Connection): void {
    this.statement.handleReadyForQuery(connection);
  }
  handlePortalSuspended(connection: pg.Connection): void {
    this.statement.handlePortalSuspended(connection);
  }
  handleCopyInResponse(connection: pg.Connection): void {
    this.statement.handleCopyInResponse(connection);
  }
  handleCopyData(message: unknown, connection: pg.Connection): void {
    this.statement.handleCopyData(message, connection);
  }
}

/**
 * Runs `statement` (extended protocol: it has values) on `client` right after `begin`, in one
 * round trip, and settles with the statement's result or error; `beginFailed` hears first when
 * PostgreSQL refused the BEGIN (the statement did not run; only a ROLLBACK should follow).
 */
export function queryAfterBegin(
  client: pg.ClientBase,
  begin: string,
  statement: pg.QueryConfig & { types?: pg.CustomTypesConfig },
  beginFailed: (error: Error) => void,
): Promise<pg.QueryResult> {
  return new Promise((resolve, reject) => {
    const submission: BeginWithStatement = new BeginWithStatement(
      begin,
      statement,
      (error, result) => {
        if (error === undefined || error === null) {
          resolve(result as pg.QueryResult);
          return;
        }
        if (submission.failedBeforeBegin) beginFailed(error);
        reject(error);
      },
    );
    client.query(submission);
  });
}

// The database pool and migrations, apart from the service kit: a process that does not use
// Kysely (the relay) does not load it.
import { SluiceError } from '@sluice/errors';
import { Kysely, PostgresDialect } from 'kysely';
import { Migrator, type Migration } from 'kysely/migration';
import pg from 'pg';

/** int8 columns arrive as numbers; values beyond 2^53 would lose precision, so they fail loudly. */
function parseInt8(text: string): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value)) {
    throw new SluiceError(
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
}

/** A pooled Kysely instance over node-postgres; `bigint` columns read as numbers. */
export function createDatabase<DB>(options: DatabaseOptions): Kysely<DB> {
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.maxConnections ?? 10,
    types,
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
  return new Kysely<DB>({ dialect: new PostgresDialect({ pool }) });
}

/**
 * Applies `migrations` in name order, recording them in `sluice.<table>`; concurrent callers
 * wait for each other (Kysely's migration lock). A set may merge several packages' migrations,
 * so a new one may sort before one already applied: it is applied, not refused.
 *
 * @throws SluiceError `migration_failed`
 */
export async function migrate<DB>(
  db: Kysely<DB>,
  table: string,
  migrations: Record<string, Migration>,
): Promise<void> {
  await db.schema.createSchema('sluice').ifNotExists().execute();
  const migrator = new Migrator({
    db,
    provider: { getMigrations: () => Promise.resolve(migrations) },
    migrationTableSchema: 'sluice',
    migrationTableName: table,
    migrationLockTableName: `${table}_lock`,
    allowUnorderedMigrations: true,
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error !== undefined) {
    const failed = results?.find((result) => result.status === 'Error')?.migrationName ?? 'unknown';
    throw new SluiceError('migration_failed', `Migration ${failed} failed`, { cause: error });
  }
}

// Where the outbox runs its statements: a Kysely transaction (or Kysely itself, to purge) or a
// `pg` client, without the outbox depending on either at run time.
import { SluiceError } from '@sluice/errors';
import type { OutboxErrorCode } from './errors.js';

/** What a Kysely instance or transaction offers the outbox. */
interface KyselySession {
  readonly isTransaction: boolean;
  executeQuery(query: unknown): Promise<{ numAffectedRows?: bigint; rows: unknown[] }>;
}

/** What a `pg` client, pool client or pool offers the outbox. */
interface PgSession {
  query(text: string, values?: unknown[]): Promise<{ rowCount: number | null }>;
}

/**
 * Where the outbox runs its statements: a Kysely transaction, or a `pg` client inside a
 * transaction the caller began (to append); Kysely itself or a `pg` pool too (to purge).
 */
export type SqlSession = KyselySession | PgSession;

/** Runs a statement with `$n` parameters and returns how many rows it changed. */
export type Executor = (text: string, values: readonly unknown[]) => Promise<number>;

/** A quoted SQL identifier, for names from configuration. */
export function identifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

const requiresTransaction = () =>
  new SluiceError<OutboxErrorCode>(
    'outbox_requires_transaction',
    'outbox.append needs the open transaction that writes the state the events describe',
  );

const isKysely = (session: SqlSession): session is KyselySession =>
  typeof (session as Partial<KyselySession>).executeQuery === 'function';

/** Runs statements on Kysely, through its own `CompiledQuery` (the caller's Kysely, loaded late). */
async function kyselyExecutor(session: KyselySession): Promise<Executor> {
  const { CompiledQuery } = await import('kysely');
  return async (text, values) => {
    const result = await session.executeQuery(CompiledQuery.raw(text, [...values]));
    return Number(result.numAffectedRows ?? 0n);
  };
}

/**
 * An executor over `session`. With `transaction` (the default), refuses a session that is not
 * inside a transaction: events must commit with the state they describe.
 *
 * @throws SluiceError `outbox_requires_transaction`
 */
export async function executorOf(
  session: SqlSession,
  options: { transaction?: boolean } = {},
): Promise<Executor> {
  const transaction = options.transaction ?? true;
  if (isKysely(session)) {
    if (transaction && !session.isTransaction) throw requiresTransaction();
    return kyselyExecutor(session);
  }
  if (transaction) {
    // A pool would run the append on some connection, outside the caller's transaction.
    if ('totalCount' in session) throw requiresTransaction();
    // A savepoint exists only inside a transaction block: one round trip proves the caller began one.
    await session
      .query('SAVEPOINT sluice_outbox; RELEASE SAVEPOINT sluice_outbox')
      .catch((error: unknown) => {
        throw (error as { code?: string }).code === '25P01' ? requiresTransaction() : error;
      });
  }
  return async (text, values) => (await session.query(text, [...values])).rowCount ?? 0;
}

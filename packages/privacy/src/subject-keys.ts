import { randomBytes } from 'node:crypto';
import { SluiceError } from '@sluice/errors';
import { unwrapKey, wrapKey } from './envelope.js';
import type { PrivacyErrorCode } from './errors.js';
import type { MasterKey, MasterKeys } from './master-key.js';

/** What runs SQL: a `pg` client or pool, or an adapter over a Kysely transaction. */
export interface Queryable {
  query(text: string, values?: unknown[]): Promise<{ rows: unknown[] }>;
}

interface KeyRow {
  subject: string;
  wrapped_key: Buffer | null;
  master_key_id: string | null;
}

/** The table of subject keys; a row whose key is NULL is an erased subject. */
export const SUBJECT_KEYS_DDL = `
  CREATE SCHEMA IF NOT EXISTS sluice;
  CREATE TABLE IF NOT EXISTS sluice.subject_keys (
    subject       text PRIMARY KEY,
    wrapped_key   bytea NULL,
    master_key_id text NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    erased_at     timestamptz NULL,
    CHECK ((wrapped_key IS NULL) = (master_key_id IS NULL))
  )`;

/**
 * The subject key a row wraps.
 *
 * @throws SluiceError `master_key_unknown`, `subject_key_invalid` (both retriable: the
 *   configured master key is wrong, not the event read)
 */
function unwrapRow(keys: MasterKeys, row: KeyRow & { wrapped_key: Buffer }): Buffer {
  const master = [keys.current, keys.previous].find((key) => key?.id === row.master_key_id);
  if (master === undefined)
    throw new SluiceError<PrivacyErrorCode>(
      'master_key_unknown',
      `The key of subject ${row.subject} is wrapped by master key ${String(row.master_key_id)}, ` +
        'neither SLUICE_MASTER_KEY_FILE (or SLUICE_MASTER_KEY) nor SLUICE_MASTER_KEY_PREVIOUS_FILE',
      { retriable: true },
    );
  try {
    return unwrapKey(master.key, row.subject, row.wrapped_key);
  } catch (error) {
    throw new SluiceError<PrivacyErrorCode>(
      'subject_key_invalid',
      `The key of subject ${row.subject} does not unwrap with master key ${master.id}`,
      { cause: error, retriable: true },
    );
  }
}

const SELECT_KEY =
  'SELECT subject, wrapped_key, master_key_id FROM sluice.subject_keys WHERE subject = $1';

/** The key of a subject's row: null when the subject was erased, undefined without a row. */
function keyOfRow(keys: MasterKeys, row: KeyRow | undefined): Buffer | null | undefined {
  if (row === undefined) return undefined;
  return row.wrapped_key === null
    ? null
    : unwrapRow(keys, { ...row, wrapped_key: row.wrapped_key });
}

/** The subject's key, or null when the subject was erased; undefined when it has no key row. */
export async function readSubjectKey(
  db: Queryable,
  keys: MasterKeys,
  subject: string,
): Promise<Buffer | null | undefined> {
  const { rows } = await db.query(SELECT_KEY, [subject]);
  return keyOfRow(keys, rows[0] as KeyRow | undefined);
}

/**
 * The keys of `subjects` in one statement, as {@link readSubjectKey} gives each; a key that does
 * not unwrap is that subject's error.
 */
export async function readSubjectKeys(
  db: Queryable,
  keys: MasterKeys,
  subjects: readonly string[],
): Promise<Map<string, () => Buffer | null | undefined>> {
  const { rows } = await db.query(
    `SELECT subject, wrapped_key, master_key_id FROM sluice.subject_keys
      WHERE subject = ANY($1::text[])`,
    [subjects],
  );
  const found = new Map((rows as KeyRow[]).map((row) => [row.subject, row]));
  return new Map(subjects.map((subject) => [subject, () => keyOfRow(keys, found.get(subject))]));
}

/**
 * The subject's key, created (random, wrapped by the current master key) on first use in the
 * caller's transaction; one statement unless another transaction creates it at the same time.
 *
 * @throws SluiceError `subject_erased`, `master_key_unknown`
 */
export async function ensureSubjectKey(
  db: Queryable,
  keys: MasterKeys,
  subject: string,
): Promise<Buffer> {
  const { rows } = await db.query(
    `WITH made AS (
       INSERT INTO sluice.subject_keys (subject, wrapped_key, master_key_id) VALUES ($1, $2, $3)
       ON CONFLICT (subject) DO NOTHING RETURNING subject, wrapped_key, master_key_id)
     SELECT * FROM made
     UNION ALL ${SELECT_KEY} AND NOT EXISTS (SELECT 1 FROM made)`,
    [subject, wrapKey(keys.current.key, subject, randomBytes(32)), keys.current.id],
  );
  // Empty when a concurrent transaction made the row after this statement's snapshot.
  const stored =
    rows.length > 0 ? keyOfRow(keys, rows[0] as KeyRow) : await readSubjectKey(db, keys, subject);
  if (stored === null || stored === undefined)
    throw new SluiceError<PrivacyErrorCode>('subject_erased', `Subject ${subject} was erased`);
  return stored;
}

/** Destroys the subject's key in the caller's transaction: its sealed fields are unreadable. */
export async function eraseSubjectKey(db: Queryable, subject: string): Promise<void> {
  await db.query(
    `INSERT INTO sluice.subject_keys (subject, wrapped_key, master_key_id, erased_at)
     VALUES ($1, NULL, NULL, now())
     ON CONFLICT (subject) DO UPDATE
       SET wrapped_key = NULL, master_key_id = NULL,
           erased_at = coalesce(sluice.subject_keys.erased_at, now())`,
    [subject],
  );
}

/**
 * Re-wraps every subject key not wrapped by `keys.current` (after a master key rotation, with the
 * old key as `keys.previous`), 500 per transaction, and returns how many it re-wrapped.
 *
 * @throws SluiceError `master_key_unknown` when a key is wrapped by neither master key.
 */
export async function rewrapSubjectKeys(
  db: Queryable & { query(text: 'BEGIN' | 'COMMIT' | 'ROLLBACK'): Promise<unknown> },
  keys: MasterKeys,
): Promise<number> {
  let total = 0;
  for (;;) {
    await db.query('BEGIN');
    try {
      const { rows } = await db.query(
        `SELECT subject, wrapped_key, master_key_id FROM sluice.subject_keys
          WHERE wrapped_key IS NOT NULL AND master_key_id <> $1
          ORDER BY subject LIMIT 500 FOR UPDATE`,
        [keys.current.id],
      );
      for (const row of rows as (KeyRow & { wrapped_key: Buffer })[])
        await rewrap(db, keys.current, row.subject, unwrapRow(keys, row));
      await db.query('COMMIT');
      total += rows.length;
      if (rows.length < 500) return total;
    } catch (error) {
      await db.query('ROLLBACK');
      throw error;
    }
  }
}

async function rewrap(db: Queryable, master: MasterKey, subject: string, key: Buffer) {
  await db.query(
    'UPDATE sluice.subject_keys SET wrapped_key = $2, master_key_id = $3 WHERE subject = $1',
    [subject, wrapKey(master.key, subject, key), master.id],
  );
}

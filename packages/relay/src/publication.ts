import { SluiceError } from '@sluice/errors';
import pg from 'pg';
import type { RelayErrorCode } from './errors.js';

/** Names the relay replicates with. */
export interface ReplicationNames {
  /** Publication over the outbox, inserts only. Default `sluice_outbox`. */
  publication: string;
  /** Logical replication slot (pgoutput). Default `sluice_relay`. */
  slot: string;
  /** The outbox table. Default `shop.outbox`. */
  outbox: { schema: string; table: string };
}

/** The outbox table as SQL: schema and table, each quoted. */
export function outboxTable(names: ReplicationNames): string {
  return `${pg.escapeIdentifier(names.outbox.schema)}.${pg.escapeIdentifier(names.outbox.table)}`;
}

/**
 * Creates the publication unless it exists, then checks that it publishes every insert into
 * the outbox whole: a publication that leaves some out would have the relay confirm its slot
 * past those events without ever seeing them.
 */
export async function ensurePublication(
  client: pg.Client,
  names: ReplicationNames,
  outbox: string,
): Promise<void> {
  const table = await client.query<{ found: boolean }>(
    'SELECT to_regclass($1) IS NOT NULL AS found',
    [outbox],
  );
  if (table.rows[0]?.found !== true) {
    throw new SluiceError<RelayErrorCode>(
      'outbox_missing',
      `Table ${outbox} does not exist yet (the outbox's migrations have not run); the relay tries again.`,
      { retriable: true },
    );
  }
  const publication = await client.query('SELECT 1 FROM pg_publication WHERE pubname = $1', [
    names.publication,
  ]);
  if (publication.rowCount === 0) {
    // Publications have no IF NOT EXISTS; a concurrent creator loses with 42710.
    await client.query(createPublicationSql(names, outbox)).catch((error: unknown) => {
      const code = (error as { code?: string }).code;
      if (code === '42501') throw publicationMissing(names, outbox, error);
      if (code !== '42710') throw error;
    });
  }
  await checkPublication(client, names, outbox);
}

/** The SQL that creates the publication the relay needs. */
export function createPublicationSql(names: ReplicationNames, outbox: string): string {
  return `CREATE PUBLICATION ${pg.escapeIdentifier(names.publication)} FOR TABLE ${outbox} WITH (publish = 'insert')`;
}

/** The publication is missing and the relay's role may not create it. */
function publicationMissing(
  names: ReplicationNames,
  outbox: string,
  cause: unknown,
): SluiceError<RelayErrorCode> {
  return new SluiceError<RelayErrorCode>(
    'publication_missing',
    `Publication ${pg.escapeIdentifier(names.publication)} does not exist and this role may not create it ` +
      `(PostgreSQL requires ownership of ${outbox} and CREATE on the database). ` +
      `Have an administrator create it, then start the relay again: ${createPublicationSql(names, outbox)};`,
    { cause },
  );
}

interface PublicationRow {
  pubinsert: boolean;
  pubupdate: boolean;
  pubdelete: boolean;
  pubtruncate: boolean;
  includes_outbox: boolean;
  /** PostgreSQL 15+: the outbox's row filter, if any. */
  rowfilter: string | null;
  /** PostgreSQL 15+: outbox columns a column list leaves out. */
  missing_columns: string[];
  slot_exists: boolean;
}

async function readPublication(
  client: pg.Client,
  names: ReplicationNames,
  outbox: string,
): Promise<PublicationRow | undefined> {
  const version = await client.query<{ server_version_num: string }>('SHOW server_version_num');
  // Row filters and column lists (and the columns that show them) came with PostgreSQL 15.
  const hasFilters = Number(version.rows[0]?.server_version_num) >= 150000;
  const filters = hasFilters
    ? `t.rowfilter,
       ARRAY(SELECT a.attname::text FROM pg_attribute a
              WHERE a.attrelid = $5::regclass AND a.attnum > 0 AND NOT a.attisdropped
                AND a.attgenerated = '' AND a.attname <> ALL (t.attnames)
              ORDER BY a.attnum) AS missing_columns`
    : `NULL::text AS rowfilter, '{}'::text[] AS missing_columns`;
  const params = [names.publication, names.outbox.schema, names.outbox.table, names.slot];
  const { rows } = await client.query<PublicationRow>(
    `SELECT p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate,
            t.tablename IS NOT NULL AS includes_outbox, ${filters},
            EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $4) AS slot_exists
       FROM pg_publication p
       LEFT JOIN pg_publication_tables t
         ON t.pubname = p.pubname AND t.schemaname = $2 AND t.tablename = $3
      WHERE p.pubname = $1`,
    hasFilters ? [...params, outbox] : params,
  );
  return rows[0];
}

/**
 * Refuses an existing publication that does not publish every insert into the outbox whole;
 * reads only.
 *
 * @throws SluiceError `publication_mismatch`, saying what is wrong and the SQL that fixes it.
 */
export async function checkPublication(
  client: pg.Client,
  names: ReplicationNames,
  outbox: string,
): Promise<void> {
  const row = await readPublication(client, names, outbox);
  if (row === undefined) return;
  const { problems, fixes } = publicationProblems(
    row,
    pg.escapeIdentifier(names.publication),
    outbox,
  );
  if (problems.length === 0) return;
  const gap = row.slot_exists
    ? ` Slot ${pg.escapeIdentifier(names.slot)} exists: if a relay read it through this publication, the outbox events committed meanwhile never reached Kafka; reconcile them (compare the outbox with the topics).`
    : '';
  const sql = fixes.length > 1 ? `BEGIN; ${fixes.join(' ')} COMMIT;` : fixes.join(' ');
  throw new SluiceError<RelayErrorCode>(
    'publication_mismatch',
    `Publication ${pg.escapeIdentifier(names.publication)} does not publish every insert into ${outbox} whole: ` +
      `${problems.join('; ')}. The relay would confirm its slot past those events without publishing them.${gap} ` +
      `Fix the publication, then start the relay again: ${sql}`,
  );
}

function publicationProblems(
  row: PublicationRow,
  publication: string,
  outbox: string,
): { problems: string[]; fixes: string[] } {
  const problems: string[] = [];
  const fixes: string[] = [];
  const published = (['update', 'delete', 'truncate'] as const).filter(
    (action) => row[`pub${action}`],
  );
  if (!row.pubinsert) {
    problems.push(`it publishes no inserts (publish = '${published.join(', ')}')`);
    fixes.push(
      `ALTER PUBLICATION ${publication} SET (publish = '${['insert', ...published].join(', ')}');`,
    );
  }
  if (!row.includes_outbox) {
    problems.push(`it does not include ${outbox}`);
    fixes.push(`ALTER PUBLICATION ${publication} ADD TABLE ${outbox};`);
    return { problems, fixes };
  }
  if (row.rowfilter !== null)
    problems.push(`it filters the rows of ${outbox} (WHERE ${row.rowfilter})`);
  if (row.missing_columns.length > 0)
    problems.push(`it leaves out columns ${row.missing_columns.join(', ')} of ${outbox}`);
  if (row.rowfilter !== null || row.missing_columns.length > 0) {
    // Re-adding the table is what drops its row filter and column list.
    fixes.push(
      `ALTER PUBLICATION ${publication} DROP TABLE ${outbox};`,
      `ALTER PUBLICATION ${publication} ADD TABLE ${outbox};`,
    );
  }
  return { problems, fixes };
}

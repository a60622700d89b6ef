import { SluiceError } from '@sluice/errors';
import pg from 'pg';
import type { EventSink, OutgoingEvent } from './event-sink.js';
import { Lsn } from './lsn.js';
import { CLAIM_CHECKS_TABLE } from '@sluice/outbox/claim-checks';
import { outboxRowToEvent, outboxTextColumns } from '@sluice/outbox/rows';
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

/** What {@link prepareReplication} found or made. */
export interface SlotState {
  created: boolean;
  confirmedFlushLsn: Lsn;
  /**
   * Present when the slot was just created: the outbox rows committed before the slot's
   * consistent point, which the stream will never deliver. Publish them, then call `done()`.
   */
  initialSnapshot?: InitialSnapshot;
  /**
   * Present when an existing slot that no relay registered was just taken as it is: it streams
   * from `confirmedFlushLsn`, and outbox rows committed before that are not published. Log
   * `warning`; later starts find the slot registered and leave this out.
   */
  adopted?: SlotAdoption;
}

/** What an adopted slot may have left behind. */
export interface SlotAdoption {
  /** Outbox rows present at adoption; any of them may have been committed before the slot. */
  outboxRows: number;
  /** For an operator: the slot, its position, the rows at stake and what to do about them. */
  warning: string;
}

/** Outbox rows that predate a new slot, read in the slot's exported snapshot. */
export interface InitialSnapshot {
  consistentPoint: Lsn;
  /** Rows in per-aggregate version order, `batchSize` at a time. */
  batches(batchSize: number): AsyncGenerator<Record<string, string | null>[]>;
  /** Records that the snapshot was published and releases it. */
  done(): Promise<void>;
  /** Releases the snapshot without recording it (a new slot is made next time). */
  abandon(): Promise<void>;
}

/** A slot's health as PostgreSQL reports it. */
export interface SlotHealth {
  exists: boolean;
  active: boolean;
  /** `reserved`, `extended`, `unreserved` or `lost`. */
  walStatus: string | null;
  /** Bytes of WAL between the server's current position and the slot's confirmed position. */
  lagBytes: number;
  /** Bytes that can still be written before the slot is in danger of being lost; null if unlimited. */
  safeWalSizeBytes: number | null;
  confirmedFlushLsn: Lsn | null;
}

/**
 * Bounds on set-up connections: a cut-off database fails the set-up (the relay retries it)
 * rather than hanging it. Statements are bounded too, but for creating the slot, which waits for
 * the transactions running at that moment to end.
 */
const BOUNDED = { connectionTimeoutMillis: 10_000, keepAlive: true, query_timeout: 60_000 };

async function withClient<T>(
  connectionString: string,
  action: (client: pg.Client) => Promise<T>,
): Promise<T> {
  const client = new pg.Client({
    connectionString,
    application_name: 'sluice-relay-setup',
    ...BOUNDED,
  });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return await action(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * Makes sure the publication and the slot exist — the publication first, so the slot never
 * decodes WAL from before it — and refuses, loudly, a publication that hides outbox inserts and
 * a slot that was lost or dropped: events committed meanwhile may never have been published,
 * and that gap must be handled by a person. A slot that exists but that no relay registered is
 * adopted as it is, and reported in {@link SlotState.adopted}.
 *
 * @throws SluiceError `outbox_missing` (retriable: the outbox's migrations have not run yet),
 *   `publication_mismatch` (the publication does not publish every outbox insert whole),
 *   `slot_lost` (wal_status = lost), `slot_missing` (dropped after this relay created it),
 *   `slot_mismatch` (another plugin or database).
 */
export async function prepareReplication(
  connectionString: string,
  names: ReplicationNames,
): Promise<SlotState> {
  return withClient(connectionString, async (client) => {
    await ensureRelayTables(client);
    const outbox = `${pg.escapeIdentifier(names.outbox.schema)}.${pg.escapeIdentifier(names.outbox.table)}`;
    await ensurePublication(client, names, outbox);

    const slot = await client.query<{
      plugin: string;
      database: string;
      active: boolean;
      wal_status: string | null;
      confirmed_flush_lsn: string | null;
    }>(
      `SELECT plugin, database, active, wal_status, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`,
      [names.slot],
    );
    const registered = await client.query<{
      created_at: Date;
      created_at_lsn: string | null;
      snapshot_done: boolean;
    }>(
      'SELECT created_at, created_at_lsn::text, snapshot_done FROM sluice.relay_slots WHERE slot_name = $1',
      [names.slot],
    );
    let row = slot.rows[0];
    const record = registered.rows[0];
    if (record !== undefined && !record.snapshot_done) {
      // A relay died while creating the slot or publishing its initial snapshot: nothing was
      // streamed from this slot yet, so a fresh slot and snapshot lose nothing. The row goes
      // last, so a crash in between is met here again, never taken for a lost slot.
      if (row?.active === true) {
        throw new SluiceError<RelayErrorCode>(
          'slot_busy',
          `Slot ${names.slot} is still being set up by another process`,
          {
            retriable: true,
          },
        );
      }
      if (row !== undefined)
        await client.query('SELECT pg_drop_replication_slot($1)', [names.slot]);
      await client.query('DELETE FROM sluice.relay_slots WHERE slot_name = $1', [names.slot]);
      row = undefined;
    } else if (row === undefined && record !== undefined) {
      throw new SluiceError<RelayErrorCode>(
        'slot_missing',
        `Replication slot ${names.slot} was dropped (created ${record.created_at.toISOString()} at ${record.created_at_lsn ?? 'unknown LSN'}). ` +
          'Outbox events committed since it was last read may never have reached Kafka. Reconcile them ' +
          `(compare the outbox with the topics), then accept the gap with ` +
          `DELETE FROM sluice.relay_slots WHERE slot_name = '${names.slot}' and start the relay again.`,
      );
    }
    if (row === undefined) return createSlotWithSnapshot(connectionString, client, names, outbox);
    const database = (await client.query<{ db: string }>('SELECT current_database() AS db')).rows[0]
      ?.db;
    if (row.plugin !== 'pgoutput' || row.database !== database) {
      throw new SluiceError<RelayErrorCode>(
        'slot_mismatch',
        `Replication slot ${names.slot} uses plugin ${row.plugin} on database ${row.database}; the relay needs pgoutput on ${database}.`,
      );
    }
    if (row.wal_status === 'lost' || row.confirmed_flush_lsn === null) {
      throw new SluiceError<RelayErrorCode>(
        'slot_lost',
        `Replication slot ${names.slot} is lost (wal_status=${row.wal_status ?? 'null'}): PostgreSQL removed WAL it still needed, ` +
          'so outbox events may never have reached Kafka. Reconcile shop.outbox with the topics, then drop the slot and ' +
          `DELETE FROM sluice.relay_slots WHERE slot_name = '${names.slot}' to start over.`,
      );
    }
    const confirmedFlushLsn = Lsn.parse(row.confirmed_flush_lsn);
    if (record !== undefined) return { created: false, confirmedFlushLsn };
    return {
      created: false,
      confirmedFlushLsn,
      adopted: await adoptSlot(client, names, outbox, confirmedFlushLsn),
    };
  });
}

async function ensureRelayTables(client: pg.Client): Promise<void> {
  await client.query('CREATE SCHEMA IF NOT EXISTS sluice');
  await client.query(`
    CREATE TABLE IF NOT EXISTS sluice.relay_slots (
      slot_name text PRIMARY KEY,
      created_at timestamptz NOT NULL DEFAULT now(),
      created_at_lsn pg_lsn,
      snapshot_done boolean NOT NULL DEFAULT false
    )`);
  await client.query(CLAIM_CHECKS_TABLE);
}

/**
 * Creates the publication unless it exists, then checks that it publishes every insert into
 * the outbox whole: a publication that leaves some out would have the relay confirm its slot
 * past those events without ever seeing them.
 */
async function ensurePublication(
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
    await client
      .query(
        `CREATE PUBLICATION ${pg.escapeIdentifier(names.publication)} FOR TABLE ${outbox} WITH (publish = 'insert')`,
      )
      .catch((error: unknown) => {
        if ((error as { code?: string }).code !== '42710') throw error;
      });
  }
  await checkPublication(client, names, outbox);
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

/** @throws SluiceError `publication_mismatch`, saying what is wrong and the SQL that fixes it. */
async function checkPublication(
  client: pg.Client,
  names: ReplicationNames,
  outbox: string,
): Promise<void> {
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
  const row = rows[0];
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

/**
 * Registers a slot that no relay created, so it is adopted once, and says what that means:
 * rows committed before its confirmed position never come through it.
 */
async function adoptSlot(
  client: pg.Client,
  names: ReplicationNames,
  outbox: string,
  confirmedFlushLsn: Lsn,
): Promise<SlotAdoption> {
  const position = Lsn.format(confirmedFlushLsn);
  const counted = await client.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${outbox}`);
  const outboxRows = Number(counted.rows[0]?.n ?? 0);
  await client.query(
    'INSERT INTO sluice.relay_slots (slot_name, created_at_lsn, snapshot_done) VALUES ($1, $2, true) ON CONFLICT DO NOTHING',
    [names.slot, position],
  );
  const slot = pg.escapeIdentifier(names.slot);
  const adopted = `Adopted replication slot ${slot}, which no relay created: it streams from its confirmed position ${position}`;
  if (outboxRows === 0) {
    return {
      outboxRows,
      warning: `${adopted}; ${outbox} was empty, so no outbox row predates it.`,
    };
  }
  const literal = pg.escapeLiteral(names.slot);
  return {
    outboxRows,
    warning:
      `${adopted}, and outbox rows committed before that are not published by the relay: ` +
      `${outboxRows} rows of ${outbox} may predate it. Reconcile them with the topics, or let the relay ` +
      'create its own slot, which publishes every outbox row from a snapshot first (rows already in Kafka ' +
      `are sent again; consumers deduplicate): stop the relay, run SELECT pg_drop_replication_slot(${literal}); ` +
      `DELETE FROM sluice.relay_slots WHERE slot_name = ${literal}; and start it again.`,
  };
}

/**
 * Creates the slot over a replication connection with an exported snapshot, and hands out the
 * outbox rows visible in it: exactly those committed before the slot's consistent point.
 */
async function createSlotWithSnapshot(
  connectionString: string,
  client: pg.Client,
  names: ReplicationNames,
  outbox: string,
): Promise<SlotState> {
  const replication = new pg.Client({
    connectionString,
    replication: 'database',
    connectionTimeoutMillis: BOUNDED.connectionTimeoutMillis,
    keepAlive: true,
  } as pg.ClientConfig);
  replication.on('error', () => undefined);
  await replication.connect();
  const reader = new pg.Client({
    connectionString,
    application_name: 'sluice-relay-snapshot',
    ...BOUNDED,
  });
  reader.on('error', () => undefined);
  const release = async () => {
    await reader.end().catch(() => undefined);
    await replication.end().catch(() => undefined);
  };
  try {
    // Registered before it exists: a crash after creating the slot is then recognised as an
    // unfinished set-up, not adopted as a slot whose earlier rows were published.
    await client.query(
      'INSERT INTO sluice.relay_slots (slot_name, snapshot_done) VALUES ($1, false) ON CONFLICT DO NOTHING',
      [names.slot],
    );
    const created = await replication.query<{ consistent_point: string; snapshot_name: string }>(
      `CREATE_REPLICATION_SLOT ${pg.escapeIdentifier(names.slot)} LOGICAL pgoutput EXPORT_SNAPSHOT`,
    );
    const slot = created.rows[0];
    if (slot === undefined)
      throw new SluiceError<RelayErrorCode>(
        'slot_create_failed',
        `Creating slot ${names.slot} returned nothing`,
      );
    await client.query('UPDATE sluice.relay_slots SET created_at_lsn = $2 WHERE slot_name = $1', [
      names.slot,
      slot.consistent_point,
    ]);
    await reader.connect();
    // The exported snapshot lives while the replication connection stays open and idle.
    await reader.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    await reader.query(`SET TRANSACTION SNAPSHOT ${pg.escapeLiteral(slot.snapshot_name)}`);
    const consistentPoint = Lsn.parse(slot.consistent_point);
    return {
      created: true,
      confirmedFlushLsn: consistentPoint,
      initialSnapshot: {
        consistentPoint,
        async *batches(batchSize) {
          await reader.query(
            // Qualified on purpose: a bare ORDER BY name binds to the output column first, and
            // the output aggregate_version is text (1, 10, 100, 11, …, 2).
            `DECLARE snapshot_rows NO SCROLL CURSOR FOR
               SELECT ${outboxTextColumns('o')}
                 FROM ${outbox} o ORDER BY o.aggregate_type, o.aggregate_id, o.aggregate_version`,
          );
          for (;;) {
            const { rows } = await reader.query<Record<string, string | null>>(
              `FETCH ${batchSize} FROM snapshot_rows`,
            );
            if (rows.length === 0) return;
            yield rows;
          }
        },
        async done() {
          await release();
          await withClient(connectionString, (admin) =>
            admin.query('UPDATE sluice.relay_slots SET snapshot_done = true WHERE slot_name = $1', [
              names.slot,
            ]),
          );
        },
        abandon: release,
      },
    };
  } catch (error) {
    await release();
    throw error;
  }
}

/**
 * Publishes a new slot's initial snapshot through `sink`, then records it as done. On failure
 * the snapshot is abandoned; the next start makes a fresh slot and snapshot.
 */
export async function publishInitialSnapshot(
  snapshot: InitialSnapshot,
  sink: EventSink,
  options: {
    batchSize?: number;
    onPublished?: (events: readonly OutgoingEvent[]) => void;
    /** Abandons the snapshot between batches (a stop request); the next start redoes it. */
    signal?: AbortSignal;
  } = {},
): Promise<number> {
  let published = 0;
  try {
    for await (const rows of snapshot.batches(options.batchSize ?? 5000)) {
      if (options.signal?.aborted === true) {
        throw new SluiceError<RelayErrorCode>(
          'snapshot_aborted',
          'Stopped while publishing the initial snapshot',
        );
      }
      const events = rows.map((row) => ({
        event: outboxRowToEvent(row),
        commitLsn: snapshot.consistentPoint,
      }));
      await sink.publish(events);
      options.onPublished?.(events);
      published += rows.length;
    }
  } catch (error) {
    await snapshot.abandon();
    throw error;
  }
  await snapshot.done();
  return published;
}

/** The slot's health: lag, WAL status, safe size. */
export async function inspectSlot(
  client: pg.ClientBase | pg.Pool,
  slot: string,
): Promise<SlotHealth> {
  const { rows } = await client.query<{
    active: boolean;
    wal_status: string | null;
    lag: string | null;
    safe_wal_size: string | null;
    confirmed_flush_lsn: string | null;
  }>(
    `SELECT active, wal_status, safe_wal_size::text,
            (pg_current_wal_lsn() - confirmed_flush_lsn)::text AS lag, confirmed_flush_lsn::text
       FROM pg_replication_slots WHERE slot_name = $1`,
    [slot],
  );
  const row = rows[0];
  if (row === undefined) {
    return {
      exists: false,
      active: false,
      walStatus: null,
      lagBytes: 0,
      safeWalSizeBytes: null,
      confirmedFlushLsn: null,
    };
  }
  return {
    exists: true,
    active: row.active,
    walStatus: row.wal_status,
    lagBytes: Number(row.lag ?? 0),
    safeWalSizeBytes: row.safe_wal_size === null ? null : Number(row.safe_wal_size),
    confirmedFlushLsn: row.confirmed_flush_lsn === null ? null : Lsn.parse(row.confirmed_flush_lsn),
  };
}

/** Prefix of the relay's heartbeat messages in the WAL. */
export const HEARTBEAT_PREFIX = 'sluice_heartbeat';

/**
 * Writes a transactional logical message, so the slot has something to confirm even when the
 * outbox is idle (a non-transactional one is not redelivered after a restart).
 */
export async function emitHeartbeat(client: pg.ClientBase | pg.Pool): Promise<void> {
  await client.query('SELECT pg_logical_emit_message(true, $1, now()::text)', [HEARTBEAT_PREFIX]);
}

import { SluiceError } from '@sluice/errors';
import pg from 'pg';
import type { RelayErrorCode } from './errors.js';
import { Lsn } from './lsn.js';
import { withClient } from './pg-client.js';
import { ensurePublication, outboxTable, type ReplicationNames } from './publication.js';
import {
  ensureRelayTables,
  findRegistration,
  forgetSlot,
  registerAdoptedSlot,
  type SlotRegistration,
} from './slot-registry.js';
import { createSlotWithSnapshot, type InitialSnapshot } from './snapshot.js';

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

interface SlotRow {
  plugin: string;
  database: string;
  active: boolean;
  wal_status: string | null;
  confirmed_flush_lsn: string | null;
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
    const outbox = outboxTable(names);
    await ensurePublication(client, names, outbox);
    const found = await findSlot(client, names.slot);
    const record = await findRegistration(client, names.slot);
    const row = await reusableSlot(client, names.slot, found, record);
    if (row === undefined) {
      const snapshot = await createSlotWithSnapshot(connectionString, client, names, outbox);
      return {
        created: true,
        confirmedFlushLsn: snapshot.consistentPoint,
        initialSnapshot: snapshot,
      };
    }
    const confirmedFlushLsn = await checkSlot(client, names.slot, row);
    if (record !== undefined) return { created: false, confirmedFlushLsn };
    return {
      created: false,
      confirmedFlushLsn,
      adopted: await adoptSlot(client, names, outbox, confirmedFlushLsn),
    };
  });
}

/**
 * The slot to stream from, or undefined when a new one must be made.
 *
 * @throws SluiceError `slot_busy`, `slot_missing`
 */
async function reusableSlot(
  client: pg.Client,
  slot: string,
  row: SlotRow | undefined,
  record: SlotRegistration | undefined,
): Promise<SlotRow | undefined> {
  if (record !== undefined && !record.snapshot_done) {
    // A relay died while creating the slot or publishing its initial snapshot: nothing was
    // streamed from this slot yet, so a fresh slot and snapshot lose nothing. The row goes
    // last, so a crash in between is met here again, never taken for a lost slot.
    if (row?.active === true) {
      throw new SluiceError<RelayErrorCode>(
        'slot_busy',
        `Slot ${slot} is still being set up by another process`,
        {
          retriable: true,
        },
      );
    }
    if (row !== undefined) await client.query('SELECT pg_drop_replication_slot($1)', [slot]);
    await forgetSlot(client, slot);
    return undefined;
  }
  if (row === undefined && record !== undefined) throw slotMissing(slot, record);
  return row;
}

/** The slot named `slot` as PostgreSQL lists it; undefined when there is none. */
export async function findSlot(client: pg.Client, slot: string): Promise<SlotRow | undefined> {
  const { rows } = await client.query<SlotRow>(
    `SELECT plugin, database, active, wal_status, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`,
    [slot],
  );
  return rows[0];
}

/** A slot this relay created and published from is gone: events may have been missed. */
export function slotMissing(slot: string, record: SlotRegistration): SluiceError<RelayErrorCode> {
  return new SluiceError<RelayErrorCode>(
    'slot_missing',
    `Replication slot ${slot} was dropped (created ${record.created_at.toISOString()} at ${record.created_at_lsn ?? 'unknown LSN'}). ` +
      'Outbox events committed since it was last read may never have reached Kafka. Reconcile them ' +
      `(compare the outbox with the topics), then accept the gap with ` +
      `DELETE FROM sluice.relay_slots WHERE slot_name = '${slot}' and start the relay again.`,
  );
}

/**
 * The position an existing slot streams from.
 *
 * @throws SluiceError `slot_mismatch`, `slot_lost`
 */
export async function checkSlot(client: pg.Client, slot: string, row: SlotRow): Promise<Lsn> {
  const database = (await client.query<{ db: string }>('SELECT current_database() AS db')).rows[0]
    ?.db;
  if (row.plugin !== 'pgoutput' || row.database !== database) {
    throw new SluiceError<RelayErrorCode>(
      'slot_mismatch',
      `Replication slot ${slot} uses plugin ${row.plugin} on database ${row.database}; the relay needs pgoutput on ${database}.`,
    );
  }
  if (row.wal_status === 'lost' || row.confirmed_flush_lsn === null) {
    throw new SluiceError<RelayErrorCode>(
      'slot_lost',
      `Replication slot ${slot} is lost (wal_status=${row.wal_status ?? 'null'}): PostgreSQL removed WAL it still needed, ` +
        'so outbox events may never have reached Kafka. Reconcile shop.outbox with the topics, then drop the slot and ' +
        `DELETE FROM sluice.relay_slots WHERE slot_name = '${slot}' to start over.`,
    );
  }
  return Lsn.parse(row.confirmed_flush_lsn);
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
  await registerAdoptedSlot(client, names.slot, position);
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

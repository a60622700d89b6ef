import type pg from 'pg';
import { Lsn } from './lsn.js';

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

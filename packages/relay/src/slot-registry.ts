// sluice.relay_slots: the slots a relay created or adopted, and whether a new slot's initial
// snapshot was published. A slot that is registered but gone was lost, not never made. Also
// creates the other tables the relay writes (claim checks, published events).
import { CLAIM_CHECKS_TABLE } from '@sluice/outbox/claim-checks';
import type pg from 'pg';
import { PUBLISHED_EVENTS_TABLE } from './published-events.js';

export interface SlotRegistration {
  created_at: Date;
  created_at_lsn: string | null;
  snapshot_done: boolean;
}

/**
 * True when the relay's tables exist in their current shape: then it runs no DDL, so a role
 * that may write them but not create them (an administrator created them) starts as well.
 */
const RELAY_TABLES_READY = `
  SELECT to_regclass('sluice.relay_slots') IS NOT NULL
     AND to_regclass('sluice.claim_checks') IS NOT NULL
     AND to_regclass('sluice.published_events') IS NOT NULL
     AND NOT EXISTS (SELECT 1 FROM pg_attribute
                      WHERE attrelid = to_regclass('sluice.published_events')
                        AND attname = 'event_id' AND NOT attisdropped) AS ready`;

export async function ensureRelayTables(client: pg.Client): Promise<void> {
  const schema = await client.query<{ found: boolean }>(
    `SELECT to_regnamespace('sluice') IS NOT NULL AS found`,
  );
  if (schema.rows[0]?.found === true) {
    const tables = await client.query<{ ready: boolean }>(RELAY_TABLES_READY);
    if (tables.rows[0]?.ready === true) return;
  } else {
    await client.query('CREATE SCHEMA IF NOT EXISTS sluice');
  }
  await client.query(`
    CREATE TABLE IF NOT EXISTS sluice.relay_slots (
      slot_name text PRIMARY KEY,
      created_at timestamptz NOT NULL DEFAULT now(),
      created_at_lsn pg_lsn,
      snapshot_done boolean NOT NULL DEFAULT false
    )`);
  await client.query(CLAIM_CHECKS_TABLE);
  await client.query(PUBLISHED_EVENTS_TABLE);
}

export async function findRegistration(
  client: pg.Client,
  slot: string,
): Promise<SlotRegistration | undefined> {
  const { rows } = await client.query<SlotRegistration>(
    'SELECT created_at, created_at_lsn::text, snapshot_done FROM sluice.relay_slots WHERE slot_name = $1',
    [slot],
  );
  return rows[0];
}

/** Registers a slot about to be created, its snapshot not yet published. */
export async function registerNewSlot(client: pg.Client, slot: string): Promise<void> {
  await client.query(
    'INSERT INTO sluice.relay_slots (slot_name, snapshot_done) VALUES ($1, false) ON CONFLICT DO NOTHING',
    [slot],
  );
}

export async function recordConsistentPoint(
  client: pg.Client,
  slot: string,
  consistentPoint: string,
): Promise<void> {
  await client.query('UPDATE sluice.relay_slots SET created_at_lsn = $2 WHERE slot_name = $1', [
    slot,
    consistentPoint,
  ]);
}

export async function recordSnapshotDone(client: pg.Client, slot: string): Promise<void> {
  await client.query('UPDATE sluice.relay_slots SET snapshot_done = true WHERE slot_name = $1', [
    slot,
  ]);
}

/** Registers an existing slot as it is, at its confirmed position, with nothing to snapshot. */
export async function registerAdoptedSlot(
  client: pg.Client,
  slot: string,
  position: string,
): Promise<void> {
  await client.query(
    'INSERT INTO sluice.relay_slots (slot_name, created_at_lsn, snapshot_done) VALUES ($1, $2, true) ON CONFLICT DO NOTHING',
    [slot, position],
  );
}

export async function forgetSlot(client: pg.Client, slot: string): Promise<void> {
  await client.query('DELETE FROM sluice.relay_slots WHERE slot_name = $1', [slot]);
}

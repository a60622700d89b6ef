import { isSluiceError, type SluiceError } from '@sluice/errors';
import type pg from 'pg';
import { checkPublication, outboxTable, type ReplicationNames } from './publication.js';
import { findRegistration } from './slot-registry.js';
import { checkSlot, findSlot, slotMissing } from './slots.js';

/**
 * What `prepareReplication` would refuse, found without creating or changing anything: a
 * publication that hides outbox inserts, and a slot that is lost, of another plugin or
 * database, or dropped after a relay created it. One error per problem, none when a start would
 * go ahead. The outbox table must exist.
 *
 * @example
 * for (const problem of await replicationProblems(client, names)) console.error(problem.message);
 */
export async function replicationProblems(
  client: pg.Client,
  names: ReplicationNames,
): Promise<SluiceError[]> {
  const problems = [
    await refusal(() => checkPublication(client, names, outboxTable(names))),
    await refusal(() => checkExistingSlot(client, names.slot)),
  ];
  return problems.filter((problem) => problem !== undefined);
}

/** The SluiceError `check` refuses with, if any; other errors pass on. */
async function refusal(check: () => Promise<unknown>): Promise<SluiceError | undefined> {
  try {
    await check();
    return undefined;
  } catch (error) {
    if (isSluiceError(error)) return error;
    throw error;
  }
}

/** @throws SluiceError `slot_mismatch`, `slot_lost`, `slot_missing` */
async function checkExistingSlot(client: pg.Client, slot: string): Promise<void> {
  const row = await findSlot(client, slot);
  if (row !== undefined) {
    await checkSlot(client, slot, row);
    return;
  }
  // The registry is created by the first start; before it, no relay made a slot to miss.
  const registry = await client.query<{ found: boolean }>(
    `SELECT to_regclass('sluice.relay_slots') IS NOT NULL AS found`,
  );
  if (registry.rows[0]?.found !== true) return;
  const record = await findRegistration(client, slot);
  if (record?.snapshot_done === true) throw slotMissing(slot, record);
}

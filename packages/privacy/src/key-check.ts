import { SluiceError } from '@sluice/errors';
import type { PrivacyErrorCode } from './errors.js';
import type { MasterKeys } from './master-key.js';
import type { Queryable } from './subject-keys.js';

/**
 * The ids of the master keys that wrap subject keys in `db` and are neither `keys.current` nor
 * `keys.previous`, sorted; none while `sluice.subject_keys` does not exist yet.
 */
export async function unknownMasterKeyIds(db: Queryable, keys: MasterKeys): Promise<string[]> {
  const { rows } = await db.query(
    "SELECT to_regclass('sluice.subject_keys') IS NOT NULL AS present",
  );
  if ((rows[0] as { present: boolean } | undefined)?.present !== true) return [];
  const { rows: wrapping } = await db.query(
    'SELECT DISTINCT master_key_id FROM sluice.subject_keys WHERE wrapped_key IS NOT NULL',
  );
  const known = new Set([keys.current.id, keys.previous?.id]);
  return wrapping
    .map((row) => (row as { master_key_id: string }).master_key_id)
    .filter((id) => !known.has(id))
    .sort();
}

/**
 * Checks, before a service reads or writes personal data, that every subject key in `db` is
 * wrapped by a master key it was given: a key missing from a rotation is a setting to fix, not
 * data to set aside event by event.
 *
 * @throws SluiceError `config_invalid` naming the unknown master key ids (never key material)
 *   and the settings to fix
 * @example await assertMasterKeysKnown(pool, loadMasterKeys(config));
 */
export async function assertMasterKeysKnown(db: Queryable, keys: MasterKeys): Promise<void> {
  const unknown = await unknownMasterKeyIds(db, keys);
  if (unknown.length === 0) return;
  const previous = keys.previous === undefined ? 'unset' : `master key ${keys.previous.id}`;
  throw new SluiceError<PrivacyErrorCode>(
    'config_invalid',
    `Subject keys in sluice.subject_keys are wrapped by master key ${unknown.join(', ')}, ` +
      `neither SLUICE_MASTER_KEY_FILE (or SLUICE_MASTER_KEY: master key ${keys.current.id}) ` +
      `nor SLUICE_MASTER_KEY_PREVIOUS_FILE (${previous}): set the master key that wrapped them, ` +
      'or during a rotation the one being replaced as SLUICE_MASTER_KEY_PREVIOUS_FILE',
  );
}

// The master key check of a projector's start and of `sluice-projector --check`.
import {
  assertMasterKeysKnown,
  loadMasterKeys,
  protectedFieldsOf,
  type MasterKeySettingValues,
} from '@sluice/privacy';
import type { Projection } from '@sluice/projector';
import { CompiledQuery, type Kysely } from 'kysely';
import { revealing } from './privacy.js';

type Events = Parameters<typeof protectedFieldsOf>[0];

/**
 * Whether one of `projections` opens personal fields (`personalData: 'reveal'`) its catalog
 * protects (`x-sluice-protected`), and so needs the master key.
 */
export function opensPersonalData(projections: readonly Projection[]): boolean {
  return revealing(projections).some((projection) => {
    const events = (projection.catalog as { events?: Events }).events ?? {};
    return Object.keys(protectedFieldsOf(events)).length > 0;
  });
}

/**
 * When one of `projections` opens personal fields: loads the master keys of `settings` and
 * checks that they unwrap every subject key in `db` (see `assertMasterKeysKnown`).
 *
 * @throws SluiceError `config_invalid` naming the settings to fix
 */
export async function checkMasterKeys(
  settings: MasterKeySettingValues,
  projections: readonly Projection[],
  db: Kysely<unknown>,
): Promise<void> {
  if (!opensPersonalData(projections)) return;
  const keys = loadMasterKeys(settings);
  const queryable = {
    query: (text: string, values: unknown[] = []) =>
      db.executeQuery(CompiledQuery.raw(text, values)),
  };
  await assertMasterKeysKnown(queryable, keys);
}

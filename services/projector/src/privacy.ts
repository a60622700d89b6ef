import type { BatchSql, Projection, Reveal } from '@sluice/projector';
import {
  createPrivacy,
  loadMasterKeys,
  protectedFieldsOf,
  type MasterKeySettingValues,
  type PrivacyReader,
  type ProtectedFields,
} from '@sluice/privacy';

type Events = Parameters<typeof protectedFieldsOf>[0];

/**
 * The projections of `projections` that receive personal fields opened (`personalData:
 * 'reveal'`); the others get them sealed, as published, and need no master key.
 */
export function revealing(projections: readonly Projection[]): readonly Projection[] {
  return projections.filter((projection) => projection.personalData === 'reveal');
}

/** The personal fields the catalogs of `projections` annotate (`x-sluice-protected`). */
function protectedFieldsOfAll(projections: readonly Projection[]): ProtectedFields {
  const catalogs = projections.map((p) => (p.catalog as { events?: Events }).events ?? {});
  return Object.assign({}, ...catalogs.map(protectedFieldsOf)) as ProtectedFields;
}

/**
 * What opens sealed personal fields for the projections of `projections` that opt in (see
 * {@link revealing}), with the master key of `settings`; none when none does or their catalogs
 * protect no field. The projector hands it only the events of those projections.
 *
 * @throws SluiceError `config_invalid` when a field is protected and the master key is missing or invalid
 */
export function revealerFor(
  projections: readonly Projection[],
  settings: MasterKeySettingValues,
): Reveal | undefined {
  const fields = protectedFieldsOfAll(revealing(projections));
  if (Object.keys(fields).length === 0) return undefined;
  const privacy = createPrivacy({ keys: loadMasterKeys(settings), fields });
  // A reader per batch: each subject's key read once in the batch's transaction, and forgotten
  // with it, so that no read outlives an erasure.
  const readers = new WeakMap<BatchSql, PrivacyReader>();
  return async (event, sql) => {
    let reader = readers.get(sql);
    if (reader === undefined) readers.set(sql, (reader = privacy.reader(sql)));
    return { ...event, payload: await reader.revealPayload(event.type, event.payload) };
  };
}

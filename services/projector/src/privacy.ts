import type { Projection, Reveal } from '@sluice/projector';
import {
  createPrivacy,
  loadMasterKeys,
  protectedFieldsOf,
  type ProtectedFields,
} from '@sluice/privacy';

type Events = Parameters<typeof protectedFieldsOf>[0];

/** The personal fields the catalogs of `projections` annotate (`x-sluice-protected`). */
function protectedFieldsOfAll(projections: readonly Projection[]): ProtectedFields {
  const catalogs = projections.map((p) => (p.catalog as { events?: Events }).events ?? {});
  return Object.assign({}, ...catalogs.map(protectedFieldsOf)) as ProtectedFields;
}

/**
 * What opens sealed personal fields for `projections`, with the master key of `env`; none when
 * their catalogs protect no field.
 *
 * @throws SluiceError `config_invalid` when a field is protected and the master key is missing or invalid
 */
export function revealerFor(
  projections: readonly Projection[],
  env: NodeJS.ProcessEnv,
): Reveal | undefined {
  const fields = protectedFieldsOfAll(projections);
  if (Object.keys(fields).length === 0) return undefined;
  const privacy = createPrivacy({ keys: loadMasterKeys(env), fields });
  return async (event, sql) => ({
    ...event,
    payload: await privacy.revealPayload(sql, event.type, event.payload),
  });
}

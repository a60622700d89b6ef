import { Type } from '@sinclair/typebox';

/**
 * The master key settings of a service that seals or reveals personal data, with what each
 * means; spread into its config schema and read with `loadMasterKeys(config)`, which refuses
 * `SLUICE_MASTER_KEY_FILE` and `SLUICE_MASTER_KEY` together.
 *
 * @example const schema = Type.Object({ ...commonConfig, ...masterKeySettings, API_PORT: … });
 */
export const masterKeySettings = {
  SLUICE_MASTER_KEY_FILE: Type.Optional(
    Type.String({
      minLength: 1,
      description:
        'A file holding the master key of personal data (32 bytes: base64 or 64 hex characters); ' +
        "required by shop-api, and by a projector whose projections' catalogs protect fields.",
    }),
  ),
  SLUICE_MASTER_KEY: Type.Optional(
    Type.String({
      minLength: 1,
      description: 'The master key itself, instead of SLUICE_MASTER_KEY_FILE (not with it).',
    }),
  ),
  SLUICE_MASTER_KEY_PREVIOUS_FILE: Type.Optional(
    Type.String({
      minLength: 1,
      description:
        'During a rotation: the file of the master key being replaced (see sluice-keys rewrap).',
    }),
  ),
};

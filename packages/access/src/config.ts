import { Type, type Static } from '@sinclair/typebox';
import type { AccessOptions } from './access.js';

/**
 * The access settings, all optional; spread into a service's config schema.
 *
 * @example const schema = Type.Object({ ...commonConfig, ...accessConfigSchema, API_PORT: … });
 */
export const accessConfigSchema = {
  SLUICE_ACCESS_SECRET: Type.Optional(
    Type.String({
      minLength: 32,
      description:
        'Secret (32 characters or more, e.g. `openssl rand -base64 48`) signing the HS256 tokens ' +
        'Sluice issues itself: console sessions and service tokens. The same in every service.',
    }),
  ),
  SLUICE_ACCESS_JWKS_URL: Type.Optional(
    Type.String({
      format: 'uri',
      description:
        'JWKS URL of an identity provider whose tokens are accepted (with SLUICE_ACCESS_ISSUER and SLUICE_ACCESS_AUDIENCE).',
    }),
  ),
  SLUICE_ACCESS_ISSUER: Type.Optional(
    Type.String({
      minLength: 1,
      description: "The identity provider's tokens' issuer (iss), exactly.",
    }),
  ),
  SLUICE_ACCESS_AUDIENCE: Type.Optional(
    Type.String({
      minLength: 1,
      description: "The audience (aud) the identity provider's tokens for Sluice carry.",
    }),
  ),
  SLUICE_ACCESS_ROLE_CLAIM: Type.Optional(
    Type.String({
      minLength: 1,
      description:
        "Claim of the identity provider's tokens holding the role: a string or an array containing operator or viewer. Default sluice_role.",
    }),
  ),
  SLUICE_ACCESS_USERS_FILE: Type.Optional(
    Type.String({
      minLength: 1,
      description:
        'Users who sign in with a password: JSON lines {"name","role","passwordHash"} (lines from `sluice-access hash-password`).',
    }),
  ),
};

/** The access settings' values. */
export type AccessConfig = Static<ReturnType<typeof Type.Object<typeof accessConfigSchema>>>;

/**
 * The {@link AccessOptions} the settings give (empty when none are set).
 *
 * @example const access = createAccess(accessOptionsOf(config));
 */
export function accessOptionsOf(config: Readonly<AccessConfig>): AccessOptions {
  const options: AccessOptions = {};
  if (config.SLUICE_ACCESS_SECRET !== undefined) options.secret = config.SLUICE_ACCESS_SECRET;
  if (config.SLUICE_ACCESS_JWKS_URL !== undefined) options.jwksUrl = config.SLUICE_ACCESS_JWKS_URL;
  if (config.SLUICE_ACCESS_ISSUER !== undefined) options.issuer = config.SLUICE_ACCESS_ISSUER;
  if (config.SLUICE_ACCESS_AUDIENCE !== undefined) options.audience = config.SLUICE_ACCESS_AUDIENCE;
  if (config.SLUICE_ACCESS_ROLE_CLAIM !== undefined) {
    options.roleClaim = config.SLUICE_ACCESS_ROLE_CLAIM;
  }
  if (config.SLUICE_ACCESS_USERS_FILE !== undefined) {
    options.usersFile = config.SLUICE_ACCESS_USERS_FILE;
  }
  return options;
}

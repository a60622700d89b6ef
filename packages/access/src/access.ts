import { SluiceError } from '@sluice/errors';
import { readUsers, type UserDirectory } from './passwords.js';
import { ownTokens, providerTokens, tokenAlgorithm, type TokenVerifier } from './tokens.js';

/** What a principal may do: `viewer` reads, `operator` reads and acts. */
export type Role = 'viewer' | 'operator';

/** Who a verified credential belongs to. */
export interface Principal {
  /** The token's `sub`, or the user's name: recorded as the actor of what they do. */
  subject: string;
  role: Role;
}

/** The codes of the SluiceErrors this package throws. */
export type AccessErrorCode = 'access_denied' | 'access_unavailable' | 'access_config_invalid';

/** Where credentials come from; set at least one of `secret`, `jwksUrl` and `usersFile`. */
export interface AccessOptions {
  /** HS256 secret (>= 32 bytes) for the tokens Sluice issues itself (console sessions, service tokens). */
  secret?: string;
  /**
   * An identity provider's tokens: JWKS URL, issuer, audience (all three required); the role
   * comes from claim `roleClaim` (default 'sluice_role', a string or array containing
   * 'operator'/'viewer').
   */
  jwksUrl?: string;
  issuer?: string;
  audience?: string;
  roleClaim?: string;
  /**
   * Users file: JSON lines or a JSON array of { "name", "role", "passwordHash" } where
   * passwordHash is `scrypt$<N>$<r>$<p>$<salt b64>$<hash b64>` (see {@link hashPassword}).
   * Read once, by {@link createAccess}.
   */
  usersFile?: string;
}

/** Checks credentials; made by {@link createAccess}. */
export interface Access {
  /**
   * Verifies a bearer token (own HS256 or the provider's).
   *
   * @throws SluiceError `access_denied` (bad, expired, forged, unknown role); `access_unavailable`
   *   (retriable) when the identity provider's keys cannot be fetched
   */
  verifyToken(token: string): Promise<Principal>;
  /**
   * Checks a user's password from the users file, in constant time.
   *
   * @throws SluiceError `access_denied` without saying which part was wrong
   */
  checkPassword(name: string, password: string): Promise<Principal>;
  /**
   * Issues an HS256 token for `principal` valid `ttlSeconds`.
   *
   * @throws SluiceError `access_config_invalid` without `secret`
   */
  issueToken(principal: Principal, ttlSeconds: number): Promise<string>;
}

const MIN_SECRET_BYTES = 32;

/** The error every refused credential gets; `reason` is for logs, never for the caller. */
export function accessDenied(reason: string, cause?: unknown): SluiceError<AccessErrorCode> {
  return new SluiceError<AccessErrorCode>(
    'access_denied',
    `Access denied: ${reason}`,
    cause === undefined ? {} : { cause },
  );
}

/** An `access_config_invalid` error. */
export function configInvalid(message: string): SluiceError<AccessErrorCode> {
  return new SluiceError<AccessErrorCode>('access_config_invalid', message);
}

function checkOptions(options: AccessOptions): void {
  const { secret, jwksUrl, usersFile } = options;
  if (secret === undefined && jwksUrl === undefined && usersFile === undefined) {
    throw configInvalid(
      'No credentials configured: set a secret (SLUICE_ACCESS_SECRET), an identity provider ' +
        '(SLUICE_ACCESS_JWKS_URL) or a users file (SLUICE_ACCESS_USERS_FILE)',
    );
  }
  if (secret !== undefined && Buffer.byteLength(secret) < MIN_SECRET_BYTES) {
    throw configInvalid(
      `The access secret must be at least ${MIN_SECRET_BYTES} bytes (is ${Buffer.byteLength(secret)}); ` +
        'make one with `openssl rand -base64 48`',
    );
  }
}

/** The verifier of the provider's tokens, when `options` name a provider. */
function providerOf(options: AccessOptions): TokenVerifier | undefined {
  const { jwksUrl, issuer, audience } = options;
  if (jwksUrl === undefined) return undefined;
  if (issuer === undefined || audience === undefined) {
    throw configInvalid(
      "An identity provider's tokens need its issuer and the audience Sluice's tokens carry " +
        '(SLUICE_ACCESS_ISSUER, SLUICE_ACCESS_AUDIENCE)',
    );
  }
  if (!URL.canParse(jwksUrl)) throw configInvalid(`The JWKS URL is not a URL: ${jwksUrl}`);
  return providerTokens({
    jwksUrl: new URL(jwksUrl),
    issuer,
    audience,
    roleClaim: options.roleClaim ?? 'sluice_role',
  });
}

/**
 * Access control over the credentials `options` configure: Sluice's own HS256 tokens, an
 * identity provider's tokens (fetched JWKS), and users with scrypt passwords.
 *
 * @throws SluiceError `access_config_invalid` when nothing is configured, the secret is short,
 *   the provider lacks issuer or audience, or the users file is unreadable or malformed
 * @example
 * const access = createAccess({ secret: process.env.SLUICE_ACCESS_SECRET });
 * const token = await access.issueToken({ subject: 'ada', role: 'operator' }, 3600);
 * const principal = await access.verifyToken(token); // { subject: 'ada', role: 'operator' }
 */
export function createAccess(options: AccessOptions): Access {
  checkOptions(options);
  const own = options.secret === undefined ? undefined : ownTokens(options.secret);
  const provider = providerOf(options);
  const users: UserDirectory = readUsers(options.usersFile);
  return {
    async verifyToken(token) {
      const verifier = tokenAlgorithm(token) === 'HS256' ? own : provider;
      if (verifier === undefined) throw accessDenied('no key configured for this kind of token');
      return verifier.verify(token);
    },
    checkPassword: (name, password) => users.check(name, password),
    async issueToken(principal, ttlSeconds) {
      if (own === undefined) throw configInvalid('Issuing tokens needs the access secret');
      return own.issue(principal, ttlSeconds);
    },
  };
}

import { SluiceError } from '@sluice/errors';
import { SignJWT, createRemoteJWKSet, decodeProtectedHeader, type JWTVerifyGetKey } from 'jose';
import {
  accessDenied,
  configInvalid,
  type AccessErrorCode,
  type Principal,
  type Role,
} from './access.js';
import { JwtRefusal, SUBJECT, verifyJwt, type JwtChecks, type VerifiedClaims } from './jwt.js';

/** Checks one kind of token. */
export interface TokenVerifier {
  verify(token: string): Promise<Principal>;
}

// Sluice's own tokens name Sluice as issuer and audience, so no other HS256 token signed with a
// reused secret passes for one.
const OWN = { issuer: 'sluice', audience: 'sluice', roleClaim: 'sluice_role' } as const;
// A request header is at most 16 KiB anyway; longer tokens are not parsed at all.
const MAX_TOKEN_CHARS = 16_384;
const PROVIDER_ALGORITHMS = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
];

/**
 * The `alg` of a token's protected header.
 *
 * @throws SluiceError `access_denied` when it is not a JWS compact token of a sane size
 */
export function tokenAlgorithm(token: string): string {
  if (token.length > MAX_TOKEN_CHARS) throw accessDenied('the token is too long');
  try {
    return String(decodeProtectedHeader(token).alg);
  } catch (error) {
    throw accessDenied('the token is not a signed JWT', error);
  }
}

/** The role a claim value grants: the highest of the roles it names. */
function roleOf(value: unknown): Role | undefined {
  const names: unknown[] = Array.isArray(value) ? value : [value];
  if (names.includes('operator')) return 'operator';
  if (names.includes('viewer')) return 'viewer';
  return undefined;
}

/** Why a token was refused, as an access error; `keySet` when the keys are fetched from it. */
function accessError(refusal: JwtRefusal, keySet: URL | undefined): SluiceError<AccessErrorCode> {
  if (refusal.code !== 'keys_unavailable') return accessDenied(refusal.reason, refusal.cause);
  return new SluiceError<AccessErrorCode>(
    'access_unavailable',
    `The identity provider's keys (${keySet?.href ?? ''}) cannot be fetched`,
    { cause: refusal.cause, retriable: true },
  );
}

interface Checks extends JwtChecks {
  roleClaim: string;
  /** Where the keys come from, for a provider's tokens. */
  keySet?: URL;
}

async function verified(
  token: string,
  key: Uint8Array | JWTVerifyGetKey,
  { roleClaim, keySet, ...checks }: Checks,
): Promise<Principal> {
  let payload: VerifiedClaims;
  try {
    payload = await verifyJwt(token, key, checks);
  } catch (error) {
    if (error instanceof JwtRefusal) throw accessError(error, keySet);
    throw error;
  }
  const role = roleOf(payload[roleClaim]);
  if (role === undefined) throw accessDenied(`the token's ${roleClaim} claim names no Sluice role`);
  return { subject: payload.sub, role };
}

/** Sluice's own HS256 tokens: issued and verified with `secret`. */
export function ownTokens(secret: string): TokenVerifier & {
  issue(principal: Principal, ttlSeconds: number): Promise<string>;
} {
  const key = new TextEncoder().encode(secret);
  return {
    verify: (token) => verified(token, key, { ...OWN, algorithms: ['HS256'] }),
    issue(principal, ttlSeconds) {
      if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1) {
        throw configInvalid(`A token's ttlSeconds must be a positive integer (is ${ttlSeconds})`);
      }
      if (roleOf(principal.role) === undefined || !SUBJECT.test(principal.subject)) {
        throw configInvalid('A token needs a subject of 1 to 200 characters and a Sluice role');
      }
      return new SignJWT({ [OWN.roleClaim]: principal.role })
        .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
        .setSubject(principal.subject)
        .setIssuer(OWN.issuer)
        .setAudience(OWN.audience)
        .setIssuedAt()
        .setExpirationTime(Math.floor(Date.now() / 1000) + ttlSeconds)
        .sign(key);
    },
  };
}

/** An identity provider's tokens, checked against the keys its JWKS URL publishes. */
export function providerTokens(options: {
  jwksUrl: URL;
  issuer: string;
  audience: string;
  roleClaim: string;
}): TokenVerifier {
  const { jwksUrl, ...checks } = options;
  const keys = createRemoteJWKSet(jwksUrl);
  return {
    verify: (token) =>
      verified(token, keys, { ...checks, keySet: jwksUrl, algorithms: PROVIDER_ALGORITHMS }),
  };
}

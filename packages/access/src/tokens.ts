import { SluiceError } from '@sluice/errors';
import {
  SignJWT,
  createRemoteJWKSet,
  decodeProtectedHeader,
  errors,
  jwtVerify,
  type JWTPayload,
  type JWTVerifyGetKey,
  type JWTVerifyOptions,
} from 'jose';
import {
  accessDenied,
  configInvalid,
  type AccessErrorCode,
  type Principal,
  type Role,
} from './access.js';

/** Checks one kind of token. */
export interface TokenVerifier {
  verify(token: string): Promise<Principal>;
}

// Sluice's own tokens name Sluice as issuer and audience, so no other HS256 token signed with a
// reused secret passes for one.
const OWN = { issuer: 'sluice', audience: 'sluice', roleClaim: 'sluice_role' } as const;
// A request header is at most 16 KiB anyway; longer tokens are not parsed at all.
const MAX_TOKEN_CHARS = 16_384;
const CLOCK_TOLERANCE_S = 5;
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
const SUBJECT = /^[^\p{Cc}]{1,200}$/u;

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

function principalFromClaims(payload: JWTPayload, roleClaim: string): Principal {
  const subject = payload.sub;
  if (subject === undefined || !SUBJECT.test(subject)) {
    throw accessDenied('the token has no usable subject (sub)');
  }
  const role = roleOf(payload[roleClaim]);
  if (role === undefined) throw accessDenied(`the token's ${roleClaim} claim names no Sluice role`);
  return { subject, role };
}

/** Whether a failure was the provider's key set being out of reach, not the token. */
function keysUnreachable(error: unknown): boolean {
  return (
    error instanceof errors.JWKSTimeout ||
    error instanceof errors.JWKSInvalid ||
    !(error instanceof errors.JOSEError) ||
    error.code === 'ERR_JOSE_GENERIC'
  );
}

/** Why jose refused a token, in words for the log; `keySet` when the keys are fetched from it. */
function refusal(error: unknown, keySet: URL | undefined): SluiceError<AccessErrorCode> {
  if (keySet !== undefined && keysUnreachable(error)) {
    return new SluiceError<AccessErrorCode>(
      'access_unavailable',
      `The identity provider's keys (${keySet.href}) cannot be fetched`,
      { cause: error, retriable: true },
    );
  }
  if (error instanceof errors.JWTExpired) return accessDenied('the token has expired', error);
  if (error instanceof errors.JWTClaimValidationFailed) {
    return accessDenied(
      `the token's ${error.claim} claim is not accepted (${error.reason})`,
      error,
    );
  }
  if (error instanceof errors.JOSEError) return accessDenied(error.message, error);
  throw error;
}

interface Checks extends JWTVerifyOptions {
  roleClaim: string;
  /** Where the keys come from, for a provider's tokens. */
  keySet?: URL;
}

async function verified(
  token: string,
  key: Uint8Array | JWTVerifyGetKey,
  { roleClaim, keySet, ...checks }: Checks,
): Promise<Principal> {
  const options = { ...checks, requiredClaims: ['exp', 'sub'], clockTolerance: CLOCK_TOLERANCE_S };
  try {
    const { payload } =
      typeof key === 'function'
        ? await jwtVerify(token, key, options)
        : await jwtVerify(token, key, options);
    return principalFromClaims(payload, roleClaim);
  } catch (error) {
    if (error instanceof SluiceError) throw error;
    throw refusal(error, keySet);
  }
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

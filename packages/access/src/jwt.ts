import { errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';

/**
 * Why {@link verifyJwt} refused a token: `token_invalid` or `token_expired` for the token itself,
 * `keys_unavailable` when a key set could not be fetched (the verifier's problem, not the token's).
 */
export type JwtRefusalCode = 'token_invalid' | 'token_expired' | 'keys_unavailable';

/** A token {@link verifyJwt} refused; `reason` is a lower-case phrase that never quotes the token. */
export class JwtRefusal extends Error {
  constructor(
    readonly code: JwtRefusalCode,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(reason, options);
    this.name = 'JwtRefusal';
  }
}

/** What a token must satisfy besides its signature, `exp` and `sub`. */
export interface JwtChecks {
  /** The `alg`s accepted; anything else (`none` included) is refused. */
  algorithms: string[];
  issuer?: string | undefined;
  audience?: string | undefined;
}

/** A verified token's claims, with its subject. */
export type VerifiedClaims = JWTPayload & { sub: string };

const CLOCK_TOLERANCE_S = 5;
/** A usable subject: 1 to 200 characters, none of them a control character. */
export const SUBJECT = /^[^\p{Cc}]{1,200}$/u;

function keysUnreachable(error: unknown): boolean {
  return (
    error instanceof errors.JWKSTimeout ||
    error instanceof errors.JWKSInvalid ||
    !(error instanceof errors.JOSEError) ||
    error.code === 'ERR_JOSE_GENERIC'
  );
}

function refusalOf(error: unknown, keySet: boolean): JwtRefusal {
  const cause = { cause: error };
  if (keySet && keysUnreachable(error))
    return new JwtRefusal('keys_unavailable', 'the keys cannot be fetched', cause);
  if (error instanceof errors.JWTExpired)
    return new JwtRefusal('token_expired', 'the token has expired', cause);
  if (error instanceof errors.JWTClaimValidationFailed) {
    const reason = `the token's ${error.claim} claim is not accepted (${error.reason})`;
    return new JwtRefusal('token_invalid', reason, cause);
  }
  if (error instanceof errors.JOSEError)
    return new JwtRefusal('token_invalid', error.message, cause);
  throw error;
}

/**
 * Verifies a compact JWS token with `key` (a secret, or a key set such as jose's
 * `createRemoteJWKSet`): one of `checks.algorithms`, `exp` and a `sub` of 1 to 200 characters
 * without control characters required, issuer and audience when given, 5 s of clock tolerance.
 *
 * @throws JwtRefusal naming why; other errors only for bugs
 */
export async function verifyJwt(
  token: string,
  key: Uint8Array | JWTVerifyGetKey,
  checks: JwtChecks,
): Promise<VerifiedClaims> {
  const { algorithms, issuer, audience } = checks;
  const options = {
    algorithms,
    requiredClaims: ['exp', 'sub'],
    clockTolerance: CLOCK_TOLERANCE_S,
    ...(issuer === undefined ? {} : { issuer }),
    ...(audience === undefined ? {} : { audience }),
  };
  let payload: JWTPayload;
  try {
    payload =
      typeof key === 'function'
        ? (await jwtVerify(token, key, options)).payload
        : (await jwtVerify(token, key, options)).payload;
  } catch (error) {
    throw refusalOf(error, typeof key === 'function');
  }
  const { sub } = payload;
  if (sub === undefined || !SUBJECT.test(sub))
    throw new JwtRefusal('token_invalid', 'the token has no usable subject (sub)');
  return { ...payload, sub };
}

/** Options for {@link createJwtVerifier}. */
export interface JwtVerifierOptions {
  /** Verified tokens remembered, at most. Default 1000. */
  cacheSize?: number;
  /** How long a verified token is remembered, at most (never past its `exp`). Default 60000. */
  cacheMs?: number;
}

/**
 * {@link verifyJwt} with `key` and `checks` fixed, remembering tokens it verified: a client sends
 * the same token with every request, and its signature need not be checked each time. A
 * remembered token is still refused from its `exp` on; only verified tokens are remembered, by
 * their whole text, signature included.
 */
export function createJwtVerifier(
  key: Uint8Array | JWTVerifyGetKey,
  checks: JwtChecks,
  options: JwtVerifierOptions = {},
): (token: string) => Promise<VerifiedClaims> {
  const size = options.cacheSize ?? 1000;
  const cacheMs = options.cacheMs ?? 60_000;
  const verified = new Map<string, { claims: VerifiedClaims; until: number }>();
  return async (token) => {
    const now = Date.now();
    const known = verified.get(token);
    if (known !== undefined && known.until > now) return known.claims;
    verified.delete(token);
    const claims = await verifyJwt(token, key, checks);
    const expires = (claims.exp ?? 0) * 1000;
    if (verified.size >= size) verified.delete(verified.keys().next().value ?? '');
    verified.set(token, { claims, until: Math.min(now + cacheMs, expires) });
    return claims;
  };
}

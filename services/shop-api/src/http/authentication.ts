import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { createJwtVerifier, JwtRefusal, type JwtChecks, type VerifiedClaims } from '@sluice/access';
import { createRemoteJWKSet, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { sendProblem } from './problems.js';

/** Who sent a request, as its verified token says. */
export interface Identity {
  /** The token's `sub`: the actor of every event the request writes; a customer's id. */
  subject: string;
  /** Whether the token carries the admin scope. */
  admin: boolean;
}

/** How shop-api authenticates requests (`SHOP_AUTH*` settings). */
export type AuthSettings =
  | { mode: 'off' }
  | {
      mode: 'jwt';
      /** An HS256 shared secret, or the JWKS URL of an identity provider. */
      key: Uint8Array | URL;
      issuer?: string | undefined;
      audience?: string | undefined;
      adminScope: string;
    };

/** Every request's identity when authentication is off: an admin. */
const DEV_IDENTITY: Identity = Object.freeze({ subject: 'dev', admin: true });

type Refusal = { status: 401 | 503; code: string; detail: string };
type Authenticate = (authorization: string | undefined) => Promise<Identity | Refusal>;

const MAX_TOKEN_CHARS = 16_384;
const BEARER = /^Bearer +([A-Za-z0-9._~+/-]+=*) *$/i;
const KEY_SET_ALGORITHMS = ['RS256', 'ES256', 'EdDSA'];

const identities = new WeakMap<FastifyRequest, Identity>();

/**
 * The identity `installAuthentication` verified for this request.
 *
 * @throws Error when the request's route is outside the authenticated scope (a bug)
 */
export function identityOf(request: FastifyRequest): Identity {
  const identity = identities.get(request);
  if (identity === undefined) throw new Error(`${request.url} was not authenticated`);
  return identity;
}

function scopesOf(payload: JWTPayload): string[] {
  const { scope, scp } = payload;
  if (typeof scope === 'string') return scope.split(' ');
  if (Array.isArray(scp)) return scp.filter((s): s is string => typeof s === 'string');
  return typeof scp === 'string' ? scp.split(' ') : [];
}

const invalid = (detail: string): Refusal => ({ status: 401, code: 'token_invalid', detail });

/** Why a token was refused; a key set out of reach is the service's problem, not the token's. */
function refusalOf(refusal: JwtRefusal): Refusal {
  if (refusal.code === 'keys_unavailable') {
    const detail = "The identity provider's keys cannot be fetched";
    return { status: 503, code: 'auth_unavailable', detail };
  }
  const detail = `${refusal.reason.charAt(0).toUpperCase()}${refusal.reason.slice(1)}`;
  return { status: 401, code: refusal.code, detail };
}

function jwtAuthenticator(settings: Extract<AuthSettings, { mode: 'jwt' }>): Authenticate {
  const { key, issuer, audience, adminScope } = settings;
  const keySet = key instanceof URL;
  const getKey: Uint8Array | JWTVerifyGetKey = keySet ? createRemoteJWKSet(key) : key;
  const checks: JwtChecks = {
    algorithms: keySet ? KEY_SET_ALGORITHMS : ['HS256'],
    issuer,
    audience,
  };
  const verify = createJwtVerifier(getKey, checks);
  return async (authorization) => {
    if (authorization === undefined || authorization === '')
      return { status: 401, code: 'token_missing', detail: 'A bearer token is required' };
    const token = BEARER.exec(authorization)?.[1];
    if (token === undefined || token.length > MAX_TOKEN_CHARS)
      return invalid('Authorization must be one bearer token');
    let payload: VerifiedClaims;
    try {
      payload = await verify(token);
    } catch (error) {
      if (error instanceof JwtRefusal) return refusalOf(error);
      throw error;
    }
    return { subject: payload.sub, admin: scopesOf(payload).includes(adminScope) };
  };
}

function refuse(reply: FastifyReply, refusal: Refusal): FastifyReply {
  if (refusal.status === 401) {
    const error = refusal.code === 'token_missing' ? '' : ', error="invalid_token"';
    reply.header('www-authenticate', `Bearer realm="shop-api"${error}`);
  }
  return sendProblem(reply, refusal.status, refusal.code, refusal.detail);
}

/**
 * Authenticates every request to the routes of `scope`: a bearer JWT verified as `settings`
 * say (401 `token_missing`, `token_invalid` or `token_expired` otherwise, never echoing the
 * token), or, with authentication off, {@link DEV_IDENTITY} for everyone.
 */
export function installAuthentication(scope: FastifyInstance, settings: AuthSettings): void {
  const authenticate: Authenticate =
    settings.mode === 'off' ? () => Promise.resolve(DEV_IDENTITY) : jwtAuthenticator(settings);
  scope.addHook('onRequest', async (request, reply) => {
    const result = await authenticate(request.headers.authorization);
    if ('subject' in result) {
      identities.set(request, result);
      return;
    }
    request.log.debug({ code: result.code, reason: result.detail }, 'request not authenticated');
    return refuse(reply, result);
  });
}

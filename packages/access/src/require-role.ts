import { isSluiceError } from '@sluice/errors';
import type { FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify';
import type { Access, Principal, Role } from './access.js';

/** The cookie a browser session's token travels in. */
export const SESSION_COOKIE = 'sluice_session';

const RANK: Record<Role, number> = { viewer: 1, operator: 2 };
const principals = new WeakMap<FastifyRequest, Principal>();

/** The value of cookie `name` in a `Cookie` header. */
function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const pair of header?.split(';') ?? []) {
    const at = pair.indexOf('=');
    if (at > 0 && pair.slice(0, at).trim() === name) {
      const value = pair.slice(at + 1).trim();
      return value === '' ? undefined : value.replace(/^"(.*)"$/, '$1');
    }
  }
  return undefined;
}

/** The request's token: `Authorization: Bearer <token>`, else the session cookie. */
function credentialOf(request: FastifyRequest): string | undefined {
  const bearer = /^Bearer +(\S+) *$/i.exec(request.headers.authorization ?? '');
  return bearer?.[1] ?? cookieValue(request.headers.cookie, SESSION_COOKIE);
}

/** The answer a request gets instead of the route, if any. */
async function refusalOf(
  access: Access,
  role: Role,
  request: FastifyRequest,
): Promise<{ status: number; code: string; detail: string } | undefined> {
  const token = credentialOf(request);
  if (token === undefined) {
    const detail = `Send Authorization: Bearer <token> or the ${SESSION_COOKIE} cookie`;
    return { status: 401, code: 'unauthenticated', detail };
  }
  try {
    const principal = await access.verifyToken(token);
    if (RANK[principal.role] < RANK[role]) {
      return { status: 403, code: 'forbidden', detail: `This needs the ${role} role` };
    }
    principals.set(request, principal);
    return undefined;
  } catch (error) {
    if (isSluiceError(error, 'access_unavailable')) {
      return {
        status: 503,
        code: 'access_unavailable',
        detail: 'Credentials cannot be checked now',
      };
    }
    if (!isSluiceError(error, 'access_denied')) throw error;
    return { status: 401, code: 'unauthenticated', detail: 'The credential is invalid or expired' };
  }
}

function refuse(reply: FastifyReply, refusal: { status: number; code: string; detail: string }) {
  if (refusal.status === 401) void reply.header('www-authenticate', 'Bearer realm="sluice"');
  void reply.code(refusal.status).send({ code: refusal.code, detail: refusal.detail });
}

/**
 * Fastify onRequest hook: reads `Authorization: Bearer <token>` or the `sluice_session` cookie,
 * sets the request's principal (see {@link principalOf}), answers 401 `{ code: 'unauthenticated' }`
 * without a valid credential and 403 `{ code: 'forbidden' }` when the role is below `role`
 * (503 `access_unavailable` while an identity provider's keys cannot be fetched).
 *
 * @example
 * app.get('/parked', { onRequest: requireRole(access, 'viewer') }, handler);
 * app.addHook('onRequest', requireRole(access, 'operator')); // every route of this scope
 */
export function requireRole(access: Access, role: Role): onRequestHookHandler {
  return function requireRoleHook(request, reply, done) {
    refusalOf(access, role, request).then(
      (refusal) => (refusal === undefined ? done() : refuse(reply, refusal)),
      (error: unknown) => done(error as Error),
    );
  };
}

/**
 * The principal {@link requireRole} verified for `request`; undefined on a route it does not guard.
 *
 * @example const actor = principalOf(request)?.subject;
 */
export function principalOf(request: FastifyRequest): Principal | undefined {
  return principals.get(request);
}

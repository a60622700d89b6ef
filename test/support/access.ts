// Test support: credentials for the projector's operations API (and anything else that checks
// Sluice's own tokens), and shop-api's bearer tokens, signed with the secrets
// test/support/services.ts gives the services.
import { createAccess, type Role } from '@sluice/access';
import { createHmac } from 'node:crypto';

/** The `SLUICE_ACCESS_SECRET` services started by the test support get unless told otherwise. */
export const TEST_ACCESS_SECRET = 'sluice-test-access-secret-not-for-production';

const access = createAccess({ secret: TEST_ACCESS_SECRET });

/** `Authorization` for a token of `role` naming `subject`, valid an hour. */
export async function bearerHeaders(role: Role, subject: string): Promise<Record<string, string>> {
  return { authorization: `Bearer ${await access.issueToken({ subject, role }, 3600)}` };
}

/** Headers of an operator's request (reads and actions). */
export function operatorHeaders(subject = 'test-operator'): Promise<Record<string, string>> {
  return bearerHeaders('operator', subject);
}

/** Headers of a viewer's request (reads only). */
export function viewerHeaders(subject = 'test-viewer'): Promise<Record<string, string>> {
  return bearerHeaders('viewer', subject);
}

/** The `SHOP_AUTH_SECRET` shop-api started by the test support gets unless told otherwise. */
export const TEST_SHOP_AUTH_SECRET = 'sluice-test-shop-auth-secret-not-for-production';

const base64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

/**
 * `Authorization` for shop-api: an HS256 token for `sub` signed with {@link TEST_SHOP_AUTH_SECRET},
 * valid an hour; `scope: 'admin'` makes it an admin's, none a customer's (`sub` = their id).
 */
export function shopHeaders(sub: string, scope?: string): Record<string, string> {
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub, iat: now, exp: now + 3600, ...(scope === undefined ? {} : { scope }) };
  const signed = `${base64url({ alg: 'HS256', typ: 'JWT' })}.${base64url(claims)}`;
  const signature = createHmac('sha256', TEST_SHOP_AUTH_SECRET).update(signed).digest('base64url');
  return { authorization: `Bearer ${signed}.${signature}` };
}

/** Headers of a shop-api admin's request. */
export function shopAdminHeaders(sub = 'test-admin'): Record<string, string> {
  return shopHeaders(sub, 'admin');
}

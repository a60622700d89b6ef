// Test support: credentials for the projector's operations API (and anything else that checks
// Sluice's own tokens), signed with the secret test/support/services.ts gives the services.
import { createAccess, type Role } from '@sluice/access';

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

import type { FastifyRequest } from 'fastify';
import { identityOf } from './authentication.js';
import { ProblemError } from './problems.js';

/**
 * Refuses a request whose token lacks the admin scope: 403 `forbidden`.
 *
 * @throws ProblemError
 */
export function requireAdmin(request: FastifyRequest): void {
  if (!identityOf(request).admin)
    throw new ProblemError(403, 'forbidden', 'This needs the admin scope');
}

/**
 * Whether the request may see and change what belongs to `customerId`: a customer's own, or
 * anything for an admin. Another customer's resource is answered as a missing one (404), so a
 * customer learns nothing of others'.
 */
export function mayActFor(request: FastifyRequest, customerId: string | null): boolean {
  const identity = identityOf(request);
  return identity.admin || identity.subject === customerId;
}

/** The customer a customer's listing is confined to: undefined for an admin (everyone's). */
export function ownCustomerScope(request: FastifyRequest): string | undefined {
  const identity = identityOf(request);
  return identity.admin ? undefined : identity.subject;
}

import type { FastifyRequest } from 'fastify';
import { ProblemError } from './problems.js';

/**
 * The version named by `If-Match: "<version>"`, for the command to check against the state it
 * locks.
 *
 * @throws ProblemError 428 `precondition_required` when absent and required, 412 when unparseable.
 */
export function ifMatchVersion(request: FastifyRequest, required: boolean): number | undefined {
  const value = request.headers['if-match'];
  if (value === undefined) {
    if (!required) return undefined;
    throw new ProblemError(
      428,
      'precondition_required',
      'This update requires an If-Match header with the ETag you read',
    );
  }
  const match = /^"(\d{1,15})"$/.exec(value.trim());
  if (match?.[1] === undefined) {
    throw new ProblemError(
      412,
      'precondition_failed',
      `If-Match ${JSON.stringify(value)} is not an ETag of this API`,
    );
  }
  return Number(match[1]);
}

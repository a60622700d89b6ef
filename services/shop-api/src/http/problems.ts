import { SluiceError } from '@sluice/errors';
import type { FastifyReply } from 'fastify';

/** An error that becomes an RFC 9457 problem response with a stable `code`. */
export class ProblemError extends SluiceError {
  override readonly name = 'ProblemError';
  constructor(
    readonly status: number,
    code: string,
    detail: string,
  ) {
    super(code, detail);
  }
}

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  412: 'Precondition Failed',
  413: 'Content Too Large',
  414: 'URI Too Long',
  415: 'Unsupported Media Type',
  422: 'Unprocessable Content',
  428: 'Precondition Required',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

/** The media type of problem responses. */
export const PROBLEM_JSON = 'application/problem+json';

/** An RFC 9457 problem body carrying a stable `code` (and the request's correlation id, if any). */
export function problem(status: number, code: string, detail: string, correlationId?: string) {
  return {
    type: `https://sluice.dev/problems/${code}`,
    title: TITLES[status] ?? 'Error',
    status,
    detail,
    code,
    ...(correlationId === undefined ? {} : { correlationId }),
  };
}

/** Sends an `application/problem+json` response carrying `code` and the correlation id. */
export function sendProblem(
  reply: FastifyReply,
  status: number,
  code: string,
  detail: string,
): FastifyReply {
  return reply
    .code(status)
    .type(PROBLEM_JSON)
    .send(problem(status, code, detail, reply.request.id));
}

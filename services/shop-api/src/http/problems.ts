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

/** Sends an `application/problem+json` response carrying `code` and the correlation id. */
export function sendProblem(
  reply: FastifyReply,
  status: number,
  code: string,
  detail: string,
): FastifyReply {
  return reply
    .code(status)
    .type('application/problem+json')
    .send({
      type: `https://sluice.dev/problems/${code}`,
      title: TITLES[status] ?? 'Error',
      status,
      detail,
      code,
      correlationId: reply.request.id,
    });
}

import { isDatabaseUnavailable, isSluiceError } from '@sluice/errors';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { CommandError, type CommandErrorCode } from '../commands/command-error.js';
import { ProblemError, sendProblem } from './problems.js';

/** The status of each refusal of a command. */
const COMMAND_STATUS: Record<CommandErrorCode, number> = {
  not_found: 404,
  precondition_failed: 412,
  customer_not_found: 422,
  product_not_found: 422,
  email_taken: 409,
  sku_taken: 409,
  product_delisted: 409,
  cart_not_open: 409,
  cart_empty: 409,
  item_not_in_cart: 409,
  insufficient_stock: 409,
  quantity_limit: 409,
  cart_lines_limit: 409,
  cart_total_limit: 409,
};

/** Fastify's own client errors, mapped to stable problem codes. */
const FASTIFY_CODES: Record<string, [number, string]> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: [415, 'unsupported_media_type'],
  FST_ERR_CTP_BODY_TOO_LARGE: [413, 'payload_too_large'],
  FST_ERR_CTP_EMPTY_JSON_BODY: [400, 'malformed_json'],
  FST_ERR_CTP_INVALID_JSON_BODY: [400, 'malformed_json'],
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: [400, 'bad_request'],
};

/** Errors Fastify raises before routing (bad URL encoding, over-long path parameters). */
export function frameworkErrorHandler(
  error: FastifyError,
  _request: FastifyRequest,
  reply: FastifyReply,
): void {
  const status = error.statusCode !== undefined && error.statusCode < 500 ? error.statusCode : 400;
  sendProblem(reply, status, 'bad_url', error.message);
}

/** Every error leaves as problem+json; only genuine bugs are 500s, and those are logged. */
export function installErrorHandling(app: FastifyInstance): void {
  app.setNotFoundHandler((request, reply) =>
    sendProblem(
      reply,
      404,
      'not_found',
      `No route ${request.method} ${request.url.split('?')[0] ?? ''}`,
    ),
  );
  app.setErrorHandler((error: FastifyError, request, reply) => {
    if (error instanceof CommandError) {
      return sendProblem(reply, COMMAND_STATUS[error.code], error.code, error.message);
    }
    if (error instanceof ProblemError)
      return sendProblem(reply, error.status, error.code, error.message);
    if (error.validation !== undefined) {
      return sendProblem(reply, 400, 'invalid_request', error.message);
    }
    // The outbox refused an event the request would have produced: the request's checks missed
    // a case (or stored rows predate them). Nothing was written; the operator must look.
    if (isSluiceError(error, 'event_payload_invalid')) {
      request.log.error({ err: error }, 'event refused by the catalog after the checks passed');
      return sendProblem(
        reply,
        422,
        'event_invalid',
        'The change would produce an event the event catalog does not allow',
      );
    }
    const mapped = FASTIFY_CODES[error.code];
    if (mapped !== undefined) return sendProblem(reply, mapped[0], mapped[1], error.message);
    const status = error.statusCode ?? 500;
    // The JSON body parser (secure-json-parse) fails with a SyntaxError marked 400, also for
    // `__proto__` / `constructor.prototype` keys.
    if (error instanceof SyntaxError && status === 400) {
      const forbidden = /forbidden (prototype|constructor) property/.test(error.message);
      return sendProblem(reply, 400, forbidden ? 'forbidden_key' : 'malformed_json', error.message);
    }
    if (status >= 400 && status < 500)
      return sendProblem(reply, status, 'bad_request', error.message);
    if (isDatabaseUnavailable(error)) {
      // A lost connection may have taken a COMMIT with it: only a retry under the same
      // Idempotency-Key is safe for a write that must not happen twice.
      request.log.warn({ err: error }, 'the database did not answer');
      void reply.header('retry-after', '1');
      return sendProblem(
        reply,
        503,
        'database_unavailable',
        'The database does not answer. Retry; a POST or DELETE retried with the same Idempotency-Key is applied at most once.',
      );
    }
    request.log.error({ err: error }, 'unhandled error');
    return sendProblem(reply, 500, 'internal_error', 'An unexpected error occurred');
  });
}

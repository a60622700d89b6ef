import { SluiceError } from '@sluice/errors';
import type { AppendContext } from '@sluice/outbox';
import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { randomBytes } from 'node:crypto';

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
  415: 'Unsupported Media Type',
  422: 'Unprocessable Content',
  428: 'Precondition Required',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

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

/** Fastify's own client errors, mapped to stable problem codes. */
const FASTIFY_CODES: Record<string, [number, string]> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: [415, 'unsupported_media_type'],
  FST_ERR_CTP_BODY_TOO_LARGE: [413, 'payload_too_large'],
  FST_ERR_CTP_EMPTY_JSON_BODY: [400, 'malformed_json'],
  FST_ERR_CTP_INVALID_JSON_BODY: [400, 'malformed_json'],
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: [400, 'bad_request'],
};

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
    if (error instanceof ProblemError)
      return sendProblem(reply, error.status, error.code, error.message);
    if (error.validation !== undefined) {
      return sendProblem(reply, 400, 'invalid_request', error.message);
    }
    const mapped = FASTIFY_CODES[error.code];
    if (mapped !== undefined) return sendProblem(reply, mapped[0], mapped[1], error.message);
    if (error instanceof SyntaxError || /JSON/i.test(error.message)) {
      return sendProblem(reply, 400, 'malformed_json', error.message);
    }
    if (/prototype|constructor/i.test(error.message)) {
      return sendProblem(reply, 400, 'forbidden_key', error.message);
    }
    const status = error.statusCode ?? 500;
    if (status >= 400 && status < 500)
      return sendProblem(reply, status, 'bad_request', error.message);
    request.log.error({ err: error }, 'unhandled error');
    return sendProblem(reply, 500, 'internal_error', 'An unexpected error occurred');
  });
}

/**
 * Request bodies are validated strictly (no coercion, unknown fields rejected); path and query
 * strings are coerced from text, as they can only be text.
 */
export function installValidators(app: FastifyInstance): void {
  const strict = new Ajv({
    allErrors: false,
    coerceTypes: false,
    removeAdditional: false,
    useDefaults: true,
  });
  const lenient = new Ajv({
    allErrors: false,
    coerceTypes: true,
    removeAdditional: false,
    useDefaults: true,
  });
  addFormats.default(strict);
  addFormats.default(lenient);
  app.setValidatorCompiler(({ schema, httpPart }) =>
    (httpPart === 'body' ? strict : lenient).compile(schema),
  );
}

/** Finds the first string (value or key) PostgreSQL would refuse or silently corrupt. */
function unsafeString(value: unknown, path: string): string | undefined {
  if (typeof value === 'string') {
    if (value.includes('\u0000')) return `${path} contains a NUL character`;
    if (!value.isWellFormed()) return `${path} contains a lone surrogate (not valid Unicode)`;
    return undefined;
  }
  if (Array.isArray(value)) {
    for (const [index, item] of value.entries()) {
      const problem = unsafeString(item, `${path}/${index}`);
      if (problem !== undefined) return problem;
    }
    return undefined;
  }
  if (value !== null && typeof value === 'object') {
    for (const [key, item] of Object.entries(value)) {
      const problem = unsafeString(key, `${path} key`) ?? unsafeString(item, `${path}/${key}`);
      if (problem !== undefined) return problem;
    }
  }
  return undefined;
}

export function installBodyGuards(app: FastifyInstance): void {
  app.addHook('preValidation', (request, _reply, done) => {
    const problem = unsafeString(request.body, 'body');
    done(problem === undefined ? undefined : new ProblemError(400, 'invalid_string', problem));
  });
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const SAFE_HEADER = /^[\x20-\x7e]{1,200}$/;

/**
 * The W3C trace context for this request: a child of the caller's `traceparent` when valid,
 * a new trace otherwise.
 */
function traceparentFor(header: string | undefined): string {
  const match = header === undefined ? null : TRACEPARENT.exec(header);
  const traceId = match?.[1];
  const spanId = randomBytes(8).toString('hex');
  if (
    match !== null &&
    traceId !== undefined &&
    !/^0+$/.test(traceId) &&
    !/^0+$/.test(match[2] ?? '')
  ) {
    return `00-${traceId}-${spanId}-${match[3] ?? '01'}`;
  }
  return `00-${randomBytes(16).toString('hex')}-${spanId}-01`;
}

function header(request: FastifyRequest, name: string): string | undefined {
  const value = request.headers[name];
  return typeof value === 'string' && SAFE_HEADER.test(value) ? value : undefined;
}

/** Correlation id accepted from the caller when it is short and printable; generated otherwise. */
export function correlationIdFor(value: string | string[] | undefined): string | undefined {
  return typeof value === 'string' && /^[A-Za-z0-9._:-]{1,128}$/.test(value) ? value : undefined;
}

/** Who, why and which trace: what every event written by this request carries. */
export function appendContext(request: FastifyRequest): AppendContext {
  const context: AppendContext = {
    traceparent: traceparentFor(header(request, 'traceparent')),
    correlationId: request.id,
    actor: header(request, 'x-actor') ?? 'anonymous',
  };
  const reason = header(request, 'x-reason');
  if (reason !== undefined) context.reason = reason;
  return context;
}

/**
 * The version named by `If-Match: "<version>"`.
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

export function assertVersion(expected: number | undefined, actual: number): void {
  if (expected !== undefined && expected !== actual) {
    throw new ProblemError(
      412,
      'precondition_failed',
      `The resource is at version ${actual}, not ${expected}`,
    );
  }
}

/** One aggregate version a write produced; `/views/*` can wait until a projection reached it. */
export interface WrittenVersion {
  aggregateType: string;
  aggregateId: string;
  version: number;
}

/** The opaque `X-Consistency-Token` for the versions a write produced. */
export function consistencyToken(versions: readonly WrittenVersion[]): string {
  return Buffer.from(
    JSON.stringify(versions.map((v) => [v.aggregateType, v.aggregateId, v.version])),
  ).toString('base64url');
}

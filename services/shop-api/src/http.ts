import { SluiceError, isSluiceError } from '@sluice/errors';
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
  414: 'URI Too Long',
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
  app.setValidatorCompiler(({ schema, httpPart }) => {
    if (httpPart === 'body') return strict.compile(schema);
    const validate = lenient.compile(schema);
    // Ajv coerces "1e400" to Infinity, then skips minimum/maximum (they only judge finite
    // numbers), so `?limit=1e400` would reach SQL as `LIMIT Infinity` and fail as a 500.
    const checked = (data: unknown) => {
      const valid = validate(data);
      checked.errors = validate.errors ?? null;
      const field = valid ? nonFiniteField(data) : undefined;
      if (field === undefined) return valid;
      return {
        error: new ProblemError(400, 'invalid_request', `${httpPart}/${field} must be finite`),
      };
    };
    checked.errors = validate.errors ?? null;
    return checked;
  });
}

function nonFiniteField(data: unknown): string | undefined {
  if (data === null || typeof data !== 'object') return undefined;
  return Object.entries(data).find(
    ([, value]) => typeof value === 'number' && !Number.isFinite(value),
  )?.[0];
}

interface BodyNode {
  value: unknown;
  /** `/index` or `/key` below the parent, or ` key` for one of the parent's keys. */
  step: string;
  parent: BodyNode | undefined;
}

function pathOf(node: BodyNode): string {
  const steps: string[] = [];
  for (let at: BodyNode | undefined = node; at !== undefined; at = at.parent) steps.push(at.step);
  return steps.reverse().join('');
}

/**
 * Finds the first string (value or key) PostgreSQL would refuse or silently corrupt. Walks with
 * an explicit stack, not recursion: a 64 KiB body can nest 20 000 levels deep, which would
 * overflow the call stack (a RangeError, so a 500); paths are built only for the culprit.
 */
function unsafeString(body: unknown): string | undefined {
  const stack: BodyNode[] = [{ value: body, step: 'body', parent: undefined }];
  for (let node = stack.pop(); node !== undefined; node = stack.pop()) {
    const { value } = node;
    if (typeof value === 'string') {
      if (value.includes('\u0000')) return `${pathOf(node)} contains a NUL character`;
      if (!value.isWellFormed()) {
        return `${pathOf(node)} contains a lone surrogate (not valid Unicode)`;
      }
    } else if (Array.isArray(value)) {
      for (let index = value.length - 1; index >= 0; index -= 1) {
        stack.push({ value: value[index] as unknown, step: `/${index}`, parent: node });
      }
    } else if (value !== null && typeof value === 'object') {
      const entries = Object.entries(value as Record<string, unknown>);
      for (let index = entries.length - 1; index >= 0; index -= 1) {
        const [key, item] = entries[index] ?? ['', undefined];
        stack.push(
          { value: item, step: `/${key}`, parent: node },
          { value: key, step: ' key', parent: node },
        );
      }
    }
  }
  return undefined;
}

export function installBodyGuards(app: FastifyInstance): void {
  // Fastify parses text/plain into a string by default; every body here is JSON, so anything
  // else is a 415 rather than a 400 for "body must be object".
  app.removeContentTypeParser('text/plain');
  app.addHook('preValidation', (request, _reply, done) => {
    const problem = unsafeString(request.body);
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

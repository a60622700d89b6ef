// The projector's operations HTTP API: parked events, offset gaps, rebuilds; each behind a credential.
import { Type, type Static } from '@sinclair/typebox';
import {
  accessOptionsOf,
  createAccess,
  principalOf,
  requireRole,
  type Access,
  type AccessConfig,
} from '@sluice/access';
import { SluiceError, isDatabaseUnavailable, isSluiceError } from '@sluice/errors';
import type { OperatorRequest, ParkedOutcome, Projector } from '@sluice/projector';
import type { FastifyInstance, FastifyRequest, onRequestHookHandler } from 'fastify';
import type { Logger } from 'pino';

const STATUS_BY_CODE: Record<string, number> = {
  projection_unknown: 404,
  rebuild_not_running: 404,
  rebuild_in_progress: 409,
  projection_not_started: 409,
  no_version_gap: 409,
};

const Reason = Type.Optional(Type.String({ minLength: 1, maxLength: 500 }));
const AggregateBody = Type.Object(
  {
    projection: Type.String(),
    aggregateType: Type.String(),
    aggregateId: Type.String(),
    reason: Reason,
  },
  { additionalProperties: false },
);
type AggregateBody = Static<typeof AggregateBody>;
const Printable = /^[\x20-\x7e]{1,200}$/;

/**
 * Who acts and why: the subject of the verified credential (never a header the caller chooses)
 * and the body's `reason` or `X-Reason`. Recorded with every action in `sluice.operator_audit`.
 */
function operatorOf(request: FastifyRequest, reason: string | undefined): OperatorRequest {
  const principal = principalOf(request);
  // The scope's hook verified every request that reaches a route; this only guards a refactoring.
  if (principal === undefined) throw new Error('operations route reached without a principal');
  const header = request.headers['x-reason'];
  const why = reason ?? (typeof header === 'string' && Printable.test(header) ? header : undefined);
  return { actor: principal.subject, ...(why === undefined ? {} : { reason: why }) };
}

const outcomeBody = (outcome: ParkedOutcome) => ({
  applied: outcome.result.applied,
  skipped: outcome.result.skipped,
  duplicates: outcome.result.duplicates,
  parked: outcome.stillParked,
  gap: outcome.gap,
});

/** What the operations routes work with. */
interface OperationsDeps {
  projector: Projector;
  logger: Logger;
  /** The projections this process runs. */
  hosted: readonly string[];
  /** Checks credentials; without it every operations request is refused. */
  access: Access | undefined;
}

const ACCESS_UNSET =
  'The operations API needs credentials and none are configured: set SLUICE_ACCESS_SECRET ' +
  "(tokens Sluice issues, e.g. the console's) or SLUICE_ACCESS_JWKS_URL with SLUICE_ACCESS_ISSUER " +
  "and SLUICE_ACCESS_AUDIENCE (an identity provider's tokens)";

/**
 * The credential checks the settings configure; undefined (and a warning) when they configure
 * no tokens, which leaves the operations API refusing every request.
 *
 * @throws SluiceError `config_invalid` when the access settings are inconsistent
 */
export function operationsAccess(config: AccessConfig, logger: Logger): Access | undefined {
  const options = accessOptionsOf(config);
  if (options.secret === undefined && options.jwksUrl === undefined) {
    logger.warn(ACCESS_UNSET);
    return undefined;
  }
  try {
    return createAccess(options);
  } catch (error) {
    if (!isSluiceError(error, 'access_config_invalid')) throw error;
    throw new SluiceError('config_invalid', error.message, { cause: error });
  }
}

/** Reads need a viewer, everything else an operator; nobody gets in without `access`. */
function guard(access: Access | undefined): onRequestHookHandler {
  if (access === undefined) {
    return (_request, reply) => {
      void reply
        .code(401)
        .header('www-authenticate', 'Bearer realm="sluice"')
        .send({ code: 'unauthenticated', detail: ACCESS_UNSET });
    };
  }
  const read = requireRole(access, 'viewer');
  const act = requireRole(access, 'operator');
  return function operationsGuard(request, reply, done) {
    const hook = request.method === 'GET' || request.method === 'HEAD' ? read : act;
    hook.call(this, request, reply, done);
  };
}

/**
 * Registers the operations API over `projector` on `http`, in a scope of its own: every route
 * needs a credential (see {@link guard}), and gets the scope's error answers.
 */
export function operationsRoutes(http: FastifyInstance, deps: OperationsDeps): void {
  void http.register((scope, _options, done) => {
    scope.addHook('onRequest', guard(deps.access));
    scopedRoutes(scope, deps);
    done();
  });
}

function scopedRoutes(http: FastifyInstance, deps: OperationsDeps): void {
  const { logger } = deps;
  http.setErrorHandler((error: Error & { validation?: unknown }, _request, reply) => {
    const status = isSluiceError(error) ? STATUS_BY_CODE[error.code] : undefined;
    if (isSluiceError(error) && status !== undefined)
      return reply.code(status).send({ code: error.code, detail: error.message });
    if (error.validation !== undefined)
      return reply.code(400).send({ code: 'invalid_request', detail: error.message });
    if (isDatabaseUnavailable(error)) {
      logger.warn({ err: error }, 'operations request: the database did not answer');
      return reply
        .code(503)
        .header('retry-after', '1')
        .send({ code: 'database_unavailable', detail: 'The database does not answer. Retry.' });
    }
    logger.error({ err: error }, 'operations request failed');
    return reply.code(500).send({ code: 'internal_error', detail: 'See the projector log' });
  });
  parkedRoutes(http, deps);
  offsetGapRoutes(http, deps);
  rebuildRoutes(http, deps);
}

/** Parked records: list, redrive, accept a version gap, skip one. */
function parkedRoutes(http: FastifyInstance, { projector, logger }: OperationsDeps): void {
  http.get('/parked', async (request, reply) => {
    const { projection } = request.query as { projection?: string };
    return reply.send({ items: await projector.parked(projection) });
  });
  /** Redrive and accept-gap: an operation on one aggregate's parked records. */
  const aggregateRoute = (
    path: string,
    run: (body: AggregateBody, operator: OperatorRequest) => Promise<Record<string, unknown>>,
    done: string,
  ) =>
    http.post(path, { schema: { body: AggregateBody } }, async (request, reply) => {
      const body = request.body as AggregateBody;
      const operator = operatorOf(request, body.reason);
      const answer = await run(body, operator);
      logger.warn({ ...body, ...operator, ...answer }, done);
      return reply.send(answer);
    });
  const aggregateOf = (body: AggregateBody) => ({ type: body.aggregateType, id: body.aggregateId });
  aggregateRoute(
    '/parked/redrive',
    async (body, operator) =>
      outcomeBody(await projector.redrive(body.projection, aggregateOf(body), operator)),
    'parked events redriven',
  );
  aggregateRoute(
    '/parked/accept-gap',
    async (body, operator) => {
      const outcome = await projector.acceptVersionGap(
        body.projection,
        aggregateOf(body),
        operator,
      );
      return { accepted: outcome.accepted, ...outcomeBody(outcome) };
    },
    'version gap accepted',
  );
  http.post(
    '/parked/skip',
    {
      schema: {
        body: Type.Object(
          {
            projection: Type.String(),
            topic: Type.String(),
            partition: Type.Integer({ minimum: 0, maximum: 2_147_483_647 }),
            offset: Type.String({ pattern: '^[0-9]{1,19}$' }),
            reason: Reason,
          },
          { additionalProperties: false },
        ),
      },
    },
    async (request, reply) => {
      const body = request.body as {
        projection: string;
        topic: string;
        partition: number;
        offset: string;
        reason?: string;
      };
      const operator = operatorOf(request, body.reason);
      const outcome = await projector.skip(body.projection, body, operator);
      if (outcome === undefined)
        return reply.code(404).send({ code: 'not_found', detail: 'No such parked record' });
      logger.warn({ ...body, ...operator, ...outcomeBody(outcome) }, 'parked record skipped');
      return reply.send(outcomeBody(outcome));
    },
  );
}

/** Offset gaps: list them, accept a projection's. */
function offsetGapRoutes(http: FastifyInstance, { projector, logger }: OperationsDeps): void {
  http.get('/offset-gaps', async (request, reply) => {
    const { projection } = request.query as { projection?: string };
    return reply.send({ items: await projector.offsetGaps(projection) });
  });
  http.post(
    '/offset-gaps/accept',
    {
      schema: {
        body: Type.Object(
          { projection: Type.String(), reason: Reason },
          { additionalProperties: false },
        ),
      },
    },
    async (request, reply) => {
      const body = request.body as { projection: string; reason?: string };
      const operator = operatorOf(request, body.reason);
      const accepted = await projector.acceptOffsetGaps(body.projection, operator);
      logger.warn({ ...body, ...operator, accepted }, 'offset gaps accepted');
      return reply.send({ accepted });
    },
  );
}

/** Blue/green rebuilds: the generations of each projection here, starting and cancelling one. */
function rebuildRoutes(http: FastifyInstance, { projector, logger, hosted }: OperationsDeps): void {
  http.get('/projections', async (_request, reply) =>
    reply.send({
      items: await Promise.all(
        hosted.map(async (name) => ({
          projection: name,
          ...(await projector.generations(name)),
        })),
      ),
    }),
  );
  const NameParams = {
    params: Type.Object({ name: Type.String() }, { additionalProperties: false }),
  };
  http.post('/projections/:name/rebuild', { schema: NameParams }, async (request, reply) => {
    const { name } = request.params as { name: string };
    const operator = operatorOf(request, undefined);
    const generation = await projector.rebuild(name, operator);
    logger.info(
      { projection: name, generation: generation.generation, ...operator },
      'rebuild started',
    );
    return reply.code(202).send(generation);
  });
  http.delete('/projections/:name/rebuild', { schema: NameParams }, async (request, reply) => {
    const { name } = request.params as { name: string };
    const operator = operatorOf(request, undefined);
    const generation = await projector.cancelRebuild(name, operator);
    logger.warn(
      { projection: name, generation: generation.generation, ...operator },
      'rebuild cancelled',
    );
    return reply.send(generation);
  });
}

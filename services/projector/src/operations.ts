// The projector's operations HTTP API: parked events, offset gaps, rebuilds.
import { Type, type Static } from '@sinclair/typebox';
import { isSluiceError } from '@sluice/errors';
import type { OperatorRequest, ParkedOutcome, Projector } from '@sluice/projector';
import type { FastifyInstance, FastifyRequest } from 'fastify';
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
 * Who acts and why: `X-Actor` (until operators authenticate) and the body's `reason` or
 * `X-Reason`. Recorded with every action in `sluice.operator_audit`.
 */
function operatorOf(request: FastifyRequest, reason: string | undefined): OperatorRequest {
  const header = (name: string) => {
    const value = request.headers[name];
    return typeof value === 'string' && Printable.test(value) ? value : undefined;
  };
  const why = reason ?? header('x-reason');
  return { actor: header('x-actor') ?? 'anonymous', ...(why === undefined ? {} : { reason: why }) };
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
}

/** Registers the operations API over `projector` on `http`, and its error answers for every route. */
export function operationsRoutes(http: FastifyInstance, deps: OperationsDeps): void {
  const { logger } = deps;
  http.setErrorHandler((error: Error & { validation?: unknown }, _request, reply) => {
    const status = isSluiceError(error) ? STATUS_BY_CODE[error.code] : undefined;
    if (isSluiceError(error) && status !== undefined)
      return reply.code(status).send({ code: error.code, detail: error.message });
    if (error.validation !== undefined)
      return reply.code(400).send({ code: 'invalid_request', detail: error.message });
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

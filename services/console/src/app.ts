// The console's HTTP server: session, reads, actions, the stream and the pages. Reads need the
// viewer role, actions the operator role (see API.md).
import fastifyCookie from '@fastify/cookie';
import { Type, type Static } from '@sinclair/typebox';
import { SESSION_COOKIE, principalOf, requireRole, type Access } from '@sluice/access';
import { isDatabaseUnavailable, isSluiceError } from '@sluice/errors';
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type pg from 'pg';
import { actionRoutes } from './actions.js';
import { journeyRoutes } from './journey.js';
import { parkedItemOf } from './masking.js';
import { pagesRoutes } from './pages.js';
import { auditItems, parkedPage } from './parked.js';
import type { Sampler } from './sampler.js';
import { streamRoute } from './stream.js';

/** What the console's routes work with. */
export interface ConsoleDeps {
  access: Access;
  sampler: Sampler;
  pool: pg.Pool;
  logger: Logger;
  maskedTypes: ReadonlySet<string>;
  sessionTtlSeconds: number;
  topicPrefix: string;
  groupPrefix: string;
  /** `CONSOLE_TRACE_URL`: the journey links each event's trace there when set. */
  traceUrl?: string;
  /** Where the built pages are; default the web package's `dist`. */
  pagesDir?: string;
}

const STATUS_BY_CODE: Record<string, number> = {
  access_denied: 401,
  projection_unknown: 404,
  projector_unreachable: 502,
};

const Login = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 200 }),
    password: Type.String({ minLength: 1, maxLength: 1000 }),
  },
  { additionalProperties: false },
);
const Limit = (max: number) => Type.Integer({ minimum: 1, maximum: max, default: 100 });
const ParkedQuery = Type.Object({
  projection: Type.Optional(Type.String()),
  aggregateType: Type.Optional(Type.String()),
  aggregateId: Type.Optional(Type.String()),
  errorClass: Type.Optional(Type.String()),
  limit: Limit(500),
});

/** `{ code, message }` for every error; SluiceErrors by code, validation as invalid_request. */
function errorAnswers(app: FastifyInstance, logger: Logger): void {
  app.setErrorHandler((error: FastifyError, _request, reply) => {
    if (isSluiceError(error)) {
      return reply
        .code(STATUS_BY_CODE[error.code] ?? 500)
        .send({ code: error.code, message: error.message });
    }
    if (error.validation !== undefined) {
      return reply.code(400).send({ code: 'invalid_request', message: error.message });
    }
    if (isDatabaseUnavailable(error)) {
      logger.warn({ err: error }, 'console request: the database did not answer');
      return reply
        .code(503)
        .header('retry-after', '1')
        .send({ code: 'database_unavailable', message: 'The database does not answer. Retry.' });
    }
    logger.error({ err: error }, 'console request failed');
    return reply.code(500).send({ code: 'internal_error', message: 'See the console log' });
  });
  // @sluice/access refuses with { code, detail }: every error body also carries `message`.
  app.addHook('preSerialization', (_request, _reply, payload: unknown, done) => {
    const body = payload as { code?: unknown; detail?: unknown; message?: unknown } | null;
    if (
      typeof body?.code === 'string' &&
      typeof body.detail === 'string' &&
      body.message === undefined
    ) {
      done(null, { ...body, message: body.detail });
    } else done(null, payload);
  });
}

function sessionRoutes(app: FastifyInstance, deps: ConsoleDeps): void {
  app.post('/session', { schema: { body: Login } }, async (request, reply) => {
    const { name, password } = request.body as Static<typeof Login>;
    const principal = await deps.access.checkPassword(name, password);
    const token = await deps.access.issueToken(principal, deps.sessionTtlSeconds);
    void reply.setCookie(SESSION_COOKIE, token, {
      httpOnly: true,
      sameSite: 'strict',
      path: '/',
      secure: request.protocol === 'https',
      maxAge: deps.sessionTtlSeconds,
    });
    deps.logger.info({ subject: principal.subject, role: principal.role }, 'signed in');
    return reply.send(principal);
  });
  app.delete('/session', (_request, reply) =>
    reply.clearCookie(SESSION_COOKIE, { path: '/' }).code(204).send(),
  );
}

function readRoutes(app: FastifyInstance, deps: ConsoleDeps): void {
  const { sampler, pool } = deps;
  app.addHook('onRequest', requireRole(deps.access, 'viewer'));
  app.get('/me', (request, reply) => reply.send(principalOf(request)));
  app.get('/overview', async () => (await sampler.snapshot()).overview);
  app.get('/relay', async () => (await sampler.snapshot()).relay);
  app.get('/projections', async () => (await sampler.snapshot()).projections);
  app.get('/alerts', async () => ({
    rules: sampler.rules(),
    active: (await sampler.snapshot()).alerts,
  }));
  app.get('/parked', { schema: { querystring: ParkedQuery } }, async (request) => {
    const filter = request.query as Static<typeof ParkedQuery>;
    const role = principalOf(request)?.role ?? 'viewer';
    const { groups, rows } = await parkedPage(pool, filter);
    return { groups, items: rows.map((row) => parkedItemOf(row, role, deps.maskedTypes)) };
  });
  app.get(
    '/audit',
    { schema: { querystring: Type.Object({ limit: Limit(1000) }) } },
    async (request) => ({
      items: await auditItems(pool, (request.query as { limit: number }).limit),
    }),
  );
  streamRoute(app, sampler);
}

/**
 * The console's Fastify instance with every route; `runService` adds /healthz, /readyz and
 * /metrics and listens.
 */
export async function createConsoleApp(deps: ConsoleDeps): Promise<FastifyInstance> {
  const app = Fastify({ logger: false, trustProxy: true });
  await app.register(fastifyCookie);
  errorAnswers(app, deps.logger);
  await app.register(
    (api, _options, done) => {
      sessionRoutes(api, deps);
      void api.register((reads, _readOptions, readsDone) => {
        readRoutes(reads, deps);
        readsDone();
      });
      void api.register((actions, _actionOptions, actionsDone) => {
        actions.addHook('onRequest', requireRole(deps.access, 'operator'));
        actionRoutes(actions, {
          pool: deps.pool,
          projectorFor: (name) => deps.sampler.projectorFor(name),
        });
        actionsDone();
      });
      done();
    },
    { prefix: '/api' },
  );
  await app.register((journey, _options, done) => {
    journey.addHook('onRequest', requireRole(deps.access, 'viewer'));
    journeyRoutes(journey, {
      pool: deps.pool,
      topicPrefix: deps.topicPrefix,
      groupPrefix: deps.groupPrefix,
      ...(deps.traceUrl === undefined ? {} : { traceUrl: deps.traceUrl }),
    });
    done();
  });
  await pagesRoutes(app, deps.pagesDir);
  return app;
}

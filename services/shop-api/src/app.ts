import type { MasterKeys, Privacy } from '@sluice/privacy';
import type { Tracer } from '@sluice/tracing';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Kysely } from 'kysely';
import { Counter, Histogram, Registry } from 'prom-client';
import { v7 as uuidv7 } from 'uuid';
import { createConsistencyTokens } from './consistency-tokens.js';
import type { ShopDatabase } from './database.js';
import { installAuthentication, type AuthSettings } from './http/authentication.js';
import { installBodyGuards } from './http/body-guards.js';
import { createConsistencyWait } from './http/consistency-wait.js';
import { frameworkErrorHandler, installErrorHandling } from './http/error-handling.js';
import { correlationIdFor } from './http/request-context.js';
import { installRequestSpans } from './http/tracing.js';
import { installValidators } from './http/validation.js';
import { createWriter } from './http/writes.js';
import { cartRoutes } from './routes/carts.js';
import { customerRoutes } from './routes/customers.js';
import { orderRoutes } from './routes/orders.js';
import { productRoutes } from './routes/products.js';
import { viewRoutes } from './routes/views.js';

export interface AppOptions {
  db: Kysely<ShopDatabase>;
  logger: FastifyBaseLogger;
  /** Request bodies above this many bytes get a 413. Default 64 KiB. */
  bodyLimitBytes?: number;
  /** How long a `/views/*` request waits for its consistency token. Default 5000. */
  consistencyTimeoutMs?: number;
  /**
   * Signs `X-Consistency-Token`s (at least 32 bytes). Replicas on one database must share it:
   * pass `storedTokenSecret(db)` unless one is configured.
   */
  consistencyTokenSecret: Uint8Array;
  /** Where request metrics go. Default: a registry of its own. */
  registry?: Registry;
  /** Traces requests, their transactions and consistency waits. Default: none. */
  tracer?: Tracer | undefined;
  /** How the shop's routes authenticate requests; the service's probes never do. */
  auth: AuthSettings;
  /** Seals the personal fields of events and stored responses (`@sluice/privacy`). */
  privacy: Privacy;
  /** The master keys `privacy` has; idempotency records' request hashes are keyed from them. */
  masterKeys: MasterKeys;
}

/**
 * The shop-api HTTP application, not yet listening; the service adds health, readiness and
 * metrics routes to it (`runService`).
 */
export function buildApp(options: AppOptions): FastifyInstance {
  const app = Fastify({
    loggerInstance: options.logger,
    bodyLimit: options.bodyLimitBytes ?? 64 * 1024,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    requestIdHeader: false,
    genReqId: (request) => correlationIdFor(request.headers['x-correlation-id']) ?? uuidv7(),
    return503OnClosing: true,
    frameworkErrors: frameworkErrorHandler,
    // Requests are counted in metrics; errors and slow paths are logged where they happen.
    logController: new LogController({
      requestIdLogLabel: 'correlationId',
      disableRequestLogging: true,
    }),
  });
  installValidators(app);
  installErrorHandling(app);
  installBodyGuards(app);
  const { tracer } = options;
  if (tracer !== undefined) installRequestSpans(app, tracer);

  const registry = options.registry ?? new Registry();
  const requests = new Counter({
    name: 'http_requests_total',
    help: 'HTTP requests by method, route and status.',
    labelNames: ['method', 'route', 'status'],
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'http_request_duration_seconds',
    help: 'HTTP request latency.',
    labelNames: ['method', 'route'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });

  // While draining, responses close their keep-alive connection so `close()` can finish.
  let closing = false;
  app.addHook('preClose', (done) => {
    closing = true;
    done();
  });
  app.addHook('onSend', (request, reply, payload, done) => {
    reply.header('x-correlation-id', request.id);
    if (closing) reply.header('connection', 'close');
    done(null, payload);
  });
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    requests.inc({ method: request.method, route, status: String(reply.statusCode) });
    duration.observe({ method: request.method, route }, reply.elapsedTime / 1000);
    if (reply.statusCode >= 500)
      request.log.warn({ status: reply.statusCode, route }, 'request failed');
  });

  const { db } = options;
  const tokens = createConsistencyTokens(options.consistencyTokenSecret);
  const write = createWriter(db, tokens, tracer, options.privacy, options.masterKeys);
  const timeoutMs = options.consistencyTimeoutMs ?? 5000;
  const awaitApplied = createConsistencyWait({ db, tokens, timeoutMs, tracer });
  // The shop's routes in a scope of their own: only they authenticate requests.
  void app.register((shop, _options, done) => {
    installAuthentication(shop, options.auth);
    customerRoutes(shop, { db, write });
    productRoutes(shop, { db, write });
    cartRoutes(shop, { db, write });
    orderRoutes(shop, { db });
    viewRoutes(shop, { db, awaitApplied });
    done();
  });
  return app;
}

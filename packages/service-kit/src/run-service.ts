import { errorMessage, isSluiceError } from '@sluice/errors';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';

/** How a Sluice service exits, for its supervisor (sysexits.h numbers where one fits). */
export const ExitCode = {
  /** Stopped as asked. */
  ok: 0,
  /** Failed, or a graceful stop did not finish in time. */
  failure: 1,
  /** A server it needs is unavailable (EX_UNAVAILABLE). */
  unavailable: 69,
  /** A Kafka consumer stopped for good; a new process starts it again (EX_SOFTWARE). */
  consumerStopped: 70,
  /** The command line is wrong: an unknown flag, a missing operand (EX_USAGE). */
  usage: 64,
  /** A condition no restart fixes, such as a lost replication slot or invalid settings: an operator must act (EX_CONFIG). */
  needsOperator: 78,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** What `/readyz` answers: 200 with `body` when `ready`, 503 with it otherwise. */
export interface Readiness {
  ready: boolean;
  body: unknown;
  /** Default `application/json`. */
  contentType?: string;
}

/** Options for {@link runService}. */
export interface ServiceOptions {
  logger: Logger;
  /** Port of the HTTP server: `/healthz`, `/readyz`, `/metrics` and `routes`. 0 picks a free one. */
  port: number;
  host: string;
  /** Served on `/metrics`. */
  metrics: Registry;
  /** Asked at every `/readyz`; `stopping` once a stop has begun. */
  readiness(state: { stopping: boolean }): Readiness | Promise<Readiness>;
  /** Registers the service's own routes (and error handler) on the HTTP server. */
  routes?(app: FastifyInstance): void;
  /**
   * The service's own HTTP server, when it needs options of its own (body limits, request ids,
   * hooks): the health, readiness and metrics routes are added to it. Default: a plain one.
   */
  app?: FastifyInstance;
  /** What a stop does, logged when one begins as `stopping: <this>`. */
  stopDescription: string;
  /** Ends the service's work. The HTTP server still answers meanwhile. */
  stop(): Promise<void>;
  /** Releases pools and clients, once the HTTP server has closed. */
  close?(): Promise<void>;
  /** A stop that has not finished this long after it began exits anyway, as a failure. */
  stopTimeoutMs: number;
}

/** A running service; see {@link runService}. */
export interface Service {
  /** Where the HTTP server listens, e.g. `http://127.0.0.1:9464`. */
  readonly address: string;
  /** Whether a stop has begun. */
  stopping(): boolean;
  /**
   * Stops once — `stop`, the HTTP server, `close` — and exits with `code`; the first call's
   * reason and code win. A step that fails is logged and makes the exit a failure.
   */
  shutdown(reason: string, code?: ExitCode): Promise<void>;
  /** Logs `error` at fatal level, with its code, and exits with `code` at once: no stop. */
  fail(error: unknown, code: ExitCode): never;
}

function httpServer(options: ServiceOptions, stopping: () => boolean): FastifyInstance {
  const app = options.app ?? Fastify({ logger: false });
  app.get('/healthz', (_request, reply) => reply.send({ status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    const { ready, body, contentType } = await options.readiness({ stopping: stopping() });
    if (contentType !== undefined) reply.type(contentType);
    return reply.code(ready ? 200 : 503).send(body);
  });
  app.get('/metrics', async (_request, reply) =>
    reply.type(options.metrics.contentType).send(await options.metrics.metrics()),
  );
  options.routes?.(app);
  return app;
}

/**
 * Runs a service's process: listens with its HTTP server, stops gracefully on SIGTERM and SIGINT
 * (bounded by `stopTimeoutMs`), and exits with an {@link ExitCode}. Resolves once listening.
 *
 * @example
 * const service = await runService({
 *   logger, port: 9464, host: '127.0.0.1', metrics: registry,
 *   readiness: ({ stopping }) => ({ ready: !stopping, body: { status: stopping ? 'stopping' : 'ok' } }),
 *   stopDescription: 'finishing the work in hand',
 *   stop: () => worker.stop(),
 *   close: () => pool.end(),
 *   stopTimeoutMs: 30_000,
 * });
 */
export async function runService(options: ServiceOptions): Promise<Service> {
  const { logger } = options;
  let stopping = false;
  let stopped: Promise<void> | undefined;
  const app = httpServer(options, () => stopping);
  const address = await app.listen({ port: options.port, host: options.host });

  async function stopThenExit(reason: string, code: ExitCode): Promise<void> {
    logger.info({ signal: reason }, `stopping: ${options.stopDescription}`);
    const failed: ExitCode = code === ExitCode.ok ? ExitCode.failure : code;
    setTimeout(() => {
      logger.error({ stopTimeoutMs: options.stopTimeoutMs }, 'graceful stop timed out');
      process.exit(failed);
    }, options.stopTimeoutMs).unref();
    let exitCode = code;
    const step = (what: string, run: () => Promise<void>) =>
      run().catch((error: unknown) => {
        logger.error({ err: error }, `${what} failed`);
        exitCode = failed;
      });
    await step('stop', () => options.stop());
    await step('closing the HTTP server', () => app.close());
    await step('close', () => options.close?.() ?? Promise.resolve());
    logger.info('stopped');
    process.exit(exitCode);
  }

  const shutdown = (reason: string, code: ExitCode = ExitCode.ok) => {
    stopping = true;
    return (stopped ??= stopThenExit(reason, code));
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  return {
    address,
    stopping: () => stopping,
    shutdown,
    fail(error, code) {
      logger.fatal(
        { err: error, code: isSluiceError(error) ? error.code : undefined },
        errorMessage(error),
      );
      process.exit(code);
    },
  };
}

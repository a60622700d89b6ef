import { errorMessage, isSluiceError } from '@sluice/errors';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Registry, RegistryContentType } from 'prom-client';
import { boundedReadiness, type ReadinessOptions } from './readiness.js';

export type { Readiness, ReadinessProblem } from './readiness.js';

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
  /** A server refused the credentials, such as Kafka's SASL user and password (EX_NOPERM). */
  credentialsRefused: 77,
  /** A server's TLS certificate is not signed by a trusted CA, or has expired (EX_PROTOCOL). */
  certificateUntrusted: 76,
  /** A server's TLS certificate is not valid for the host name connected to (EX_NOHOST). */
  hostnameMismatch: 68,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

const REFUSAL_EXIT_CODES: Readonly<Record<string, ExitCode>> = {
  kafka_auth_failed: ExitCode.credentialsRefused,
  kafka_tls_untrusted: ExitCode.certificateUntrusted,
  kafka_tls_hostname: ExitCode.hostnameMismatch,
  postgres_tls_untrusted: ExitCode.certificateUntrusted,
  postgres_tls_hostname: ExitCode.hostnameMismatch,
  postgres_tls_unsupported: ExitCode.needsOperator,
};

/**
 * The exit code for a server's refusal that no restart fixes (the codes of @sluice/kafka's
 * `kafkaRefusal` and of `postgresTlsFailure`), undefined for any other error.
 */
export function refusalExitCode(error: unknown): ExitCode | undefined {
  return isSluiceError(error) ? REFUSAL_EXIT_CODES[error.code] : undefined;
}

/**
 * Runs `probe`, a first connection at start: a refusal no retry fixes (see
 * {@link refusalExitCode}) ends the process at once with one fatal line and its exit code;
 * any other failure is logged as `otherwise` and left to the service's own retries.
 */
export async function exitOnRefusal(
  logger: Logger,
  probe: () => Promise<void>,
  otherwise: string,
): Promise<void> {
  try {
    await probe();
  } catch (error) {
    const code = refusalExitCode(error);
    if (code === undefined || !isSluiceError(error)) {
      logger.warn({ err: error }, otherwise);
      return;
    }
    logger.fatal({ code: error.code }, error.message);
    process.exit(code);
  }
}

/** Options for {@link runService}. */
export interface ServiceOptions extends ReadinessOptions {
  /** Port of the HTTP server: `/healthz`, `/readyz`, `/metrics` and `routes`. 0 picks a free one. */
  port: number;
  host: string;
  /** Served on `/metrics`. */
  metrics: Registry<RegistryContentType>;
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
  /**
   * Whether the service owns its process (default true): SIGTERM and SIGINT stop it, and a stop
   * exits the process. A service embedded in a process with a lifecycle of its own passes false:
   * no signal handler is installed, nothing exits, and a stop resolves with the exit code the
   * program would have used (a stop that times out resolves as a failure).
   */
  ownsProcess?: boolean;
}

/** A running service; see {@link runService}. */
export interface Service {
  /** Where the HTTP server listens, e.g. `http://127.0.0.1:9464`. */
  readonly address: string;
  /** Whether a stop has begun. */
  stopping(): boolean;
  /** Resolves with the exit code once a stop has finished (only seen without `ownsProcess`). */
  readonly stopped: Promise<ExitCode>;
  /**
   * Stops once — `stop`, the HTTP server, `close` — and exits with `code`; the first call's
   * reason and code win. A step that fails is logged and makes the exit a failure. Without
   * `ownsProcess`, resolves with the exit code instead of exiting.
   */
  shutdown(reason: string, code?: ExitCode): Promise<ExitCode>;
  /**
   * Logs `error` at fatal level, with its code, and exits with `code` at once: no stop. Without
   * `ownsProcess`, begins a stop with `code` and throws `error`.
   */
  fail(error: unknown, code: ExitCode): never;
}

function httpServer(options: ServiceOptions, stopping: () => boolean): FastifyInstance {
  const app = options.app ?? Fastify({ logger: false });
  app.get('/healthz', (_request, reply) => reply.send({ status: 'ok' }));
  const readiness = boundedReadiness(options, stopping);
  app.get('/readyz', async (_request, reply) => {
    const { ready, body, contentType } = await readiness();
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
  const ownsProcess = options.ownsProcess ?? true;
  let stopping = false;
  let stopped: Promise<ExitCode> | undefined;
  const app = httpServer(options, () => stopping);
  const address = await app.listen({ port: options.port, host: options.host });
  let finished: (code: ExitCode) => void = () => undefined;
  const done = new Promise<ExitCode>((resolve) => (finished = resolve));
  const exit = (code: ExitCode): ExitCode => {
    if (ownsProcess) process.exit(code);
    finished(code);
    return code;
  };

  const shutdown = (reason: string, code: ExitCode = ExitCode.ok) => {
    stopping = true;
    return (stopped ??= stopInTime({ ...options, app }, reason, code).then(exit));
  };
  if (ownsProcess) {
    process.on('SIGTERM', () => void shutdown('SIGTERM'));
    process.on('SIGINT', () => void shutdown('SIGINT'));
  }
  return {
    address,
    stopping: () => stopping,
    stopped: done,
    shutdown,
    fail(error, code) {
      logger.fatal(
        { err: error, code: isSluiceError(error) ? error.code : undefined },
        errorMessage(error),
      );
      if (ownsProcess) return process.exit(code);
      void shutdown('failed', code);
      throw error;
    },
  };
}

/** The stop's steps, or a failure once `stopTimeoutMs` has passed: the exit code either way. */
function stopInTime(
  options: ServiceOptions & { app: FastifyInstance },
  reason: string,
  code: ExitCode,
): Promise<ExitCode> {
  const { logger } = options;
  logger.info({ signal: reason }, `stopping: ${options.stopDescription}`);
  const failed: ExitCode = code === ExitCode.ok ? ExitCode.failure : code;
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<ExitCode>((resolve) => {
    timer = setTimeout(() => {
      logger.error({ stopTimeoutMs: options.stopTimeoutMs }, 'graceful stop timed out');
      resolve(failed);
    }, options.stopTimeoutMs);
    timer.unref();
  });
  const steps = stopSteps(options, code, failed).finally(() => clearTimeout(timer));
  return Promise.race([steps, timedOut]);
}

/** `stop`, the HTTP server, `close`, each failure logged: `code`, or `failed` after a failure. */
async function stopSteps(
  options: ServiceOptions & { app: FastifyInstance },
  code: ExitCode,
  failed: ExitCode,
): Promise<ExitCode> {
  let exitCode = code;
  const step = (what: string, run: () => Promise<void>) =>
    run().catch((error: unknown) => {
      options.logger.error({ err: error }, `${what} failed`);
      exitCode = failed;
    });
  await step('stop', () => options.stop());
  await step('closing the HTTP server', () => options.app.close());
  await step('close', () => options.close?.() ?? Promise.resolve());
  options.logger.info('stopped');
  return exitCode;
}

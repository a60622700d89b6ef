import { errorMessage, isDatabaseUnavailable } from '@sluice/errors';
import type { Logger } from 'pino';

/** What `/readyz` answers: 200 with `body` when `ready`, 503 with it otherwise. */
export interface Readiness {
  ready: boolean;
  body: unknown;
  /** Default `application/json`. */
  contentType?: string;
}

/** Why a readiness check gave no answer of its own: it failed, or did not answer in time. */
export interface ReadinessProblem {
  code: 'readiness_timeout' | 'database_unavailable' | 'readiness_failed';
  detail: string;
}

/** How `/readyz` is answered (part of the options of `runService`). */
export interface ReadinessOptions {
  logger: Logger;
  /** Asked at every `/readyz`; `stopping` once a stop has begun. */
  readiness(state: { stopping: boolean }): Readiness | Promise<Readiness>;
  /**
   * A readiness check that has not answered this long after a `/readyz` arrived answers 503
   * (default 2000 ms); `/readyz` requests that arrive within that time of a check share it.
   */
  readinessTimeoutMs?: number;
  /**
   * What `/readyz` answers when the check throws or does not answer in time. Default 503
   * `{ status: 'not_ready', problems: [problem] }`.
   */
  notReady?(problem: ReadinessProblem): Readiness;
}

const notReadyBody = (problem: ReadinessProblem): Readiness => ({
  ready: false,
  body: { status: 'not_ready', problems: [problem] },
});

function failed(error: unknown): ReadinessProblem {
  return isDatabaseUnavailable(error)
    ? { code: 'database_unavailable', detail: 'The database does not answer' }
    : { code: 'readiness_failed', detail: `The readiness check failed: ${errorMessage(error)}` };
}

/** A check in flight: when it began, and whether a stop had begun then. */
interface InFlight {
  answer: Promise<Readiness>;
  at: number;
  stopping: boolean;
}

/**
 * `/readyz`'s answer, bounded: requests that arrive while a check runs share it (a database that
 * does not answer does not collect one waiting query per probe), and a check that fails or has
 * not answered within `readinessTimeoutMs` is a 503 (`notReady`), logged at warn. A check older
 * than that is shared no more: the next request starts another (one that hangs for good, on a
 * connection that will never answer, must not hold readiness down once new ones would answer).
 */
export function boundedReadiness(
  options: ReadinessOptions,
  stopping: () => boolean,
): () => Promise<Readiness> {
  const timeoutMs = options.readinessTimeoutMs ?? 2000;
  const notReady = (problem: ReadinessProblem) =>
    options.notReady?.(problem) ?? notReadyBody(problem);
  let inFlight: InFlight | undefined;
  const run = (stoppingThen: boolean) =>
    Promise.resolve()
      .then(() => options.readiness({ stopping: stoppingThen }))
      .catch((error: unknown) => {
        options.logger.warn({ err: error }, 'readiness check failed');
        return notReady(failed(error));
      });
  const check = (): InFlight => {
    const stoppingThen = stopping();
    const started: InFlight = {
      at: Date.now(),
      stopping: stoppingThen,
      answer: run(stoppingThen).finally(() => {
        if (inFlight === started) inFlight = undefined;
      }),
    };
    return started;
  };
  const shared = (current: InFlight | undefined): current is InFlight =>
    current !== undefined && Date.now() - current.at < timeoutMs && current.stopping === stopping();
  return async () => {
    const current = shared(inFlight) ? inFlight : (inFlight = check());
    const { answer } = current;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<Readiness>((resolve) => {
      timer = setTimeout(() => {
        options.logger.warn({ timeoutMs }, 'readiness check did not answer in time');
        resolve(notReady(timedOut(timeoutMs)));
      }, timeoutMs);
    });
    try {
      return await Promise.race([answer, late]);
    } finally {
      clearTimeout(timer);
    }
  };
}

const timedOut = (timeoutMs: number): ReadinessProblem => ({
  code: 'readiness_timeout',
  detail: `The readiness check did not answer within ${timeoutMs} ms`,
});
